//! What a base backup from a streaming standby asks of PostgreSQL: whether a server is a
//! standby, which cluster it belongs to, and a WAL switch on the primary.
//!
//! A standby cannot run `pg_switch_wal()`: the segment holding a standby backup's stop position
//! is completed (and so archived) only when its primary switches. Nothing here knows where the
//! WAL goes; the caller waits for it in the repository.

use tokio_postgres::Client;

use super::{Error, Lsn};

/// What a server says about its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerRole {
    /// `pg_is_in_recovery()`: a standby (or a server still recovering).
    pub in_recovery: bool,
    /// `pg_control_system().system_identifier`: the same on a primary and all its standbys,
    /// different for any other cluster.
    pub system_identifier: u64,
}

/// Asks a server whether it is in recovery and which cluster it belongs to.
pub async fn role(client: &Client) -> Result<ServerRole, Error> {
    let row = client
        .query_one("SELECT pg_is_in_recovery(), system_identifier::text FROM pg_control_system()", &[])
        .await
        .map_err(|source| Error::Query { query: "SELECT pg_is_in_recovery(), system_identifier", driver: source })?;
    let id: &str = row.get(1);
    Ok(ServerRole {
        in_recovery: row.get(0),
        system_identifier: id.parse().map_err(|_| Error::Unexpected(format!("system identifier {id:?}")))?,
    })
}

/// On the primary: writes a WAL record, then switches to a new segment, so the segment that held
/// the primary's insert position (and every earlier one) is complete and goes to the archiver.
/// The record matters: a switch with nothing written since the last one does nothing, and a
/// standby's stop position may lie at the very start of the current segment. Returns the end of
/// the completed segment's WAL.
pub async fn switch_wal(primary: &Client) -> Result<Lsn, Error> {
    primary
        .query_one("SELECT pg_logical_emit_message(false, 'radd', 'base backup from a standby stopped')::text", &[])
        .await
        .map_err(|source| Error::Query { query: "SELECT pg_logical_emit_message(…)", driver: source })?;
    let row = primary
        .query_one("SELECT pg_switch_wal()::text", &[])
        .await
        .map_err(|source| Error::Query { query: "SELECT pg_switch_wal()", driver: source })?;
    row.get::<_, &str>(0).parse().map_err(Error::Unexpected)
}
