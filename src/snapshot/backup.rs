//! `radd backup pg`: a non-exclusive base backup read straight from the data directory.
//!
//! Two stages run concurrently: a blocking reader walks the data directory, cuts files into
//! chunks, hashes them and fills packs; an async uploader seals (zstd + age) and stores packs
//! with bounded concurrency. The channel between them holds one pack, so memory is bounded by
//! about (2 + upload_concurrency) packs whatever the size of the cluster.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use super::manifest::{EntryKind, Manifest, PgInfo, SnapshotKind, SnapshotRecord};
use super::pack::{BlobIndex, PendingPack, UploadReport, upload_packs};
use super::parent::ParentFiles;
use super::pipeline;
use super::Error;
use crate::codec::ObjectKind;
use crate::config::{BackupConfig, PostgresConfig};
use crate::pg::{self, BackupSession, WalFileName};
use crate::repo::ObjectKey;
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
    /// Wall time in seconds.
    pub duration_seconds: f64,
}


/// Takes a base backup of the configured cluster into the repository and commits a snapshot.
/// Nothing is committed unless every pack, the index, the manifest and the WAL from backup
/// start to stop are stored.
pub async fn backup_pg(repo: &Repository, options: &BackupOptions) -> Result<BackupReport, Error> {
    let clock = Instant::now();
    let started = chrono::Utc::now();
    let snapshot_id = format!(
        "{}-{}",
        started.format("%Y%m%dT%H%M%SZ"),
        &crate::crypto::IdKey::generate().digest(b"snapshot id").to_string()[..8]
    );
    let known = Arc::new(BlobIndex::load(repo).await?);
    tracing::info!(snapshot_id = %snapshot_id, known_blobs = known.len(), "starting base backup");

    let client = pg::connect(&options.postgres).await?;
    let session = BackupSession::start(client, &format!("radd {snapshot_id}")).await?;
    let start = session.start.clone();
    let data_dir = options.postgres.data_dir.clone().unwrap_or_else(|| start.data_dir.clone());
    let parent_path = ParentFiles::path(&options.backup.state_dir, &repo.meta.id, &data_dir);
    let parent = if options.full_read { None } else { ParentFiles::load(&parent_path) };
    let parent_id = parent.as_ref().map(|p| p.snapshot_id.clone());

    let (tx, rx) = mpsc::channel::<PendingPack>(1);
    let uploader = tokio::spawn(upload_packs(repo.clone(), rx, options.backup.upload_concurrency));
    let reader = {
        let id_key = repo.id_key.clone();
        let backup = options.backup.clone();
        let known = Arc::clone(&known);
        tokio::task::spawn_blocking(move || pipeline::read_data_dir(&data_dir, &known, parent.as_ref(), &id_key, &backup, &tx))
    };
    let read = reader.await.map_err(|e| Error::Internal(e.to_string()))?;
    let upload = uploader.await.map_err(|e| Error::Internal(e.to_string()))?;
    // An uploader failure makes the reader fail too; report the root cause first.
    let upload: UploadReport = upload?;
    let mut read = read?;
    read.next_parent.snapshot_id.clone_from(&snapshot_id);
    read.next_parent.started_ms = started.timestamp_millis();
    let next_parent = std::mem::take(&mut read.next_parent);

    let stop = session.stop().await?;
    let segment_size = start.segment_size;
    let first = WalFileName::segment_for(stop.timeline, start.lsn, segment_size);
    let last = WalFileName::segment_for(stop.timeline, stop.lsn, segment_size);
    if let (WalFileName::Segment { number: a, .. }, WalFileName::Segment { number: b, .. }) = (&first, &last) {
        crate::archive::check_chain(repo, stop.timeline, *a, Some(*b), segment_size)
            .await
            .map_err(Error::WalMissing)?;
    }

    let mut uploaded_bytes = upload.uploaded_bytes;
    if !upload.index.packs.is_empty() {
        repo.put_record(&ObjectKey::Index(snapshot_id.clone()), &upload.index).await?;
    }
    let files = read.entries.iter().filter(|e| matches!(e.kind, EntryKind::File { .. })).count() as u64;
    let manifest = Manifest {
        snapshot_id: snapshot_id.clone(),
        entries: read.entries,
        backup_label: Some(stop.label_file.clone()),
        tablespace_map: Some(stop.tablespace_map.clone()),
    };
    let manifest_json = serde_json::to_vec(&manifest).expect("manifest serialises");
    drop(manifest);
    let (_, manifest_digest, manifest_bytes) = repo
        .seal_put(ObjectKind::Manifest, &ObjectKey::Manifest(snapshot_id.clone()), manifest_json)
        .await?;
    uploaded_bytes += manifest_bytes;
    let record = SnapshotRecord {
        id: snapshot_id.clone(),
        kind: SnapshotKind::Pg,
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        finished: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pg: Some(PgInfo {
            start_lsn: start.lsn,
            stop_lsn: stop.lsn,
            timeline: stop.timeline,
            segment_size,
            server_version: start.server_version.clone(),
            server_version_num: start.server_version_num,
            data_dir: start.data_dir.display().to_string(),
        }),
        files,
        total_bytes: read.total_bytes,
        new_bytes: read.new_bytes,
        reused_bytes: read.reused_bytes,
        uploaded_bytes,
        manifest_digest,
    };
    repo.put_record(&ObjectKey::Snapshot(snapshot_id.clone()), &record).await?;
    if let Err(error) = next_parent.save(&parent_path) {
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
