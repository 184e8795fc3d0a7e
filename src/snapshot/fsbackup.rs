//! `radd backup fs`: plain file trees into the same chunk store as base backups (same CDC
//! chunking, dedup, zstd, age, keyed ids), with optional consistency hooks around the read.
//!
//! The pre-hook runs first (a failure aborts: no snapshot); the post-hook always runs — after
//! success, failure or cancellation — before the record is written, so its exit status and
//! duration are part of the snapshot record. Files that cannot be read consistently are listed
//! in the manifest and make the snapshot `partial`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::fswalk::{TreeOptions, walk_tree};
use super::manifest::{HookRun, Manifest, SnapshotKind, SnapshotRecord, SnapshotTotals};
use super::pack::BlobIndex;
use super::parent::{ParentReader, ParentWriter, PendingParent, record_path as parent_record_path};
use super::pipeline::Walk;
use super::walk::Found;
use super::{Chunking, Error, pipeline};
use crate::config::BackupConfig;
use crate::repository::Repository;

/// How to take a file-tree snapshot.
#[derive(Debug, Clone, Default)]
pub struct FsBackupOptions {
    /// Roots, excludes, one-file-system.
    pub tree: TreeOptions,
    /// Tags stored in the record.
    pub tags: Vec<String>,
    /// Chunking and packing.
    pub backup: BackupConfig,
    /// Read every file, ignoring the parent record.
    pub full_read: bool,
    /// Shell command run before reading (e.g. fsfreeze, a file-system snapshot, a dump).
    pub pre: Option<String>,
    /// Shell command run after reading, always.
    pub post: Option<String>,
    /// Bytes of files read (or reused unchanged); the total is not known up front (the walk
    /// streams).
    pub progress: crate::progress::Progress,
}

/// The result of `radd backup fs`.
#[derive(Debug, Clone, Serialize)]
pub struct FsBackupReport {
    /// The new snapshot.
    pub snapshot_id: String,
    /// Root paths.
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Files (including further hard-link names).
    pub files: u64,
    /// Logical bytes.
    pub total_bytes: u64,
    /// Bytes read from disk.
    pub read_bytes: u64,
    /// Bytes of new chunks.
    pub new_bytes: u64,
    /// Bytes deduplicated or reused from the parent.
    pub reused_bytes: u64,
    /// Bytes written to storage.
    pub uploaded_bytes: u64,
    /// Files read.
    pub files_read: u64,
    /// Files reused unchanged from the parent without reading.
    pub files_unchanged: u64,
    /// Parent snapshot, if any.
    pub parent: Option<String>,
    /// Whether some files could not be read (see `unreadable`).
    pub partial: bool,
    /// Files and directories not in the snapshot, with the reason.
    pub unreadable: Vec<String>,
    /// Hooks that ran.
    pub hooks: Vec<HookRun>,
    /// Wall time.
    pub duration_seconds: f64,
}

/// Runs a hook with `sh -c`, logging its output; returns its record.
async fn run_hook(phase: &str, command: &str) -> HookRun {
    let clock = Instant::now();
    tracing::info!(phase, "running hook");
    let output = tokio::process::Command::new("sh").arg("-c").arg(command).output().await;
    let exit_code = match output {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                tracing::info!(phase, "hook: {line}");
            }
            out.status.code()
        }
        Err(error) => {
            tracing::error!(phase, error = %error, "cannot run hook");
            None
        }
    };
    HookRun { phase: phase.to_owned(), exit_code, seconds: clock.elapsed().as_secs_f64() }
}

