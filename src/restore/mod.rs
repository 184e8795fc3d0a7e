//! Restore: snapshot → data directory, every file checked against its manifest SHA-256, then
//! recovery settings so that `pg_ctl start` replays archived WAL to the chosen target.
//!
//! Checks before writing anything: the target (and every tablespace's target, see
//! `tablespace`) is empty or absent, and the archive holds an
//! unbroken WAL chain from the backup start to the target (DESIGN.md "WAL gaps are never the
//! end of the archive"). Writes into a staging directory beside the target and renames it into
//! place only when everything is written, verified and fsync'd: a failed restore leaves nothing
//! that looks like a data directory.

mod content;
mod error;
mod out_file;
mod pack_plan;
pub mod pg_manifest;
pub mod points;
mod recovery;
mod server_config;
mod spill;
mod tablespace;
mod target;
mod when;
pub mod window;
mod writer;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use error::Error;
pub use points::RestorePoint;
pub use recovery::RecoveryTarget;
pub use tablespace::{TablespaceMapping, TablespaceRestore};
pub use when::{ACCEPTED_FORMS, parse_time, parse_time_at};
pub use window::Window;

use crate::archive;
use crate::archive::Timelines;
use crate::pg::{Lsn, SegmentSize, Timeline, WalFileName};
use crate::repo::ObjectKey;
use crate::repository::Repository;
use crate::snapshot::{self, BlobIndex};

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
    /// Timeline to recover along (`None`: the newest, unless it diverged).
    pub timeline: Option<Timeline>,
    /// `restore_command` to write (normally `radd … wal-fetch %f %p`).
    pub restore_command: String,
    /// Write `archive_mode = off` so the restored cluster does not archive into the repository.
    pub disable_archiving: bool,
    /// Fs snapshots: restore only paths matching these globs (and everything below them).
    pub include: Vec<String>,
    /// PostgreSQL snapshots: where tablespaces go (default: their locations at backup time).
    pub tablespaces: TablespaceMapping,
    /// Base backups: where the server's configuration files that lived outside the source's
    /// data directory go (default: into the restored data directory).
    pub config_dir: Option<PathBuf>,
    /// Bytes of file content written, against the total of the files restored.
    pub progress: crate::progress::Progress,
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
    /// Packs fetched and decrypted for the files' content (the manifest's own entry packs, read
    /// while loading it, are not counted). Equal to `packs_distinct`: a restore reads each pack
    /// once.
    pub packs_read: u64,
    /// Distinct packs holding the content of the files restored.
    pub packs_distinct: u64,
    /// Last WAL segment of the verified chain.
    pub wal_chain_end: String,
    /// Recovery target written (PostgreSQL snapshots).
    pub recovery_target: String,
    /// The target as an absolute time (RFC 3339, UTC): a `--time` however it was written
    /// (`yesterday 14:05`, `2h ago`), or when the restore point was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
    /// The restore point recovery stops at (`--name`), as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_point: Option<RestorePoint>,
    /// Timeline recovery follows (PostgreSQL snapshots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// WAL accepted as lost with `--allow-gap`: recovery stops before `from_lsn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_loss: Option<AcceptedLoss>,
    /// What was restored: `pg` or `fs`.
    pub kind: snapshot::SnapshotKind,
    /// Tablespaces restored, and where.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<TablespaceRestore>,
    /// Wall time in seconds.
    pub duration_seconds: f64,
}

/// The WAL a restore with `--allow-gap` gives up: everything from the first missing segment to
/// the end of the archive on that timeline. Recorded in the restore event.
#[derive(Debug, Clone, Serialize)]
pub struct AcceptedLoss {
    /// The first missing segment.
    pub first_missing: String,
    /// Recovery stops before this position (the start of the first missing segment).
    pub from_lsn: Lsn,
    /// End of the archived WAL that cannot be replayed (end of the newest archived segment).
    pub to_lsn: Lsn,
}

