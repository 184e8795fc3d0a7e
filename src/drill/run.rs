//! Running one drill: choose a snapshot, check the WAL chain, restore (every file verified),
//! start a scratch instance, run the checks, measure RPO/RTO, tear down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::definition::{RecoveryKind, parse_duration};
use super::{CheckResult, CheckStatus, DrillOptions, DrillReport, Error};
use crate::archive;
use crate::pg::{self, ScratchCluster, free_port};
use crate::repository::Repository;
use crate::restore::{self, RecoveryTarget, RestoreOptions};
use crate::snapshot::{self, SnapshotKind, SnapshotRecord};

/// Scratch directory and instance; dropping it stops the instance and removes the directory
/// (unless kept), whichever way the drill ends — including a timeout that drops the future.
struct Scratch {
    dir: PathBuf,
    cluster: Option<ScratchCluster>,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        drop(self.cluster.take());
        if !self.keep
            && let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %error, "could not remove drill scratch directory");
        }
    }
}

/// Shared between the drill future and the caller, so a timeout still reports what ran.
#[derive(Default)]
pub(super) struct Progress {
    checks: Vec<CheckResult>,
    pub(super) snapshot_id: Option<String>,
    rpo: Option<f64>,
    rto: Option<f64>,
}

pub(super) type Shared = Arc<Mutex<Progress>>;

pub(super) fn record(progress: &Shared, check: &str, status: CheckStatus, detail: impl Into<String>, since: Instant) {
    let detail = detail.into();
    tracing::info!(check, ?status, detail = %detail, "drill check");
    if let Ok(mut p) = progress.lock() {
        p.checks.push(CheckResult { check: check.to_owned(), status, detail, seconds: since.elapsed().as_secs_f64() });
    }
}

