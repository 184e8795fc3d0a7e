//! [`ErrorKind`]: the broad category of a failure, which picks the exit code. A leaf: every
//! module's error maps itself onto a kind without importing anything above it.

use std::fmt;

/// Broad category of a failure. Picks the exit code and is the `error_type` label of metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad configuration or command-line usage: the operator must fix the input.
    Config,
    /// Object storage failed (I/O, network, permissions); may succeed on retry.
    Storage,
    /// Encryption/decryption failed, typically a wrong or missing key.
    Crypto,
    /// Data does not match its checksum, or the WAL chain has a gap: never retried.
    Integrity,
    /// PostgreSQL refused or failed an operation.
    Postgres,
    /// The requested snapshot, segment or object does not exist.
    NotFound,
    /// The operation would overwrite or contradict existing state.
    Conflict,
    /// A local file-system operation failed.
    Io,
    /// A broken invariant of radd itself (a bug): report it; retrying will not help.
    Internal,
}

impl ErrorKind {
    /// Process exit code documented in the README: 1 failure, 2 usage/config, 3 integrity.
    #[must_use]
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Config => 2,
            ErrorKind::Integrity | ErrorKind::Crypto => 3,
            _ => 1,
        }
    }

    /// Stable lower-case label, used in logs and metrics.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Storage => "storage",
            ErrorKind::Crypto => "crypto",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Postgres => "postgres",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}
