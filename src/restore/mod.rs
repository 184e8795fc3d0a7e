//! Restore: snapshot → data directory, every file checked against its manifest SHA-256, then
//! recovery settings so that `pg_ctl start` replays archived WAL to the chosen target.
//!
//! Checks before writing anything: the target is empty or absent, and the archive holds an
//! unbroken WAL chain from the backup start to the target (DESIGN.md "WAL gaps are never the
//! end of the archive"). Writes into a staging directory beside the target and renames it into
//! place only when everything is written, verified and fsync'd: a failed restore leaves nothing
//! that looks like a data directory.

mod recovery;
mod server_config;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use recovery::RecoveryTarget;

use crate::archive;
use crate::error::ErrorKind;
use crate::pg::WalFileName;
use crate::repository::{self, Repository};
use crate::snapshot::{self, BlobIndex};

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
        /// The gap or failure.
        source: archive::Error,
        /// What the operator can do.
        hint: &'static str,
    },
    /// A chunk referenced by the manifest is in no index.
    #[error("chunk {chunk} of {path} is missing from the repository; the snapshot cannot be restored (run `radd verify`)")]
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
    /// A restored file does not match its manifest checksum.
    #[error("restored file {path} does not match its manifest SHA-256 (expected {expected}, got {actual}); the repository is damaged (run `radd verify`)")]
    Checksum {
        /// File.
        path: String,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
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
    /// Reading the snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    /// Repository failure (storage, decryption, integrity).
    #[error(transparent)]
    Repository(#[from] repository::Error),
}

impl Error {
    /// Category for exit codes.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TargetNotEmpty { .. } => ErrorKind::Conflict,
            Error::File { source, .. } => source.kind(),
            Error::NotPg(_) => ErrorKind::Config,
            Error::Wal { source, .. } => source.kind(),
            Error::MissingChunk { .. } | Error::Checksum { .. } => ErrorKind::Integrity,
            Error::Io { .. } => ErrorKind::Io,
            Error::Snapshot(e) => e.kind(),
            Error::Repository(e) => e.kind(),
        }
    }
}

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `latest`, a snapshot id or a unique prefix.
    pub snapshot: String,
    /// Directory to create (absent or empty).
    pub target: PathBuf,
    /// Where recovery stops.
    pub recovery: RecoveryTarget,
    /// Accept a WAL gap after the consistency point (recovery then stops at the gap).
    pub allow_gap: bool,
    /// `restore_command` to write (normally `radd … wal-fetch %f %p`).
    pub restore_command: String,
    /// Write `archive_mode = off` so the restored cluster does not archive into the repository.
    pub disable_archiving: bool,
    /// Fs snapshots: restore only paths matching these globs (and everything below them).
    pub include: Vec<String>,
    /// Base backups: where the server's configuration files that lived outside the source's
    /// data directory go (default: into the restored data directory).
    pub config_dir: Option<PathBuf>,
}

/// The result of a restore, printed by the CLI (text or `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// Snapshot restored.
    pub snapshot_id: String,
    /// Data directory written.
    pub target: PathBuf,
    /// Files written and verified.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Last WAL segment of the verified chain.
    pub wal_chain_end: String,
    /// Recovery target written (PostgreSQL snapshots).
    pub recovery_target: String,
    /// What was restored: `pg` or `fs`.
    pub kind: snapshot::SnapshotKind,
    /// Wall time in seconds.
    pub duration_seconds: f64,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.to_owned(), source }
}

