//! PostgreSQL: WAL positions and file names, the non-exclusive backup API over tokio-postgres,
//! and scratch clusters (initdb/pg_ctl) for demos, drills and tests.
//!
//! Knows nothing of the repository or of crypto.

pub mod archiver;
mod backup_api;
pub mod conf;
pub mod heartbeat;
pub mod instance;
pub mod restore_point;
mod scratch;
pub mod settings;
pub mod standby;
mod tablespace;
mod wal;
mod walpage;

pub use backup_api::{BackupSession, BackupStart, BackupStop, connect};
pub use scratch::{ScratchCluster, free_port, hand_over};
pub use tablespace::{Tablespace, format_tablespace_map, parse_tablespace_map, version_dir_prefix};
pub use wal::{Lsn, SegmentSize, Timeline, WalFileName};
pub use walpage::{KNOWN_MAGICS, PageCheck, PageMismatch, PageScope, check_pages};

use std::path::PathBuf;

/// A driver error as the server said it: SQLSTATE, message, detail and hint (tokio-postgres's
/// own Display says only "db error"), or the driver's text for errors not from the server.
#[must_use]
pub fn describe(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        use std::error::Error as _;
        return match error.source() {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        };
    };
    let mut text = format!("{} (SQLSTATE {}): {}", db.severity(), db.code().code(), db.message());
    if let Some(detail) = db.detail() {
        text.push_str(&format!("; DETAIL: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; HINT: {hint}"));
    }
    text
}

/// Errors talking to or running PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not connect.
    #[error("cannot connect to PostgreSQL at {target}: {}; check [postgres] host/port/user and that the server is running", describe(.driver))]
    Connect {
        /// host:port.
        target: String,
        /// Driver error (described in the message, not a separate cause: its own text is
        /// only "db error").
        driver: tokio_postgres::Error,
    },
    /// A query failed.
    #[error("PostgreSQL query `{query}` failed: {}", describe(.driver))]
    Query {
        /// The SQL (never contains secrets).
        query: &'static str,
        /// Driver error (described in the message).
        driver: tokio_postgres::Error,
    },
    /// `password_env` names an environment variable that is not set.
    #[error(
        "{key} = {var:?}, but the environment variable {var} is not set; set it in radd's environment (e.g. the unit's EnvironmentFile=) or remove {key} to connect without a password"
    )]
    PasswordUnset {
        /// The config key (`postgres.password_env`).
        key: &'static str,
        /// The variable's name (never its value).
        var: String,
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
