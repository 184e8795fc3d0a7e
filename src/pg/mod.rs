//! PostgreSQL: WAL positions and file names, the non-exclusive backup API over tokio-postgres,
//! and scratch clusters (initdb/pg_ctl) for demos, drills and tests.
//!
//! Knows nothing of the repository or of crypto.

pub mod archiver;
mod backup_api;
pub mod conf;
pub mod heartbeat;
mod scratch;
mod tablespace;
pub mod standby;
mod wal;

pub use backup_api::{BackupSession, BackupStart, BackupStop, connect};
pub use scratch::{ScratchCluster, free_port, hand_over};
pub use tablespace::{Tablespace, format_tablespace_map, parse_tablespace_map, version_dir_prefix};
pub use wal::{Lsn, SegmentSize, Timeline, WalFileName};

use std::path::PathBuf;

/// Errors talking to or running PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not connect.
    #[error("cannot connect to PostgreSQL at {target}: {source}; check [postgres] host/port/user and that the server is running")]
    Connect {
        /// host:port.
        target: String,
        /// Driver error.
        source: tokio_postgres::Error,
    },
    /// A query failed.
    #[error("PostgreSQL query `{query}` failed: {source}")]
    Query {
        /// The SQL (never contains secrets).
        query: &'static str,
        /// Driver error.
        source: tokio_postgres::Error,
    },
    /// The server answered something radd cannot interpret.
    #[error("unexpected answer from PostgreSQL: {0}")]
    Unexpected(String),
    /// A PostgreSQL program could not be run or failed.
    #[error("{program} failed: {message}")]
    Program {
        /// Which binary.
        program: PathBuf,
        /// Exit status and the tail of its output.
        message: String,
    },
    /// File-system work around a cluster failed.
    #[error("{what} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