/// Restores a snapshot into `options.target`.
pub async fn run(repo: &Repository, options: &RestoreOptions) -> Result<RestoreReport, Error> {
    let clock = Instant::now();
    let record = snapshot::resolve(repo, &options.snapshot).await?;
    check_target(&options.target)?;
    server_config::check_config_dir(options.config_dir.as_deref())?;
    let destination = server_config::Destination { target: &options.target, config_dir: options.config_dir.as_deref() };
    let include = if options.include.is_empty() {
        None
    } else {
        Some(snapshot::glob_set(&options.include)?)
    };
    let wal_chain_end = match &record.pg {
        Some(pg) => check_wal(repo, &record.id, pg, options).await?,
        None => String::new(),
    };
    let index = BlobIndex::load(repo).await?;
    let manifest = snapshot::load_manifest_with(repo, &record, &index).await?;
    tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "WAL chain, index and manifest loaded");

    let staging = staging_dir(&options.target)?;
    let result = async {
        let written = writer::write_entries(repo, &index, &manifest, &staging, include.as_ref()).await?;
        tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "files written and verified");
        if let Some(pg) = &record.pg {
            server_config::prepare(&staging, manifest.server_files.as_ref(), Path::new(&pg.data_dir), destination)?;
            recovery::write_settings(&staging, &manifest, options, &record.id)?;
        }
        writer::sync_tree(&staging)?;
        tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "files and directories fsync'd");
        Ok::<_, Error>(written)
    }
    .await;
    let (files, bytes) = match result {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if options.target.exists() {
        std::fs::remove_dir(&options.target).map_err(io_err("replace empty directory", &options.target))?;
    }
    std::fs::rename(&staging, &options.target).map_err(io_err("move restored data into", &options.target))?;
    if let Some(parent) = options.target.parent() {
        writer::sync_dir(parent)?;
    }
    if record.pg.is_some() {
        server_config::finish(destination)?;
    }
    Ok(RestoreReport {
        snapshot_id: record.id,
        target: options.target.clone(),
        files,
        bytes,
        wal_chain_end,
        recovery_target: if record.pg.is_some() { options.recovery.to_string() } else { String::new() },
        kind: record.kind,
        duration_seconds: clock.elapsed().as_secs_f64(),
    })
}

fn check_target(target: &Path) -> Result<(), Error> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::TargetNotEmpty { path: target.to_owned() });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(Error::TargetNotEmpty { path: target.to_owned() })
        }
        Err(e) => Err(io_err("read", target)(e)),
    }
}

/// Verifies the archived WAL chain from backup start to the target; returns its last segment.
async fn check_wal(
    repo: &Repository,
    snapshot_id: &str,
    pg: &snapshot::PgInfo,
    options: &RestoreOptions,
) -> Result<String, Error> {
    let size = pg.segment_size;
    let first = pg.start_lsn.segment_no(size);
    let consistent = pg.stop_lsn.segment_no(size);
    let wal_err = |source, hint| Error::Wal { snapshot: snapshot_id.to_owned(), source, hint };
    archive::check_chain(repo, pg.timeline, first, Some(consistent), size)
        .await
        .map_err(|e| wal_err(e, "; the WAL needed to make this backup consistent is gone, restore an older snapshot"))?;
    let wanted = match &options.recovery {
        RecoveryTarget::Immediate => Some(consistent),
        RecoveryTarget::Lsn(lsn) => Some(lsn.segment_no(size).max(consistent)),
        RecoveryTarget::Latest | RecoveryTarget::Time(_) | RecoveryTarget::Name(_) => None,
    };
    let last = match archive::check_chain(repo, pg.timeline, first, wanted, size).await {
        Ok(last) => last,
        Err(archive::Error::Gap { .. }) if options.allow_gap => {
            tracing::warn!(snapshot_id, "WAL gap accepted with --allow-gap; recovery will stop at the gap");
            consistent
        }
        Err(e) => {
            return Err(wal_err(e, "; pass --allow-gap to accept recovery stopping at the gap"));
        }
    };
    Ok(WalFileName::Segment { timeline: pg.timeline, number: last }.to_name(size))
}

/// A fresh, private directory beside the target, on the same file system for the final rename.
fn staging_dir(target: &Path) -> Result<PathBuf, Error> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = parent.join(format!(".{name}.radd-restore-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_err("remove stale", &staging))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_err("create", &staging))?;
    Ok(staging)
}

use std::os::unix::fs::DirBuilderExt;