/// Runs a drill to completion or timeout. Failures are reported in the [`DrillReport`].
pub async fn run(repo: &Repository, options: &DrillOptions) -> Result<DrillReport, Error> {
    let def = &options.definition;
    let started = Utc::now();
    let clock = Instant::now();
    let parent = def.scratch.dir.clone().unwrap_or_else(|| options.scratch_dir.clone());
    let dir = parent.join(format!("{}-{}-{}", def.name, started.format("%Y%m%dT%H%M%S"), std::process::id()));
    prepare_dir(&parent, &dir)?;
    let mut scratch = Scratch { dir: dir.clone(), cluster: None, keep: options.keep };
    let progress: Shared = Arc::default();
    let outcome = match def.kind {
        super::DrillKind::Pg => {
            tokio::time::timeout(def.timeout(), steps(repo, options, &mut scratch, &progress, started, clock)).await
        }
        super::DrillKind::Fs => {
            tokio::time::timeout(def.timeout(), super::fs::steps(repo, options, &scratch.dir, &progress)).await
        }
    };
    if outcome.is_err() {
        record(
            &progress,
            "timeout",
            CheckStatus::Failed,
            format!("drill did not finish within {}", def.scratch.timeout),
            clock,
        );
    }
    drop(scratch);
    let p = std::mem::take(&mut *progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let passed = !p.checks.is_empty() && p.checks.iter().all(|c| c.status != CheckStatus::Failed);
    Ok(DrillReport {
        drill: def.name.clone(),
        snapshot_id: p.snapshot_id,
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        passed,
        checks: p.checks,
        rpo_seconds: p.rpo,
        rto_seconds: p.rto,
        duration_seconds: clock.elapsed().as_secs_f64(),
        kept_dir: options.keep.then_some(dir),
    })
}

fn prepare_dir(parent: &Path, dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Scratch { path, source }
    };
    std::fs::create_dir_all(parent).map_err(err(parent))?;
    std::fs::create_dir(dir).map_err(err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(err(dir))?;
    pg::hand_over(dir)
        .map_err(|e| Error::Scratch { path: dir.to_owned(), source: std::io::Error::other(e.to_string()) })
}

// Long on purpose: the drill steps in their fixed order (choose, chain, timelines, restore, start, checks), each recording its check and able to stop the drill; split, the order would be spread over many functions.
async fn steps(
    repo: &Repository,
    options: &DrillOptions,
    scratch: &mut Scratch,
    progress: &Shared,
    started: DateTime<Utc>,
    clock: Instant,
) {
    let def = &options.definition;
    let t = Instant::now();
    let record_snap = match choose_snapshot(repo, &def.snapshot, SnapshotKind::Pg).await {
        Ok(s) => s,
        Err(e) => return record(progress, "snapshot", CheckStatus::Failed, e.to_string(), t),
    };
    let Some(pg_info) = record_snap.pg.clone() else {
        return record(
            progress,
            "snapshot",
            CheckStatus::Failed,
            format!("snapshot {} is not a PostgreSQL backup", record_snap.id),
            t,
        );
    };
    if let Ok(mut p) = progress.lock() {
        p.snapshot_id = Some(record_snap.id.clone());
    }
    let recovery = match recovery_target(def, &record_snap) {
        Ok(r) => r,
        Err(e) => return record(progress, "snapshot", CheckStatus::Failed, e, t),
    };

    let t = Instant::now();
    let size =
        match archive::segment_size_for_snapshot(repo, pg_info.segment_size, &format!("snapshot {}", record_snap.id))
            .await
        {
            Ok(size) => size,
            Err(e) => return record(progress, "wal_chain", CheckStatus::Failed, e.to_string(), t),
        };
    let last = match &recovery {
        RecoveryTarget::Immediate => Some(pg_info.stop_lsn.segment_no(size)),
        _ => None,
    };
    let chain = archive::check_chain(repo, pg_info.timeline, pg_info.start_lsn.segment_no(size), last, size).await;
    let chain_ok = chain.is_ok();
    if def.checks.wal_chain {
        match chain {
            Ok(end) => record(
                progress,
                "wal_chain",
                CheckStatus::Passed,
                format!(
                    "segments {} … {} archived, no gap",
                    pg::WalFileName::segment_for(pg_info.timeline, pg_info.start_lsn, size).to_name(size),
                    pg::WalFileName::Segment { timeline: pg_info.timeline, number: end }.to_name(size)
                ),
                t,
            ),
            Err(e) => record(progress, "wal_chain", CheckStatus::Failed, e.to_string(), t),
        }
    }

    let t = Instant::now();
    // A diverged timeline fails the drill; the restore then stays on the backup's timeline so the
    // remaining checks still say whether that one restores.
    let timeline = if def.checks.timeline { check_timelines(repo, &pg_info, size, progress, t).await } else { None };

    let t = Instant::now();
    let data = scratch.dir.join("data");
    let restored = restore::run(
        repo,
        &RestoreOptions {
            snapshot: record_snap.id.clone(),
            target: data.clone(),
            recovery,
            allow_gap: !chain_ok,
            timeline,
            restore_command: options.restore_command.clone(),
            disable_archiving: true,
            include: Vec::new(),
            // Never the production locations: every tablespace goes into the scratch directory
            // (removed with it).
            tablespaces: restore::TablespaceMapping { map: Vec::new(), all: Some(scratch.dir.join("tablespaces")) },
            config_dir: None,
            progress: crate::progress::Progress::none(),
        },
    )
    .await;
    let (files, packs) = match restored {
        Ok(r) => (r.files, format!("{} packs read for {} distinct", r.packs_read, r.packs_distinct)),
        Err(e) => {
            let check = if def.checks.checksums { "checksums" } else { "restore" };
            return record(progress, check, CheckStatus::Failed, e.to_string(), t);
        }
    };
    let restore_took = t;

    let t = Instant::now();
    let port = match pick_port(def.scratch.port_range) {
        Ok(p) => p,
        Err(e) => return record(progress, "starts", CheckStatus::Failed, e, t),
    };
    let run_dir = scratch.dir.join("run");
    if let Err(e) = std::fs::create_dir(&run_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| pg::hand_over(&run_dir).map_err(|e| e.to_string()))
    {
        return record(progress, "starts", CheckStatus::Failed, e, t);
    }
    let settings = match pg::instance::own_config(
        &run_dir,
        &data,
        "radd drill scratch instance",
        pg::instance::Access::SocketOnly,
    ) {
        Ok(s) => s,
        Err(e) => {
            return record(
                progress,
                "starts",
                CheckStatus::Failed,
                format!("cannot write the scratch instance's configuration into {}: {e}", run_dir.display()),
                t,
            );
        }
    };
    let cluster = match ScratchCluster::new(&options.bin_dir, &run_dir) {
        Ok(c) => c.with_data_dir(&data).with_port(port).socket_only(),
        Err(e) => return record(progress, "starts", CheckStatus::Failed, e.to_string(), t),
    };
    let cluster = scratch.cluster.insert(cluster);
    if def.checks.pg_verifybackup {
        let t = Instant::now();
        match cluster.verify_backup() {
            Ok(()) => record(
                progress,
                "pg_verifybackup",
                CheckStatus::Passed,
                format!(
                    "PostgreSQL's pg_verifybackup confirms {files} files against the backup-time checksums in backup_manifest"
                ),
                t,
            ),
            Err(e) => record(progress, "pg_verifybackup", CheckStatus::Failed, e.to_string(), t),
        }
    }
    let remaining = def.timeout().saturating_sub(clock.elapsed());
    let start = cluster.start(&settings, &[]);
    let promoted = match start {
        Ok(()) => cluster.wait_promoted(remaining).await,
        Err(e) => Err(e),
    };
    if let Err(e) = promoted {
        if def.checks.checksums {
            record(
                progress,
                "checksums",
                CheckStatus::Failed,
                format!(
                    "{files} files verified, but WAL replay did not complete (a WAL segment may be missing or damaged): see below"
                ),
                restore_took,
            );
        }
        return record(progress, "starts", CheckStatus::Failed, e.to_string(), t);
    }
    let rto = clock.elapsed().as_secs_f64();
    if let Ok(mut p) = progress.lock() {
        p.rto = Some(rto);
    }
    if def.checks.checksums {
        record(
            progress,
            "checksums",
            CheckStatus::Passed,
            format!(
                "{files} files match their manifest SHA-256 ({packs}); every replayed WAL segment decrypted and matched its digest"
            ),
            restore_took,
        );
    }
    if def.checks.starts {
        record(
            progress,
            "starts",
            CheckStatus::Passed,
            format!(
                "consistent and promoted (socket {}, port {port}); queryable {rto:.1}s after drill start (RTO)",
                cluster.host()
            ),
            t,
        );
    }
    crate::faults::pause_point("drill:started").await;
    super::run_checks::after_start(options, cluster, progress_sink(progress), started, &record_snap).await;
}

/// Records the `timeline` check; returns the timeline to restore along when it failed.
async fn check_timelines(
    repo: &Repository,
    pg_info: &snapshot::PgInfo,
    size: pg::SegmentSize,
    progress: &Shared,
    t: Instant,
) -> Option<pg::Timeline> {
    match archive::Timelines::load(repo, size).await {
        Ok(timelines) => {
            let diverged = timelines.divergences();
            if diverged.is_empty() {
                let newest = timelines.newest_from(pg_info.timeline);
                record(
                    progress,
                    "timeline",
                    CheckStatus::Passed,
                    format!("no diverged timeline; recovery follows timeline {}", newest.0),
                    t,
                );
                return None;
            }
            let detail = diverged.iter().map(archive::Divergence::describe).collect::<Vec<_>>().join("; ");
            record(
                progress,
                "timeline",
                CheckStatus::Failed,
                format!("{detail}; the drill restores along timeline {}", pg_info.timeline.0),
                t,
            );
        }
        Err(e) => {
            record(progress, "timeline", CheckStatus::Failed, format!("cannot read the archive's timelines: {e}"), t)
        }
    }
    Some(pg_info.timeline)
}

fn progress_sink(progress: &Shared) -> impl Fn(&str, CheckStatus, String, Instant, Option<f64>) + '_ {
    move |check, status, detail, since, rpo| {
        if let Some(rpo) = rpo
            && let Ok(mut p) = progress.lock()
        {
            p.rpo = Some(rpo);
        }
        record(progress, check, status, detail, since);
    }
}

