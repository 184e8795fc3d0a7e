//! Errors of a restore: what failed, on which object, and whether it is the operator's mistake
//! (an exit code) or the repository's fault (an incident).

use std::path::PathBuf;

use crate::error::ErrorKind;
use crate::pg::Lsn;
use crate::{archive, repository, snapshot};

use super::{RestorePoint, tablespace};

/// Errors restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target directory already holds something.
    #[error("restore target {path} exists and is not empty; choose an empty or new directory", path = .path.display())]
    TargetNotEmpty {
        /// The target.
        path: PathBuf,
    },
    /// The snapshot is not a PostgreSQL base backup.
    #[error("snapshot {0} is not a PostgreSQL base backup")]
    NotPg(String),
    /// The archive cannot take the restored cluster to the target.
    #[error("cannot restore snapshot {snapshot}: {source}{hint}")]
    Wal {
        /// Snapshot id.
        snapshot: String,
        /// The gap or failure (boxed: it is the largest error a restore carries).
        source: Box<archive::Error>,
        /// What the operator can do.
        hint: &'static str,
    },
    /// A chunk referenced by the manifest is in no index.
    #[error(
        "chunk {chunk} of {path} is missing from the repository; the snapshot cannot be restored (run `radd verify`)"
    )]
    MissingChunk {
        /// Chunk id.
        chunk: String,
        /// File it belongs to.
        path: String,
    },
    /// Reading the content of a file failed (the file is named; the cause says which object).
    #[error("cannot restore {path}: {source}")]
    File {
        /// The file being restored.
        path: String,
        /// Why.
        source: Box<Error>,
    },
    /// The index places a blob outside the pack that holds it.
    #[error(
        "{pack} is shorter than its index says: the blob at offset {offset} ({length} bytes) that {path} needs lies outside it; the repository is damaged (run `radd verify --read-data`)"
    )]
    BlobOutsidePack {
        /// The pack's key.
        pack: String,
        /// Offset of the blob in the pack's plaintext.
        offset: u32,
        /// Its length.
        length: u32,
        /// The file it belongs to.
        path: String,
    },
    /// A restored file does not match its manifest checksum.
    #[error(
        "restored file {path} does not match its manifest checksum (expected {expected}, got {actual}); the repository is damaged (run `radd verify`)"
    )]
    Checksum {
        /// File.
        path: String,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A blob read from a pack is not the one its id names (the pack's content was replaced
    /// or damaged in a way its encryption does not reveal).
    #[error(
        "the blob at offset {offset} of {pack} does not match its id: the pack was damaged or replaced; nothing was restored (run `radd verify --read-data` to see which snapshots it breaks)"
    )]
    BlobMismatch {
        /// The pack's repository key.
        pack: String,
        /// Offset of the blob in the pack's plaintext.
        offset: u32,
    },
    /// Local file-system work failed.
    #[error("cannot {what} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The recovery target lies outside what the repository can restore.
    #[error("cannot restore to {target}: {reason}")]
    OutsideWindow {
        /// The target asked for.
        target: String,
        /// Why, with the restorable window.
        reason: String,
    },
    /// The newest timeline branched off a timeline that went on archiving: following it would
    /// silently drop what the parent committed after the fork.
    #[error(
        "refusing to follow timeline {newest} from the backup's timeline {backup}: {detail}. \
         Restore with `--timeline {backup}` to stay on the timeline that kept archiving (production, in the usual case), \
         or `--timeline {newest}` to follow the fork; `radd verify` lists every diverged timeline"
    )]
    Diverged {
        /// Each diverged fork on the way.
        detail: String,
        /// The backup's timeline.
        backup: u32,
        /// The timeline `latest` would pick.
        newest: u32,
    },
    /// `--timeline` names a timeline the backup cannot reach.
    #[error(
        "timeline {wanted} does not descend from the backup's timeline {backup} in this archive; choose one of {backup}..={newest} that has a history file, or omit --timeline"
    )]
    BadTimeline {
        /// Asked for.
        wanted: u32,
        /// The backup's.
        backup: u32,
        /// Newest reachable.
        newest: u32,
    },
    /// A restore point name PostgreSQL would refuse or a listing could not show.
    #[error("restore point name {name:?} is not usable: {why}; use at most 63 bytes without control characters")]
    BadPointName {
        /// The name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The name is recorded already (PostgreSQL would stop at the first point of a name).
    #[error("restore point {:?} exists already (LSN {}, created {} by {}); choose another name", .0.name, .0.lsn, .0.time, .0.by)]
    PointExists(Box<RestorePoint>),
    /// `--name` names no recorded restore point.
    #[error("no restore point {name:?} is recorded in this repository; known: {known}")]
    UnknownPoint {
        /// Asked for.
        name: String,
        /// The recorded names, or how to create one.
        known: String,
    },
    /// The server refused to create the restore point.
    #[error("cannot create restore point {name:?} on the source: {source}")]
    CreatePoint {
        /// The name.
        name: String,
        /// The server's error.
        source: Box<crate::pg::Error>,
    },
    /// The server created the point, but the repository did not take the record.
    #[error(
        "restore point {name:?} was created on the source at LSN {lsn}, but recording it in the repository failed: {source}; `restore --name` cannot use it: create another point with a new name once the repository is reachable"
    )]
    RecordPoint {
        /// The name.
        name: String,
        /// Where the server put it.
        lsn: Lsn,
        /// The storage failure.
        source: Box<repository::Error>,
    },
    /// Reading the snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    /// Repository failure (storage, decryption, integrity).
    #[error(transparent)]
    Repository(#[from] repository::Error),
    /// A tablespace cannot be restored where it was asked to go.
    #[error(transparent)]
    Tablespace(#[from] tablespace::Error),
}

impl Error {
    /// Category for exit codes.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TargetNotEmpty { .. } | Error::Diverged { .. } => ErrorKind::Conflict,
            Error::OutsideWindow { .. } | Error::BadTimeline { .. } => ErrorKind::Config,
            Error::BadPointName { .. } | Error::PointExists(_) | Error::UnknownPoint { .. } => ErrorKind::Config,
            Error::CreatePoint { .. } => ErrorKind::Postgres,
            Error::RecordPoint { source, .. } => source.kind(),
            Error::File { source, .. } => source.kind(),
            Error::NotPg(_) => ErrorKind::Config,
            Error::Wal { source, .. } => source.kind(),
            Error::MissingChunk { .. }
            | Error::BlobOutsidePack { .. }
            | Error::BlobMismatch { .. }
            | Error::Checksum { .. } => ErrorKind::Integrity,
            Error::Io { .. } => ErrorKind::Io,
            Error::Snapshot(e) => e.kind(),
            Error::Repository(e) => e.kind(),
            Error::Tablespace(e) => e.kind(),
        }
    }
}

impl Error {
    /// Whether the request itself was wrong (unknown snapshot, a target that is not empty, a
    /// time outside the window, a timeline that does not exist): an exit code for the operator,
    /// not an incident — nothing is wrong with the repository.
    #[must_use]
    pub fn is_usage(&self) -> bool {
        match self {
            Error::TargetNotEmpty { .. }
            | Error::OutsideWindow { .. }
            | Error::BadTimeline { .. }
            | Error::NotPg(_) => true,
            Error::BadPointName { .. } | Error::PointExists(_) | Error::UnknownPoint { .. } => true,
            Error::Snapshot(e) => {
                matches!(e, crate::snapshot::Error::NotFound(_) | crate::snapshot::Error::Ambiguous { .. })
            }
            _ => false,
        }
    }
}
