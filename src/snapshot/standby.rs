//! Base backups from a streaming standby (pgBackRest's `backup-standby`): the backup API runs on
//! the standby, and the standby's primary (`[postgres.primary]`) switches WAL afterwards.
//!
//! A standby cannot switch WAL itself, so without the primary the segment holding the stop
//! position is archived only whenever the primary next fills or switches a segment: the backup
//! would wait for it and fail. That is found out before the backup starts, in seconds, with what
//! to add to the configuration.

use tokio_postgres::Client;

use super::Error;
use super::walk::Found;
use crate::config::PostgresConfig;
use crate::pg::{self, Lsn, standby};

/// The primary of the standby being backed up.
pub struct Primary {
    client: Client,
    /// `host:port`, for messages.
    server: String,
}

/// `host:port` of a connection, for messages.
fn server(config: &PostgresConfig) -> String {
    format!("{}:{}", config.host, config.port)
}

/// Asks the server being backed up whether it is a standby; if so, connects to its primary and
/// checks that it is one (not in recovery) of the same cluster. `None` for a primary.
pub async fn primary_for(client: &Client, postgres: &PostgresConfig) -> Result<Option<Primary>, Error> {
    let role = standby::role(client).await?;
    if !role.in_recovery {
        return Ok(None);
    }
    let Some(config) = postgres.primary_connection() else {
        return Err(Error::StandbyWithoutPrimary { server: server(postgres) });
    };
    let primary = Primary { client: pg::connect(&config).await?, server: server(&config) };
    let primary_role = standby::role(&primary.client).await?;
    if primary_role.in_recovery {
        return Err(Error::NotPrimary {
            server: primary.server,
            reason:
                "it is in recovery too (a cascading standby?); point [postgres.primary] at the primary that writes WAL"
                    .into(),
        });
    }
    if primary_role.system_identifier != role.system_identifier {
        return Err(Error::NotPrimary {
            server: primary.server,
            reason: format!(
                "it is another cluster (system identifier {}, the standby's is {}); point [postgres.primary] at this standby's primary",
                primary_role.system_identifier, role.system_identifier
            ),
        });
    }
    tracing::info!(standby = %server(postgres), primary = %primary.server, "backing up a standby; its primary will switch WAL");
    Ok(Some(primary))
}

impl Primary {
    /// Makes the primary complete its current WAL segment, which holds (or follows) `stop`, the
    /// standby backup's stop position, so that the archiver pushes it.
    pub async fn switch_wal_past(&self, stop: Lsn) -> Result<(), Error> {
        let switched = standby::switch_wal(&self.client).await?;
        if switched < stop {
            return Err(Error::NotPrimary {
                server: self.server.clone(),
                reason: format!(
                    "its WAL ends at {switched}, before the standby backup's stop position {stop}; is it the standby's primary?"
                ),
            });
        }
        tracing::debug!(primary = %self.server, lsn = %switched, "primary switched WAL for the standby backup");
        Ok(())
    }
}

/// Moves `global/pg_control` to the end of the walk. A backup from a standby ends where the
/// copied pg_control's minimum recovery point says (PostgreSQL writes no end-of-backup record in
/// recovery), so pg_control must be copied after every data file; pg_basebackup sends it last
/// from a primary too, and so does radd.
pub fn pg_control_last(found: &mut Vec<Found>) {
    if let Some(at) = found.iter().position(|f| f.rel == "global/pg_control") {
        let control = found.remove(at);
        found.push(control);
    }
}

/// Whether a `backup_label` is that of a backup taken on a standby (`BACKUP FROM: standby`).
#[must_use]
pub fn is_standby_label(label: &str) -> bool {
    label.lines().any(|l| l.trim() == "BACKUP FROM: standby")
}