/// What the checks before writing decided; the recovery settings are written from it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Where recovery stops.
    recovery: RecoveryTarget,
    /// `recovery_target_timeline`.
    timeline: Option<Timeline>,
    /// wal-fetch answers "not in the archive" from this segment on (an accepted gap).
    end_before: Option<String>,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.to_owned(), source }
}

/// The snapshot a restore of `wanted` to `recovery` starts from (as [`run`] picks it): for a
/// restore point, the newest consistent before its LSN on its timeline.
pub async fn choose_snapshot(
    repo: &Repository,
    wanted: &str,
    recovery: &RecoveryTarget,
) -> Result<snapshot::SnapshotRecord, Error> {
    Ok(Start::choose(repo, wanted, recovery).await?.record)
}

/// Where a restore starts: the snapshot, the restore point (`--name`) and the position the
/// snapshot, window and WAL chain are checked against. A restore point is a position: those
/// checks use its LSN (and its timeline), while recovery stops at the name.
struct Start {
    record: snapshot::SnapshotRecord,
    point: Option<RestorePoint>,
    bound: RecoveryTarget,
}

impl Start {
    async fn choose(repo: &Repository, wanted: &str, recovery: &RecoveryTarget) -> Result<Self, Error> {
        let point = match recovery {
            RecoveryTarget::Name(name) => Some(points::resolve(repo, name).await?),
            _ => None,
        };
        let bound = point.as_ref().map_or_else(|| recovery.clone(), |p| RecoveryTarget::Lsn(p.lsn));
        let record = target::choose_snapshot(repo, wanted, &bound, point.as_ref().map(RestorePoint::timeline)).await;
        let record = record.map_err(|e| relabel(e, point.as_ref()))?;
        Ok(Start { record, point, bound })
    }
}

/// A window error about a restore point names the point, not the LSN it was checked as.
fn relabel(e: Error, point: Option<&RestorePoint>) -> Error {
    match (e, point) {
        (Error::OutsideWindow { reason, .. }, Some(p)) => Error::OutsideWindow {
            target: format!("restore point {:?} (LSN {}, created {})", p.name, p.lsn, p.time),
            reason,
        },
        (e, _) => e,
    }
}

