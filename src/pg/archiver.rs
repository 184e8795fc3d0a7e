//! The source server's own account of WAL archiving (`pg_stat_archiver`) and where its data
//! directory is: what the daemon needs to measure archive lag and failed `archive_command` runs.
//!
//! `wal-push` is a short-lived process that cannot count its own failures; PostgreSQL does.

use std::path::PathBuf;

use tokio_postgres::Client;

use super::Error;

/// One reading of the server's archiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiverStatus {
    /// `data_directory`, where `pg_wal/archive_status` is, when it was asked for.
    pub data_directory: Option<PathBuf>,
    /// `pg_stat_archiver.failed_count`: failed `archive_command` runs since the statistics
    /// were last reset (a counter that only a stats reset lowers).
    pub failed_count: u64,
}

/// Reads `pg_stat_archiver.failed_count` (readable by any role) and, with `data_directory`,
/// the `data_directory` setting, which only superusers and members of
/// `pg_read_all_settings` may read (so a configured `postgres.data_dir` needs no such grant).
pub async fn status(client: &Client, data_directory: bool) -> Result<ArchiverStatus, Error> {
    const FAILED: &str = "SELECT failed_count FROM pg_stat_archiver";
    const DATA_DIR: &str = "SELECT current_setting('data_directory')";
    let row = client.query_one(FAILED, &[]).await.map_err(|source| Error::Query { query: FAILED, driver: source })?;
    let failed: i64 = row.try_get(0).map_err(|source| Error::Query { query: FAILED, driver: source })?;
    let failed_count = u64::try_from(failed)
        .map_err(|_| Error::Unexpected(format!("pg_stat_archiver.failed_count is negative ({failed})")))?;
    let data_directory = if data_directory {
        let row =
            client.query_one(DATA_DIR, &[]).await.map_err(|source| Error::Query { query: DATA_DIR, driver: source })?;
        Some(PathBuf::from(
            row.try_get::<_, String>(0).map_err(|source| Error::Query { query: DATA_DIR, driver: source })?,
        ))
    } else {
        None
    };
    Ok(ArchiverStatus { data_directory, failed_count })
}
