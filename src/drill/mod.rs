//! Restore drills ("R.A.D."): restore a snapshot plus WAL into a scratch PostgreSQL on a free
//! port, replay to a target, run the checks, measure RPO and RTO, tear everything down.
//!
//! Returns a [`DrillReport`]; files no events and sets no metrics itself — its caller (CLI,
//! daemon) does. The scratch instance and its directory are removed on success, failure and
//! timeout alike (unless `keep` is set for debugging).

mod definition;
mod fs;
mod run;
mod run_checks;

use std::path::PathBuf;

use serde::Serialize;

pub use definition::{DrillDefinition, DrillKind, RecoveryKind, SqlProbe, find, list, parse_duration};
pub use run::run;

use crate::error::ErrorKind;

/// Errors that prevent a drill from being run at all (a drill that runs and fails is a
/// [`DrillReport`] with `passed = false`, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A drill file is invalid.
    #[error("drill definition {path}: {message}", path = .path.display())]
    Definition {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        message: String,
    },
    /// No drill with that name.
    #[error("no drill named {name:?} in {dir}; list them with `radd drill list`", dir = .dir.display())]
    UnknownDrill {
        /// Requested name.
        name: String,
        /// Where drills were searched.
        dir: PathBuf,
    },
    /// The scratch directory could not be prepared.
    #[error("cannot prepare scratch directory {path}: {source}", path = .path.display())]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// Category for exit codes.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Definition { .. } | Error::UnknownDrill { .. } => ErrorKind::Config,
            Error::Scratch { .. } => ErrorKind::Io,
        }
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// The check ran and passed.
    Passed,
    /// The check ran and failed, or could not run because of an earlier failure.
    Failed,
    /// Not applicable (e.g. pg_checksums on a cluster without data checksums).
    Skipped,
}

/// One check's result: `check` is a stable name (`checksums`, `wal_chain`, `starts`,
/// `page_integrity`, `sql:<name>`, `rpo`), a metric label.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Stable check name.
    pub check: String,
    /// Outcome.
    pub status: CheckStatus,
    /// What was found, for humans.
    pub detail: String,
    /// Time the check took.
    pub seconds: f64,
}

/// The result of a drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// Drill name.
    pub drill: String,
    /// Snapshot restored, if one was chosen.
    pub snapshot_id: Option<String>,
    /// Start time (RFC 3339).
    pub started: String,
    /// Whether every check passed (skipped checks do not fail a drill).
    pub passed: bool,
    /// Each check.
    pub checks: Vec<CheckResult>,
    /// Measured data-loss window (restored heartbeat vs. drill start), seconds.
    pub rpo_seconds: Option<f64>,
    /// Wall time from drill start to a queryable scratch instance, seconds.
    pub rto_seconds: Option<f64>,
    /// Total drill time, seconds.
    pub duration_seconds: f64,
    /// Scratch directory kept for debugging (`--keep`).
    pub kept_dir: Option<PathBuf>,
}

impl DrillReport {
    /// Names of the failed checks.
    #[must_use]
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Failed).map(|c| c.check.as_str()).collect()
    }
}

/// How to run a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The drill.
    pub definition: DrillDefinition,
    /// `restore_command` for the scratch instance (`radd … wal-fetch %f %p`).
    pub restore_command: String,
    /// Scratch parent directory when the drill does not set one.
    pub scratch_dir: PathBuf,
    /// PostgreSQL programs.
    pub bin_dir: PathBuf,
    /// The source cluster, for `expect_source` probes.
    pub source: Option<crate::config::PostgresConfig>,
    /// Keep the scratch instance's directory (stopped) for debugging.
    pub keep: bool,
}
