//! `radd backup pg`: a non-exclusive base backup read straight from the data directory.
//!
//! Two stages run concurrently: a blocking reader walks the data directory, cuts files into
//! chunks, hashes them and fills packs; an async uploader seals (zstd + age) and stores packs
//! with bounded concurrency. The channel between them holds one pack, so memory is bounded by
//! about (2 + upload_concurrency) packs whatever the size of the cluster.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::Error;
use super::manifest::{Manifest, PgInfo, SnapshotKind, SnapshotRecord, SnapshotTotals};
use super::pack::BlobIndex;
use super::parent::{ParentReader, ParentWriter, record_path as parent_record_path};
use super::pipeline::{self, Walk};
use super::server_files;
use super::standby;
use super::walk::{Found, walk_data_dir};
use crate::config::{BackupConfig, PostgresConfig};
use crate::pg::{self, BackupSession, WalFileName};
use crate::progress::Progress;
use crate::repo::lock;
use crate::repository::Repository;

/// How to take a base backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Connection to the cluster.
    pub postgres: PostgresConfig,
    /// Chunking and packing.
    pub backup: BackupConfig,
    /// Read every file, ignoring the parent record (size/mtime/inode shortcuts).
    pub full_read: bool,
    /// Bytes of files read (or reused unchanged) against the data directory's size.
    pub progress: Progress,
}

/// The result of a backup, printed by the CLI (text or `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The new snapshot's id.
    pub snapshot_id: String,
    /// Files backed up.
    pub files: u64,
    /// Logical bytes read.
    pub total_bytes: u64,
    /// Bytes of chunks new to the repository.
    pub new_bytes: u64,
    /// Bytes of chunks already stored (deduplicated).
    pub reused_bytes: u64,
    /// Bytes written to storage (compressed, encrypted).
    pub uploaded_bytes: u64,
    /// Files read from disk.
    pub files_read: u64,
    /// Files reused from the parent backup without reading (unchanged size, mtime, inode).
    pub files_unchanged: u64,
    /// Bytes read from disk.
    pub read_bytes: u64,
    /// Parent snapshot whose unchanged files were reused, if any.
    pub parent: Option<String>,
    /// Backup start LSN.
    pub start_lsn: String,
    /// Backup stop LSN.
    pub stop_lsn: String,
    /// Timeline.
    pub timeline: u32,
    /// Taken from a streaming standby (its primary switched WAL).
    pub from_standby: bool,
    /// Wall time in seconds.
    pub duration_seconds: f64,
}

/// Takes a base backup of the configured cluster into the repository and commits a snapshot.
/// Nothing is committed unless every pack, the index, the manifest and the WAL from backup
/// start to stop are stored.
///
/// Holds a shared repository lock from before it reads the blob index until the snapshot is
/// committed, so no prune deletes what it reuses or uploads meanwhile.
pub async fn backup_pg(repo: &Repository, options: &BackupOptions) -> Result<BackupReport, Error> {
    let lock = repo.lock_shared("backup pg", options.backup.lock_wait()).await?;
    let result = backup_pg_locked(repo, options, &lock).await;
    release(lock).await;
    result
}

/// Deletes a backup's lock; a lock that cannot be deleted goes stale and is then ignored.
pub(crate) async fn release(lock: lock::SharedLock) {
    if let Err(error) = lock.release().await {
        tracing::warn!(error = %error, "cannot remove the backup's repository lock; prunes ignore it once it is stale");
    }
}