/// Takes a snapshot of the configured trees. `cancel` resolving (SIGTERM) abandons the read;
/// the post-hook still runs and nothing is committed.
pub async fn backup_fs(
    repo: &Repository,
    options: &FsBackupOptions,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<FsBackupReport, Error> {
    let clock = Instant::now();
    let mut hooks = Vec::new();
    if let Some(pre) = &options.pre {
        let run = run_hook("pre", pre).await;
        let ok = run.exit_code == Some(0);
        hooks.push(run);
        if !ok {
            let post = match &options.post {
                Some(post) => Some(run_hook("post", post).await),
                None => None,
            };
            return Err(Error::Hook {
                phase: "pre",
                exit_code: hooks[0].exit_code,
                post_exit_code: post.and_then(|p| p.exit_code),
            });
        }
    }
    // The shared lock keeps prune away from what the snapshot reuses or uploads until commit.
    let result = tokio::select! {
        r = async {
            let lock = repo.lock_shared("backup fs", options.backup.lock_wait()).await?;
            match snapshot(repo, options).await {
                Ok(pending) => Ok((pending, lock)),
                Err(error) => {
                    super::backup::release(lock).await;
                    Err(error)
                }
            }
        } => r,
        () = cancel => Err(Error::Cancelled),
    };
    if let Some(post) = &options.post {
        hooks.push(run_hook("post", post).await);
    }
    let (Pending { mut report, record, next_parent }, lock) = result?;
    report.hooks.clone_from(&hooks);
    let record = SnapshotRecord {
        hooks,
        finished: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ..record
    };
    let committed = match lock.check().await {
        Ok(()) => repo.write(&record).await.map_err(Error::from),
        Err(error) => Err(error.into()),
    };
    super::backup::release(lock).await;
    committed?;
    // Only a committed snapshot may serve as the next one's parent.
    if let Some(next_parent) = next_parent {
        let path = next_parent.path().to_owned();
        if let Err(error) = next_parent.commit() {
            tracing::warn!(path = %path.display(), error = %error, "cannot save the parent record: the next snapshot reads every file");
        }
    }
    report.duration_seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// A snapshot written up to its record: what [`backup_fs`] commits after the post-hook.
struct Pending {
    report: FsBackupReport,
    record: SnapshotRecord,
    next_parent: Option<PendingParent>,
}

/// Reads, uploads and writes index and manifest; returns what remains to commit.
// Long on purpose: the write order of an fs snapshot (parent, walk and upload, index and manifest, record parts) as one linear sequence.
async fn snapshot(repo: &Repository, options: &FsBackupOptions) -> Result<Pending, Error> {
    let started = chrono::Utc::now();
    let snapshot_id = pipeline::new_snapshot_id(started);
    let known = Arc::new(BlobIndex::load(repo).await?);
    let roots: Vec<PathBuf> =
        options.tree.roots.iter().map(|r| std::path::absolute(r).unwrap_or_else(|_| r.clone())).collect();
    let paths: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    let source: Vec<u8> = paths.join("\n").into_bytes();
    let parent_path = parent_record_path(&options.backup.state_dir, &repo.meta.id, &source);
    let parent = if options.full_read { None } else { ParentReader::open_checked(&parent_path, repo).await };
    let parent_id = parent.as_ref().map(|p| p.snapshot_id().to_owned());
    let next_parent = match ParentWriter::create(&parent_path, &snapshot_id, started.timestamp_millis()) {
        Ok(writer) => Some(writer),
        Err(error) => {
            tracing::warn!(path = %parent_path.display(), error = %error, "cannot write the parent record: the next snapshot reads every file");
            None
        }
    };
    tracing::info!(snapshot_id = %snapshot_id, roots = ?paths, "starting file-tree snapshot");

    let tree = TreeOptions { roots, ..options.tree.clone() };
    let unreadable_dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let walk: Box<Walk> = {
        let unreadable_dirs = Arc::clone(&unreadable_dirs);
        Box::new(move |emit: &mut dyn FnMut(Found) -> Result<(), Error>| {
            let unreadable = walk_tree(&tree, emit)?;
            if let Ok(mut u) = unreadable_dirs.lock() {
                *u = unreadable;
            }
            Ok(())
        })
    };
    let chunk = options.backup.fs_chunk_size.as_usize();
    let tree = pipeline::Tree {
        walk,
        chunking: move |_: &str| Chunking::ContentDefined(chunk),
        stable_reads: true,
        parent,
        next_parent,
    };
    let (mut read, mut upload) =
        pipeline::store_tree(repo, &snapshot_id, known, tree, &options.backup, &options.progress).await?;
    let mut unreadable = unreadable_dirs.lock().map(|mut u| std::mem::take(&mut *u)).unwrap_or_default();
    unreadable.append(&mut read.unreadable);
    let files = read.files;
    let manifest = Manifest {
        snapshot_id: snapshot_id.clone(),
        entries: Vec::new(),
        entry_chunks: std::mem::take(&mut read.entry_chunks),
        backup_label: None,
        tablespace_map: None,
        unreadable: unreadable.clone(),
        server_files: None,
    };
    let (manifest_bytes, manifest_digest) = pipeline::write_index_and_manifest(
        repo,
        &snapshot_id,
        &mut upload,
        options.backup.index_shard_blobs,
        &manifest,
    )
    .await?;
    drop(manifest);
    let uploaded_bytes = upload.uploaded_bytes + manifest_bytes;
    let partial = !unreadable.is_empty();
    let totals = SnapshotTotals {
        files,
        total_bytes: read.total_bytes,
        new_bytes: read.new_bytes,
        reused_bytes: read.reused_bytes,
        uploaded_bytes,
        manifest_digest,
    };
    let record = SnapshotRecord {
        paths: paths.clone(),
        tags: options.tags.clone(),
        partial,
        ..SnapshotRecord::new(snapshot_id.clone(), SnapshotKind::Fs, started, totals)
    };
    let report = FsBackupReport {
        snapshot_id,
        paths,
        tags: options.tags.clone(),
        files,
        total_bytes: read.total_bytes,
        read_bytes: read.read_bytes,
        new_bytes: read.new_bytes,
        reused_bytes: read.reused_bytes,
        uploaded_bytes,
        files_read: read.files_read,
        files_unchanged: read.files_unchanged,
        parent: parent_id,
        partial,
        unreadable,
        hooks: Vec::new(),
        duration_seconds: 0.0,
    };
    Ok(Pending { report, record, next_parent: read.next_parent })
}