/// Restores a snapshot into `options.target`.
// Long on purpose: one linear restore (choose, WAL checks, manifest, content, recovery settings, report) whose steps share many locals.
pub async fn run(repo: &Repository, options: &RestoreOptions) -> Result<RestoreReport, Error> {
    let clock = Instant::now();
    options.progress.set_message("checking WAL, loading the manifest");
    let Start { record, point, bound } = Start::choose(repo, &options.snapshot, &options.recovery).await?;
    let relabel = |e: Error| relabel(e, point.as_ref());
    check_target(&options.target)?;
    server_config::check_config_dir(options.config_dir.as_deref())?;
    let destination = server_config::Destination { target: &options.target, config_dir: options.config_dir.as_deref() };
    let include = if options.include.is_empty() { None } else { Some(snapshot::glob_set(&options.include)?) };
    // The WAL checks (a listing of the archive: long on S3 for a busy cluster) and the blob
    // index (every index object) are independent reads of the repository: both at once.
    let checking_wal = async {
        let mut plan = Plan { recovery: options.recovery.clone(), timeline: None, end_before: None };
        let mut accepted_loss = None;
        let wal_chain_end = match &record.pg {
            Some(pg) => {
                let wal_err = |source| Error::Wal { snapshot: record.id.clone(), source: Box::new(source), hint: "" };
                let size =
                    archive::segment_size_for_snapshot(repo, pg.segment_size, &format!("snapshot {}", record.id))
                        .await
                        .map_err(wal_err)?;
                // One listing of the archive serves the timeline, window and chain checks.
                let timelines = Timelines::load(repo, size).await.map_err(wal_err)?;
                let follow =
                    target::timeline(&timelines, pg, options.timeline.or(point.as_ref().map(RestorePoint::timeline)))?;
                target::check_end(&timelines, &record, pg, follow, &bound).map_err(relabel)?;
                plan.timeline = Some(follow);
                let (end, loss) = check_wal(
                    &timelines.segment_numbers(pg.timeline),
                    &record.id,
                    pg,
                    size,
                    &bound,
                    options.allow_gap,
                )?;
                if let Some(loss) = &loss {
                    // Recovery must end at the gap: wal-fetch answers "not in the archive" from the
                    // first missing segment on, and a target beyond the gap (which PostgreSQL would
                    // never reach, stopping with an error) becomes the end of the archived WAL.
                    plan.end_before = Some(loss.first_missing.clone());
                    plan.timeline = Some(pg.timeline);
                    if matches!(bound, RecoveryTarget::Lsn(l) if l >= loss.from_lsn) {
                        plan.recovery = RecoveryTarget::Latest;
                    }
                }
                accepted_loss = loss;
                end
            }
            None => String::new(),
        };
        Ok::<_, Error>((plan, accepted_loss, wal_chain_end))
    };
    let ((plan, accepted_loss, wal_chain_end), index) =
        tokio::try_join!(checking_wal, async { BlobIndex::load(repo).await.map_err(Error::from) })?;
    let mut manifest = snapshot::load_manifest_lean(repo, &record, &index).await?;
    let manifest_key = ObjectKey::Manifest(record.id.clone()).to_string();
    tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "WAL chain, index and manifest loaded");
    let mut tablespaces = match &record.pg {
        Some(pg) => tablespace::plan(&manifest, &pg.tablespaces, &options.tablespaces, &options.target)?,
        None if !options.tablespaces.is_empty() => return Err(Error::NotPg(record.id.clone())),
        None => Vec::new(),
    };

    let staging = staging_dir(&options.target)?;
    let result = async {
        if record.pg.is_some() {
            tablespace::stage(&mut tablespaces, &mut manifest)?;
        }
        options.progress.set_message("writing files");
        let written = writer::write_entries(
            repo,
            &index,
            &manifest,
            &manifest_key,
            &staging,
            include.as_ref(),
            &options.progress,
        )
        .await?;
        options.progress.set_message("syncing to disk");
        tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "files written and verified");
        if let Some(pg) = &record.pg {
            server_config::prepare(&staging, manifest.server_files.as_ref(), Path::new(&pg.data_dir), destination)?;
            recovery::write_settings(&staging, &manifest, options, &plan, &record.id)?;
            // Before the links are repointed: the walk follows them into the staged tablespaces.
            let wal = pg_manifest::WalRange { timeline: pg.timeline, start: pg.start_lsn, end: pg.stop_lsn };
            pg_manifest::write(&staging, &manifest, wal)?;
            tablespace::point_links(&staging, &tablespaces)?;
        }
        writer::sync_tree(&staging)?;
        tablespace::sync(&tablespaces)?;
        tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "files and directories fsync'd");
        tablespace::move_into_place(&mut tablespaces)?;
        if options.target.exists() {
            std::fs::remove_dir(&options.target).map_err(io_err("replace empty directory", &options.target))?;
        }
        std::fs::rename(&staging, &options.target).map_err(io_err("move restored data into", &options.target))?;
        Ok::<_, Error>(written)
    }
    .await;
    let written = match result {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            tablespace::discard(&tablespaces);
            return Err(in_target(e, &staging, &options.target));
        }
    };
    if let Some(parent) = options.target.parent() {
        writer::sync_dir(parent)?;
    }
    if record.pg.is_some() {
        server_config::finish(destination)?;
    }
    Ok(RestoreReport {
        snapshot_id: record.id,
        target: options.target.clone(),
        files: written.files,
        bytes: written.bytes,
        packs_read: written.packs_read,
        packs_distinct: written.packs_distinct,
        wal_chain_end,
        recovery_target: if record.pg.is_some() { plan.recovery.to_string() } else { String::new() },
        target_time: match (&plan.recovery, &point) {
            (RecoveryTarget::Time(t), _) => Some(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            (_, Some(p)) => Some(p.time.clone()),
            _ => None,
        },
        restore_point: point,
        timeline: plan.timeline.map(|t| t.0),
        accepted_loss,
        kind: record.kind,
        tablespaces,
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

/// Verifies the archived WAL chain (`archived`: the segments of the backup's timeline) from
/// backup start to the target; returns its last segment, and with `--allow-gap` the WAL given up
/// at a gap after the consistency point.
fn check_wal(
    archived: &BTreeSet<u64>,
    snapshot_id: &str,
    pg: &snapshot::PgInfo,
    size: SegmentSize,
    recovery: &RecoveryTarget,
    allow_gap: bool,
) -> Result<(String, Option<AcceptedLoss>), Error> {
    let wal_err = |source, hint| Error::Wal { snapshot: snapshot_id.to_owned(), source: Box::new(source), hint };
    let first = pg.start_lsn.segment_no(size);
    let consistent = pg.stop_lsn.segment_no(size);
    let name = |number| WalFileName::Segment { timeline: pg.timeline, number }.to_name(size);
    archive::chain_end(archived, pg.timeline, first, Some(consistent), size).map_err(|e| {
        wal_err(e, "; the WAL needed to make this backup consistent is gone, restore an older snapshot")
    })?;
    let wanted = match recovery {
        RecoveryTarget::Immediate => Some(consistent),
        RecoveryTarget::Lsn(lsn) => Some(lsn.segment_no(size).max(consistent)),
        RecoveryTarget::Latest | RecoveryTarget::Time(_) | RecoveryTarget::Name(_) => None,
    };
    match archive::chain_end(archived, pg.timeline, first, wanted, size) {
        Ok(last) => Ok((name(last), None)),
        Err(archive::Error::Gap { .. }) if allow_gap => {
            let missing = (consistent..).find(|n| !archived.contains(n)).unwrap_or(consistent);
            let newest = archived.last().copied().unwrap_or(missing).max(missing);
            let loss = AcceptedLoss {
                first_missing: name(missing),
                from_lsn: Lsn(missing * size.bytes()),
                to_lsn: Lsn((newest + 1) * size.bytes()),
            };
            tracing::warn!(snapshot_id, first_missing = %loss.first_missing, from = %loss.from_lsn, to = %loss.to_lsn,
                "WAL gap accepted with --allow-gap: recovery stops before the gap and the WAL after it is lost");
            Ok((name(missing - 1), Some(loss)))
        }
        Err(e) => Err(wal_err(e, "; pass --allow-gap to accept recovery stopping at the gap")),
    }
}

/// A fresh, private directory beside the target, on the same file system for the final rename.
/// The error with paths inside the (removed) staging directory named by where they were going:
/// the operator asked for the target, and the staging directory no longer exists.
fn in_target(error: Error, staging: &Path, target: &Path) -> Error {
    match error {
        Error::Io { what, path, source } => {
            let path = path.strip_prefix(staging).map_or(path.clone(), |rel| target.join(rel));
            Error::Io { what, path, source }
        }
        Error::File { path, source } => Error::File { path, source: Box::new(in_target(*source, staging, target)) },
        other => other,
    }
}

fn staging_dir(target: &Path) -> Result<PathBuf, Error> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.radd-restore-");
    remove_stale_staging(parent, &prefix);
    let staging = parent.join(format!("{prefix}{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_err("remove stale", &staging))?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&staging).map_err(io_err("create", &staging))?;
    Ok(staging)
}

/// Removes staging directories `<prefix><pid>` left by restores that were killed: their process
/// is gone (or the pid now belongs to something that is not radd). Without this every killed
/// restore leaves a hidden copy of the data directory beside the target forever.
fn remove_stale_staging(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid == i32::try_from(std::process::id()).unwrap_or(0) || radd_is_running(pid) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), pid, "removed the staging directory of an interrupted restore")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %error, "cannot remove the staging directory of an interrupted restore")
            }
        }
    }
}

/// Whether `pid` is a live radd process (a reused pid running something else does not count).
fn radd_is_running(pid: i32) -> bool {
    let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    };
    alive
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or(true, |comm| comm.trim_end().starts_with("radd"))
}

use std::os::unix::fs::DirBuilderExt;
