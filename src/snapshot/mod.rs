//! Snapshots: PostgreSQL base backups cut into chunks, deduplicated into packs, described by an
//! encrypted manifest and committed by a plaintext snapshot record.
//!
//! Write order (see DESIGN.md): packs → index → manifest → snapshot record. A crash at any point
//! leaves only unreferenced packs; a snapshot exists only once its record does.

mod backup;
mod chunker;
mod entry_stream;
mod filesum;
mod fsbackup;
mod fswalk;
pub mod index;
mod manifest;
mod pack;
mod parent;
mod pipeline;
mod placed_crc;
mod server_files;

pub use pipeline::new_snapshot_id;
mod standby;
mod walk;

pub use backup::{BackupOptions, BackupReport, backup_pg};
pub use chunker::{Chunking, for_each_chunk};
pub use entry_stream::ChunkResolver;
pub use filesum::{FileSum, FileSummer};
pub use fsbackup::{FsBackupOptions, FsBackupReport, backup_fs};
pub use fswalk::{TreeOptions, glob_set};
pub use manifest::{
    ChunkList, Entry, EntryKind, HookRun, Manifest, PgInfo, SnapshotKind, SnapshotRecord, SnapshotTotals, decode_os,
    encode_os,
};
pub use pack::{BlobIndex, BlobLocation, BufferPool, IndexFile, IndexPack, index_name};
pub use parent::{ParentFile, ParentReader, ParentWriter, PendingParent, record_path as parent_record_path};
pub use placed_crc::PlacedCrc;
pub use server_files::{PREFIX as SERVER_FILES_DIR, ServerFiles, StoredFile};
pub use standby::is_standby_label;

use crate::codec::ObjectKind;
use crate::error::ErrorKind;
use crate::repo::ObjectKey;
use crate::repository::{self, Repository};

