//! The non-exclusive backup API: `pg_backup_start`/`pg_backup_stop` (PostgreSQL 15+) or
//! `pg_start_backup`/`pg_stop_backup` (older), on one session held open for the whole backup.

use std::path::PathBuf;

use tokio_postgres::{Client, NoTls};

use super::settings::PostgresConfig;
use super::{Error, Lsn, SegmentSize, Timeline};

/// Opens a connection; the connection task runs on the current tokio runtime.
pub async fn connect(config: &PostgresConfig) -> Result<Client, Error> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&config.host).port(config.port).user(&config.user).dbname(&config.dbname).application_name("radd");
    if let Some(var) = &config.password_env {
        match std::env::var(var) {
            Ok(password) => {
                pg.password(password);
            }
            Err(_) => return Err(Error::PasswordUnset { key: "postgres.password_env", var: var.clone() }),
        }
    }
    let (client, connection) = pg
        .connect(NoTls)
        .await
        .map_err(|source| Error::Connect { target: format!("{}:{}", config.host, config.port), driver: source })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// What the server reports when a backup starts.
#[derive(Debug, Clone)]
pub struct BackupStart {
    /// Start LSN (redo point of the backup checkpoint).
    pub lsn: Lsn,
    /// `server_version_num`, e.g. 150018.
    pub server_version_num: u32,
    /// `server_version`, e.g. "15.18 (Debian 15.18-0+deb12u1)".
    pub server_version: String,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// The cluster's WAL segment size (`wal_segment_size`).
    pub segment_size: SegmentSize,
}

/// What the server reports when a backup stops.
#[derive(Debug, Clone)]
pub struct BackupStop {
    /// Stop LSN: the cluster is consistent once WAL is replayed to here.
    pub lsn: Lsn,
    /// Content for `backup_label` in the restored data directory.
    pub label_file: String,
    /// Content for `tablespace_map` (empty when there are no tablespaces).
    pub tablespace_map: String,
    /// Timeline the backup started on (parsed from the label).
    pub timeline: Timeline,
}

/// A running non-exclusive backup. Dropping it without [`BackupSession::stop`] closes the
/// session, which makes the server abort the backup: no half-finished backup survives.
pub struct BackupSession {
    pub(super) client: Client,
    /// What the server reported at start.
    pub start: BackupStart,
}

impl BackupSession {
    /// Runs a fast checkpoint and starts the backup.
    pub async fn start(client: Client, label: &str) -> Result<Self, Error> {
        let q = "SELECT current_setting('server_version_num')::int, current_setting('server_version'), \
                 current_setting('data_directory'), current_setting('wal_segment_size')";
        let row = client
            .query_one(q, &[])
            .await
            .map_err(|source| Error::Query { query: "SELECT current_setting(…)", driver: source })?;
        let server_version_num =
            u32::try_from(row.get::<_, i32>(0)).map_err(|_| Error::Unexpected("negative server_version_num".into()))?;
        let segment_size = row.get::<_, &str>(3).parse::<SegmentSize>().map_err(Error::Unexpected)?;
        let start_sql = if server_version_num >= 150_000 {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let lsn_row = client
            .query_one(start_sql, &[&label])
            .await
            .map_err(|source| Error::Query { query: "pg_backup_start", driver: source })?;
        let lsn = lsn_row.get::<_, &str>(0).parse().map_err(Error::Unexpected)?;
        Ok(BackupSession {
            start: BackupStart {
                lsn,
                server_version_num,
                server_version: row.get::<_, String>(1),
                data_dir: PathBuf::from(row.get::<_, String>(2)),
                segment_size,
            },
            client,
        })
    }

    /// Stops the backup (the server switches to a new WAL segment). It does not wait for the
    /// archiver: PostgreSQL checks only once a second, so the caller waits for the WAL in the
    /// repository itself.
    pub async fn stop(self) -> Result<BackupStop, Error> {
        let sql = if self.start.server_version_num >= 150_000 {
            "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_stop_backup(false, false)"
        };
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|source| Error::Query { query: "pg_backup_stop", driver: source })?;
        let label_file: String = row.get(1);
        let timeline = label_file
            .lines()
            .find_map(|l| l.strip_prefix("START TIMELINE: "))
            .and_then(|t| t.trim().parse().ok())
            .map(Timeline)
            .ok_or_else(|| Error::Unexpected("backup label has no START TIMELINE".into()))?;
        Ok(BackupStop {
            lsn: row.get::<_, &str>(0).parse().map_err(Error::Unexpected)?,
            label_file,
            tablespace_map: row.get(2),
            timeline,
        })
    }
}
