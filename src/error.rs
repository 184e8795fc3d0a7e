//! The crate-wide error: one variant per module error, plus [`Error::kind`], which is the single
//! place that decides exit codes and (later) metric labels and event severities.
//!
//! Modules keep their own detailed `Error` enums (what failed, on which object); this type only
//! aggregates them so callers at the edge (CLI, daemon) can apply policy without string matching.

mod kind;

pub use kind::ErrorKind;

/// Any error radd's library returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration could not be loaded or is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// Key handling, encryption or decryption failed.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::Error),
    /// A stored object could not be sealed or opened.
    #[error(transparent)]
    Codec(#[from] crate::codec::Error),
    /// The repository or its storage backend failed.
    #[error(transparent)]
    Repo(#[from] crate::repo::Error),
    /// PostgreSQL interaction failed.
    #[error(transparent)]
    Pg(#[from] crate::pg::Error),
    /// WAL archiving or fetching failed.
    #[error(transparent)]
    Archive(#[from] crate::archive::Error),
    /// Taking or reading a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
    /// Restoring a snapshot failed.
    #[error(transparent)]
    Restore(#[from] crate::restore::Error),
    /// The daemon could not start.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::Error),
    /// The event log or a sink failed.
    #[error(transparent)]
    Events(#[from] crate::events::Error),
    /// A drill could not be run.
    #[error(transparent)]
    Drill(#[from] crate::drill::Error),
    /// Opening or initialising the repository failed.
    #[error(transparent)]
    Repository(#[from] crate::repository::Error),
    /// `radd verify` could not check the repository, or found problems in it.
    #[error(transparent)]
    Verify(#[from] crate::verify::Error),
    /// A scratch instance could not be created, listed or stopped.
    #[error(transparent)]
    Scratch(#[from] crate::scratch::Error),
}

impl Error {
    /// The category of this error, which decides exit code and retry policy.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::Crypto(e) => e.kind(),
            Error::Codec(e) => e.kind(),
            Error::Repo(e) => e.kind(),
            Error::Pg(_) => ErrorKind::Postgres,
            Error::Archive(e) => e.kind(),
            Error::Snapshot(e) => e.kind(),
            Error::Restore(e) => e.kind(),
            Error::Repository(e) => e.kind(),
            Error::Verify(e) => e.kind(),
            Error::Drill(e) => e.kind(),
            Error::Events(e) => e.kind(),
            Error::Daemon(_) => ErrorKind::Config,
            Error::Scratch(e) => e.kind(),
        }
    }
}

/// Result alias for the crate-wide [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