/// Errors taking or reading snapshots.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No snapshot matches.
    #[error("snapshot {0:?} not found; list them with `radd snapshots`")]
    NotFound(String),
    /// A prefix matches several snapshots.
    #[error("snapshot prefix {prefix:?} is ambiguous: {matches:?}")]
    Ambiguous {
        /// What was asked for.
        prefix: String,
        /// What matched.
        matches: Vec<String>,
    },
    /// The repository holds no snapshot at all.
    #[error("the repository has no snapshots yet; take one with `radd backup pg`")]
    Empty,
    /// Reading the data directory failed.
    #[error("cannot read {path}: {source}", path = .path.display())]
    Read {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A pack with the same id but different content exists (should never happen).
    #[error("pack {key} exists with different content; run `radd verify`")]
    PackConflict {
        /// The object key.
        key: String,
    },
    /// The WAL needed to make the backup consistent is not in the archive.
    #[error("backup is not usable: {0}; check archive_command and `radd wal-push` logs")]
    WalMissing(crate::archive::Error),
    /// The server to back up is a standby and no primary is configured to switch WAL.
    #[error(
        "{server} is a standby (pg_is_in_recovery() is true): a backup from a standby needs its primary to switch WAL, \
             or the backup's last segment is not archived; add a [postgres.primary] section with the primary's host \
             (and port, user, dbname, password_env where they differ from [postgres]) to the config, or point [postgres] at the primary"
    )]
    StandbyWithoutPrimary {
        /// `host:port` of the standby.
        server: String,
    },
    /// `[postgres.primary]` does not name the primary of the standby being backed up.
    #[error("[postgres.primary] {server} cannot serve the backup from the standby: {reason}")]
    NotPrimary {
        /// `host:port` of the configured primary.
        server: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// WAL archive failure (e.g. a backup of another segment size than the repository's WAL).
    #[error(transparent)]
    Archive(#[from] crate::archive::Error),
    /// PostgreSQL failed.
    #[error(transparent)]
    Pg(#[from] crate::pg::Error),
    /// Repository failure.
    #[error(transparent)]
    Repository(#[from] repository::Error),
    /// A consistency hook failed; no snapshot was taken.
    #[error(
        "{phase}-hook failed (exit code {exit_code:?}); no snapshot taken (post-hook exit code {post_exit_code:?})"
    )]
    Hook {
        /// `pre`.
        phase: &'static str,
        /// Its exit code (`None`: killed or not startable).
        exit_code: Option<i32>,
        /// The post-hook's exit code, which ran anyway.
        post_exit_code: Option<i32>,
    },
    /// Another process holds the repository's exclusive lock.
    #[error(transparent)]
    Locked(#[from] crate::repo::lock::Error),
    /// The snapshot was cancelled (SIGTERM); nothing was committed.
    #[error("snapshot cancelled before it was committed")]
    Cancelled,
    /// A pipeline stage failed unexpectedly.
    #[error("internal error in the backup pipeline: {0}")]
    Internal(String),
    /// The local blob index or an external sort could not use its temporary files.
    #[error("local blob index: {0}")]
    Scratch(#[from] index::ScratchError),
}

impl Error {
    /// Category for exit codes.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) | Error::Empty => ErrorKind::NotFound,
            Error::Ambiguous { .. } | Error::StandbyWithoutPrimary { .. } | Error::NotPrimary { .. } => {
                ErrorKind::Config
            }
            Error::Read { .. } | Error::Internal(_) | Error::Hook { .. } | Error::Cancelled | Error::Scratch(_) => {
                ErrorKind::Io
            }
            Error::PackConflict { .. } | Error::WalMissing(_) => ErrorKind::Integrity,
            Error::Pg(_) => ErrorKind::Postgres,
            Error::Archive(e) => e.kind(),
            Error::Locked(e) => e.kind(),
            Error::Repository(e) => e.kind(),
        }
    }
}

/// Every committed snapshot, oldest first.
pub async fn list(repo: &Repository) -> Result<Vec<SnapshotRecord>, Error> {
    let listed = repo.list_snapshots().await?;
    let mut out = Vec::with_capacity(listed.len());
    for item in listed {
        out.push(repo.read::<SnapshotRecord>(&item.id).await?);
    }
    out.sort_by(|a: &SnapshotRecord, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Resolves `latest`, a full id or a unique id prefix to a snapshot record.
pub async fn resolve(repo: &Repository, wanted: &str) -> Result<SnapshotRecord, Error> {
    resolve_kind(repo, wanted, None).await
}

/// Like [`resolve`], among snapshots of one kind only (`latest` of that kind).
pub async fn resolve_kind(
    repo: &Repository,
    wanted: &str,
    kind: Option<SnapshotKind>,
) -> Result<SnapshotRecord, Error> {
    let all: Vec<SnapshotRecord> = list(repo).await?.into_iter().filter(|s| kind.is_none_or(|k| s.kind == k)).collect();
    if wanted == "latest" {
        return all.into_iter().next_back().ok_or(Error::Empty);
    }
    let mut matches: Vec<SnapshotRecord> = all.into_iter().filter(|s| s.id.starts_with(wanted)).collect();
    match matches.len() {
        0 => Err(Error::NotFound(wanted.to_owned())),
        1 => Ok(matches.remove(0)),
        _ => {
            if let Some(pos) = matches.iter().position(|s| s.id == wanted) {
                return Ok(matches.remove(pos));
            }
            Err(Error::Ambiguous { prefix: wanted.to_owned(), matches: matches.into_iter().map(|s| s.id).collect() })
        }
    }
}

/// Reads and decrypts a snapshot's manifest with all its entries, checking it is the one the
/// record committed.
pub async fn load_manifest(repo: &Repository, record: &SnapshotRecord) -> Result<Manifest, Error> {
    let manifest = load_manifest_head(repo, record).await?;
    if manifest.entry_chunks.is_empty() {
        return Ok(manifest);
    }
    let index = BlobIndex::load(repo).await?;
    with_entries(repo, record, &index, manifest, false).await
}

/// Like [`load_manifest`], with the blob index already loaded.
pub async fn load_manifest_with(
    repo: &Repository,
    record: &SnapshotRecord,
    index: &BlobIndex,
) -> Result<Manifest, Error> {
    let manifest = load_manifest_head(repo, record).await?;
    with_entries(repo, record, index, manifest, false).await
}

/// Like [`load_manifest_with`], but files whose chunk ids are stored out of line (a
/// [`ChunkList`]) come without them: [`ChunkResolver`] reads those one file at a time, so
/// memory does not grow with the size of the snapshot's largest files put together.
pub async fn load_manifest_lean(
    repo: &Repository,
    record: &SnapshotRecord,
    index: &BlobIndex,
) -> Result<Manifest, Error> {
    let manifest = load_manifest_head(repo, record).await?;
    with_entries(repo, record, index, manifest, true).await
}

/// Fills in the entries of a manifest head from its entry stream (if it has one); `lean`
/// leaves the ids of list-backed files out ([`entry_stream::load_lean`]).
async fn with_entries(
    repo: &Repository,
    record: &SnapshotRecord,
    index: &BlobIndex,
    mut manifest: Manifest,
    lean: bool,
) -> Result<Manifest, Error> {
    if !manifest.entry_chunks.is_empty() {
        let key = ObjectKey::Manifest(record.id.clone()).to_string();
        let chunks = &manifest.entry_chunks;
        manifest.entries = if lean {
            entry_stream::load_lean(repo, index, chunks, &key).await?
        } else {
            entry_stream::load(repo, index, chunks, &key).await?
        };
    }
    Ok(manifest)
}

/// The manifest object alone: for current snapshots, the entry stream's chunk ids, not the
/// entries.
pub async fn load_manifest_head(repo: &Repository, record: &SnapshotRecord) -> Result<Manifest, Error> {
    let key = ObjectKey::Manifest(record.id.clone());
    if repo.object_digest(&key).await? != record.manifest_digest {
        return Err(repository::Error::CorruptRecord {
            key: key.to_string(),
            reason: "manifest does not match the digest in its snapshot record".into(),
        }
        .into());
    }
    let plaintext = repo.get_open(ObjectKind::Manifest, &key).await?;
    serde_json::from_slice(&plaintext)
        .map_err(|e| repository::Error::CorruptRecord { key: key.to_string(), reason: e.to_string() }.into())
}