// Long on purpose: the write order of a base backup (start backup, read and upload, stop backup, WAL wait, index and manifest, record, parent) as one linear sequence, so the order design.md fixes reads top to bottom.
async fn backup_pg_locked(
    repo: &Repository,
    options: &BackupOptions,
    lock: &lock::SharedLock,
) -> Result<BackupReport, Error> {
    let clock = Instant::now();
    let started = chrono::Utc::now();
    let snapshot_id = pipeline::new_snapshot_id(started);
    // The blob index loads while PostgreSQL checkpoints for the backup: both are waits that
    // grow with the cluster (a fast checkpoint of a busy server, index objects of a large
    // repository), and neither needs the other.
    let starting = async {
        let client = pg::connect(&options.postgres).await?;
        let primary = standby::primary_for(&client, &options.postgres).await?;
        let config_paths = pg::conf::config_paths(&client).await;
        let session = BackupSession::start(client, &format!("radd {snapshot_id}")).await?;
        Ok::<_, Error>((primary, config_paths, session))
    };
    let loading = async { BlobIndex::load(repo).await.map(Arc::new) };
    let ((primary, config_paths, session), known) = tokio::try_join!(starting, loading)?;
    tracing::info!(
        snapshot_id = %snapshot_id,
        known_blobs = known.len(),
        seconds = clock.elapsed().as_secs_f64(),
        "base backup started in PostgreSQL, blob index loaded"
    );
    let start = session.start.clone();
    let data_dir = options.postgres.data_dir.clone().unwrap_or_else(|| start.data_dir.clone());
    crate::archive::claim_segment_size(repo, start.segment_size, &format!("backup of {}", data_dir.display())).await?;
    let parent_path =
        parent_record_path(&options.backup.state_dir, &repo.meta.id, data_dir.as_os_str().as_encoded_bytes());
    let parent = if options.full_read { None } else { ParentReader::open_checked(&parent_path, repo).await };
    let parent_id = parent.as_ref().map(|p| p.snapshot_id().to_owned());
    let next_parent = match ParentWriter::create(&parent_path, &snapshot_id, started.timestamp_millis()) {
        Ok(writer) => Some(writer),
        Err(error) => {
            tracing::warn!(path = %parent_path.display(), error = %error, "cannot write the parent record: the next backup reads every file");
            None
        }
    };

    let (config_found, server_files) = match &config_paths {
        Ok(paths) => {
            // The server names its configuration files by its own data_directory.
            let (found, record) = server_files::collect(&start.data_dir, paths)?;
            (found, Some(record))
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot ask where the server's configuration files are (grant pg_read_all_settings); files outside the data directory are not in the backup");
            (Vec::new(), None)
        }
    };
    let version_dir = pg::version_dir_prefix(start.server_version_num);
    let progress = options.progress.clone();
    progress.set_message("reading files");
    let walk: Box<Walk> = Box::new(move |emit: &mut dyn FnMut(Found) -> Result<(), Error>| {
        let mut found = walk_data_dir(&data_dir, &version_dir)?;
        server_files::merge(&mut found, config_found);
        standby::pg_control_last(&mut found);
        progress.set_total(
            found.iter().filter(|f| f.meta.is_file() && f.hardlink_of.is_none()).map(|f| f.meta.len()).sum(),
        );
        for found in found {
            emit(found)?;
        }
        Ok(())
    });
    let tree = pipeline::Tree {
        walk,
        chunking: pipeline::data_dir_chunking(&options.backup),
        stable_reads: false,
        parent,
        next_parent,
    };
    let (mut read, mut upload) =
        pipeline::store_tree(repo, &snapshot_id, Arc::clone(&known), tree, &options.backup, &options.progress).await?;
    let next_parent = read.next_parent.take();

    tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "files read and packs stored");
    // What was read, not what the walk saw (files grow and shrink meanwhile): the bar ends at the report's total.
    options.progress.set_total(read.total_bytes);
    options.progress.set_message("waiting for WAL");
    let tablespaces = session.tablespaces().await?;
    let stop = session.stop().await?;
    let consistent_at = chrono::Utc::now();
    tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "backup stopped in PostgreSQL (WAL switched)");
    if let Some(primary) = &primary {
        primary.switch_wal_past(stop.lsn).await?;
    }
    let segment_size = start.segment_size;
    let first = WalFileName::segment_for(stop.timeline, start.lsn, segment_size);
    let last = WalFileName::segment_for(stop.timeline, stop.lsn, segment_size);
    if let (WalFileName::Segment { number: a, .. }, WalFileName::Segment { number: b, .. }) = (&first, &last) {
        wait_for_wal(repo, &last, segment_size, options.backup.archive_wait()).await;
        crate::archive::check_chain(repo, stop.timeline, *a, Some(*b), segment_size)
            .await
            .map_err(Error::WalMissing)?;
    }

    let files = read.files;
    let manifest = Manifest {
        snapshot_id: snapshot_id.clone(),
        entries: Vec::new(),
        entry_chunks: std::mem::take(&mut read.entry_chunks),
        backup_label: Some(stop.label_file.clone()),
        tablespace_map: Some(stop.tablespace_map.clone()),
        unreadable: Vec::new(),
        server_files,
    };
    tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "WAL chain checked");
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
    let totals = SnapshotTotals {
        files,
        total_bytes: read.total_bytes,
        new_bytes: read.new_bytes,
        reused_bytes: read.reused_bytes,
        uploaded_bytes,
        manifest_digest,
    };
    let record = SnapshotRecord {
        finished: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        pg: Some(PgInfo {
            start_lsn: start.lsn,
            stop_lsn: stop.lsn,
            timeline: stop.timeline,
            segment_size,
            server_version: start.server_version.clone(),
            server_version_num: start.server_version_num,
            data_dir: start.data_dir.display().to_string(),
            consistent_at: Some(consistent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            tablespaces,
            from_standby: primary.is_some(),
        }),
        ..SnapshotRecord::new(snapshot_id.clone(), SnapshotKind::Pg, started, totals)
    };
    crate::faults::pause_point("backup:before-commit").await;
    lock.check().await?;
    repo.write(&record).await?;
    // Only a committed snapshot may serve as the next one's parent.
    if let Some(next_parent) = next_parent
        && let Err(error) = next_parent.commit()
    {
        tracing::warn!(path = %parent_path.display(), error = %error, "cannot save the parent record: the next backup reads every file");
    }
    let report = BackupReport {
        snapshot_id,
        files,
        total_bytes: read.total_bytes,
        new_bytes: read.new_bytes,
        reused_bytes: read.reused_bytes,
        uploaded_bytes,
        files_read: read.files_read,
        files_unchanged: read.files_unchanged,
        read_bytes: read.read_bytes,
        parent: parent_id,
        start_lsn: start.lsn.to_string(),
        stop_lsn: stop.lsn.to_string(),
        timeline: stop.timeline.0,
        from_standby: primary.is_some(),
        duration_seconds: clock.elapsed().as_secs_f64(),
    };
    tracing::info!(
        snapshot_id = %report.snapshot_id,
        new_bytes = report.new_bytes,
        reused_bytes = report.reused_bytes,
        uploaded_bytes = report.uploaded_bytes,
        "base backup committed"
    );
    Ok(report)
}

/// Waits until the segment holding the backup's stop LSN is in the repository (the archiver
/// pushes it right after `pg_backup_stop` switched WAL), polling from 10 ms up to 250 ms, for at
/// most `limit`. The chain check that follows decides; this only avoids checking too early.
async fn wait_for_wal(
    repo: &Repository,
    last: &WalFileName,
    segment_size: pg::SegmentSize,
    limit: std::time::Duration,
) {
    let WalFileName::Segment { timeline, .. } = last else { return };
    let name = last.to_name(segment_size);
    match crate::archive::wait_archived(repo, *timeline, &name, limit).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(segment = %name, "WAL needed by the backup has not been archived in time; check archive_command")
        }
        Err(error) => tracing::warn!(segment = %name, error = %error, "cannot check the WAL archive"),
    }
}
