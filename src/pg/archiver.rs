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
    /// `data_directory`, where `pg_wal/archive_status` is.
    pub data_directory: PathBuf,
    /// `pg_stat_archiver.failed_count`: failed `archive_command` runs since the statistics
    /// were last reset (a counter that only a stats reset lowers).
    pub failed_count: u64,
}

/// Reads `data_directory` and `pg_stat_archiver.failed_count` in one query.
pub async fn status(client: &Client) -> Result<ArchiverStatus, Error> {
    const QUERY: &str = "SELECT current_setting('data_directory'), failed_count FROM pg_stat_archiver";
    let row = client.query_one(QUERY, &[]).await.map_err(|source| Error::Query { query: QUERY, source })?;
    let data_directory: String = row.try_get(0).map_err(|source| Error::Query { query: QUERY, source })?;
    let failed: i64 = row.try_get(1).map_err(|source| Error::Query { query: QUERY, source })?;
    let failed_count = u64::try_from(failed).map_err(|_| Error::Unexpected(format!("pg_stat_archiver.failed_count is negative ({failed})")))?;
    Ok(ArchiverStatus { data_directory: PathBuf::from(data_directory), failed_count })
}