/// Picks the drill's snapshot among those of `kind`: latest, random, or by id.
pub async fn choose_snapshot(
    repo: &Repository,
    wanted: &str,
    kind: SnapshotKind,
) -> Result<SnapshotRecord, snapshot::Error> {
    if wanted != "random" {
        return snapshot::resolve_kind(repo, wanted, Some(kind)).await;
    }
    let all: Vec<SnapshotRecord> = snapshot::list(repo).await?.into_iter().filter(|s| s.kind == kind).collect();
    if all.is_empty() {
        return Err(snapshot::Error::Empty);
    }
    let mut byte = [0u8; 8];
    rand::fill(&mut byte);
    let index = usize::try_from(u64::from_le_bytes(byte) % all.len() as u64).unwrap_or(0);
    Ok(all[index].clone())
}

fn recovery_target(def: &super::DrillDefinition, snap: &SnapshotRecord) -> Result<RecoveryTarget, String> {
    Ok(match def.target.recovery {
        RecoveryKind::Latest => RecoveryTarget::Latest,
        RecoveryKind::Immediate => RecoveryTarget::Immediate,
        RecoveryKind::RestorePoint => RecoveryTarget::Name(def.target.restore_point.clone().unwrap_or_default()),
        RecoveryKind::Offset => {
            let offset = parse_duration("target.offset", def.target.offset.as_deref().unwrap_or("0s"))
                .map_err(|e| e.to_string())?;
            let end = DateTime::parse_from_rfc3339(&snap.finished).map_err(|e| format!("snapshot end time: {e}"))?;
            let at = end.with_timezone(&Utc) + chrono::Duration::from_std(offset).map_err(|e| e.to_string())?;
            RecoveryTarget::Time(at)
        }
    })
}

fn pick_port(range: Option<[u16; 2]>) -> Result<u16, String> {
    let Some([lo, hi]) = range else {
        return free_port().map_err(|e| e.to_string());
    };
    let mut seed = [0u8; 2];
    rand::fill(&mut seed);
    let span = u32::from(hi - lo) + 1;
    let offset = u32::from(u16::from_le_bytes(seed)) % span;
    (0..span)
        .map(|i| lo + u16::try_from((offset + i) % span).unwrap_or(0))
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or_else(|| format!("no free port in {lo}-{hi}"))
}
