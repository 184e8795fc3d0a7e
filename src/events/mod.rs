//! Production events: what happened to the backups (a `change`: backup taken, drill passed) and
//! what went wrong (an `incident`, severity S1–S4), kept in a durable local log and forwarded to
//! optional sinks (GitLab issues, a JSON webhook). Also computes error budgets from the log.
//!
//! Knows nothing of PostgreSQL or the repository format: callers (CLI, daemon) turn their
//! reports into [`Event`]s. Domain modules never file events themselves, so one place decides
//! what is an incident ([`classify`]).
//!
//! # Why a local log first
//! An event must survive the failure it reports: the network to GitLab may be the thing that is
//! down. [`EventLog::append`] returns only after the line is fsync'd, so an acknowledged event
//! survives kill -9 and power loss. The log doubles as the delivery queue: each sink keeps a
//! cursor (how many lines it has received), so a sink outage only grows its backlog; events are
//! never dropped and never reordered ([`EventLog::deliver`]).
//!
//! # On disk (`[events] dir`, mode 0700)
//! ```text
//! events.jsonl          one JSON event per line, append-only; a torn last line (crash during a
//!                       write) is ignored by readers and cut off by the next append
//! events.lock           flock'd by appenders, so CLI runs and the daemon can append concurrently
//! sink-<name>.cursor    decimal count of lines already delivered to sink <name>, replaced
//!                       atomically (temp file, fsync, rename)
//! sink-<name>.lock      held while a process delivers to <name>, so no event is sent twice
//! ```
//!
//! # Wire format (stable)
//! One event is one JSON object, the same in `events.jsonl`, in `radd events --json` and in the
//! webhook body. Fields are only ever added, never renamed or removed; consumers must ignore
//! unknown fields.
//! ```json
//! {"id":"1735787045678-9f86d081","time":"2025-01-02T03:04:05.678Z","kind":"incident",
//!  "severity":"S2","source":"drill.monthly-rad","title":"drill monthly-rad failed: wal_chain",
//!  "labels":{"host":"db1"},"details":{"rto_seconds":312.5}}
//! ```
//! - `id`: unix time in milliseconds as 13 digits, `-`, 8 random hex digits: unique and sortable
//!   by time as a plain string.
//! - `time`: RFC 3339, UTC, millisecond precision, `Z` suffix.
//! - `kind`: `change` or `incident`.
//! - `severity`: `S1` (data at risk now) … `S4` (cosmetic) for incidents, `null` for changes.
//! - `source`: the job, dotted: `backup.pg`, `drill.monthly-rad`, `wal.archive`, `restore`.
//! - `title`: one line, never a secret.
//! - `labels`: string → string, sorted by key.
//! - `details`: any JSON (timings, check results); `{}` when there are none.

mod budget;
mod delivery;
mod event;
mod gitlab;
mod log;
mod sinks;

use std::path::PathBuf;

use crate::error::ErrorKind;

pub use crate::config::events::{EventsConfig, GitLabConfig, WebhookConfig};
pub use budget::{
    BudgetReport, DEFAULT_FRESHNESS_HOURS, DEFAULT_WINDOW_DAYS, DRILL_SUCCESS_OBJECTIVE, DrillBudget,
    FRESHNESS_OBJECTIVE, FreshnessBudget, IncidentCounts, budget, budget_remaining,
};
pub use delivery::{DeliveryReport, RetryPolicy};
pub use event::{Event, EventKind, Occurrence, Severity, classify};
pub use gitlab::GitLabSink;
pub use log::EventLog;
pub use sinks::{SendError, Sink, WebhookSink, sinks_from_config};

/// Errors of the event log and of setting up sinks. Delivery failures are not errors: they are
/// reported in [`DeliveryReport::last_error`] and the events stay queued.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory of the event log could not be used.
    #[error("cannot {what} {path}: {source}; check that the directory exists and is writable by the radd user", path = .path.display())]
    Io {
        /// What was attempted: create, open, lock, read, write, sync, rename.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A complete (newline-terminated) line of the log is not a valid event. Never skipped:
    /// an event that cannot be read might be the incident someone needs to see.
    #[error("event log {path} line {line} is corrupt ({message}); repair or remove that line by hand (the log is append-only, radd never rewrites it)", path = .path.display())]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A sink cursor file does not hold a line count, or counts more lines than the log has.
    #[error("sink cursor {path} is invalid ({message}); if the event log was replaced, delete the cursor file to redeliver every event to that sink", path = .path.display())]
    Cursor {
        /// The cursor file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The environment variable that should hold a sink's token is unset or empty.
    /// Names the variable, never a value.
    #[error(
        "{sink} sink: environment variable {var} is not set or empty; export the token there (for example in the systemd unit's EnvironmentFile) or set events.{sink}.token_env to the variable that holds it"
    )]
    MissingToken {
        /// `gitlab` or `webhook`.
        sink: &'static str,
        /// The variable's name.
        var: String,
    },
    /// A sink URL in the configuration cannot be used.
    #[error("{sink} sink: invalid url {url:?}: {message}; set events.{sink}.url to an http(s) URL")]
    BadUrl {
        /// `gitlab` or `webhook`.
        sink: &'static str,
        /// The configured URL.
        url: String,
        /// Why it was rejected.
        message: String,
    },
    /// The HTTP client could not be built (TLS initialisation).
    #[error("cannot build the HTTP client for event sinks: {message}")]
    Client {
        /// The client builder's message.
        message: String,
    },
}

impl Error {
    /// Category for exit codes and metrics: unusable files are I/O, a damaged log or cursor is
    /// an integrity problem (never retried), bad sink settings are configuration.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::Corrupt { .. } | Error::Cursor { .. } => ErrorKind::Integrity,
            Error::MissingToken { .. } | Error::BadUrl { .. } | Error::Client { .. } => ErrorKind::Config,
        }
    }
}

/// Result alias for [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
