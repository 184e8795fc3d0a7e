//! Jobs: one domain operation plus the production event that reports it. Shared by the CLI
//! (ad-hoc runs) and the daemon (scheduled runs), so both report the same way. Metrics are
//! derived from the event log, so recording the event is all a job has to do.

use std::path::Path;

use serde_json::json;

use crate::config::Config;
use crate::drill::{self, DrillDefinition, DrillOptions, DrillReport};
use crate::events::{Event, EventLog, Occurrence};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{self, BackupOptions, BackupReport, FsBackupOptions, FsBackupReport};

/// Opens the configured event log.
pub fn event_log(config: &Config) -> Result<EventLog, crate::Error> {
    Ok(EventLog::open(&config.events.dir)?)
}

/// Appends an event; a failure to record is an error of its own (never silently dropped).
pub fn record(log: &EventLog, event: &Event) -> Result<(), crate::Error> {
    log.append(event)?;
    tracing::info!(event_id = %event.id, kind = %event.kind.as_str(), source = %event.source, title = %event.title, "event recorded");
    Ok(())
}

/// Takes a base backup and records a `change` (or an S2 `incident` on failure).
pub async fn backup_pg(config: &Config, log: &EventLog, full_read: bool) -> Result<BackupReport, crate::Error> {
    backup_pg_with_progress(config, log, full_read, Progress::none()).await
}

/// [`backup_pg`] reporting the bytes read to `progress` (the CLI's bar on a terminal).
pub async fn backup_pg_with_progress(
    config: &Config,
    log: &EventLog,
    full_read: bool,
    progress: Progress,
) -> Result<BackupReport, crate::Error> {
    let result = async {
        let repo = Repository::open(config, false).await?;
        let options =
            BackupOptions { postgres: config.postgres.clone(), backup: config.backup.clone(), full_read, progress };
        Ok::<_, crate::Error>(snapshot::backup_pg(&repo, &options).await?)
    }
    .await;
    let event = match &result {
        Ok(report) => Event::from_occurrence(
            Occurrence::BackupSucceeded,
            "backup.pg",
            format!("base backup {} taken", report.snapshot_id),
        )
        .label("snapshot", &report.snapshot_id)
        .details(serde_json::to_value(report).unwrap_or_default()),
        Err(error) => {
            Event::from_occurrence(Occurrence::BackupFailed, "backup.pg", format!("base backup failed: {error}"))
                .label("error_type", error.kind().label())
                .details(json!({ "error": error.to_string() }))
        }
    };
    record(log, &event)?;
    result
}

/// Takes a file-tree snapshot and records a `change` (S3 `incident` when partial, S2 when
/// it failed or a hook failed).
pub async fn backup_fs(
    config: &Config,
    log: &EventLog,
    name: &str,
    options: FsBackupOptions,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<FsBackupReport, crate::Error> {
    let source = format!("backup.fs.{name}");
    let result = async {
        let repo = Repository::open(config, false).await?;
        Ok::<_, crate::Error>(snapshot::backup_fs(&repo, &options, cancel).await?)
    }
    .await;
    let event = match &result {
        Ok(report) if report.hooks.iter().any(|h| h.exit_code != Some(0)) => Event::from_occurrence(
            Occurrence::BackupFailed,
            &source,
            format!("snapshot {} taken but its post-hook failed", report.snapshot_id),
        )
        .details(serde_json::to_value(report).unwrap_or_default()),
        Ok(report) if report.partial => Event::from_occurrence(
            Occurrence::SnapshotPartial,
            &source,
            format!("snapshot {} is partial: {} path(s) unreadable", report.snapshot_id, report.unreadable.len()),
        )
        .details(serde_json::to_value(report).unwrap_or_default()),
        Ok(report) => Event::from_occurrence(
            Occurrence::BackupSucceeded,
            &source,
            format!("file-tree snapshot {} taken", report.snapshot_id),
        )
        .label("snapshot", &report.snapshot_id)
        .details(serde_json::to_value(report).unwrap_or_default()),
        Err(error) => {
            Event::from_occurrence(Occurrence::BackupFailed, &source, format!("file-tree snapshot failed: {error}"))
                .label("error_type", error.kind().label())
                .details(json!({ "error": error.to_string() }))
        }
    };
    record(log, &event)?;
    result
}

/// The snapshot options of a configured `[[fs]]` job.
#[must_use]
pub fn fs_job_options(config: &Config, job: &crate::config::FsJobConfig) -> FsBackupOptions {
    FsBackupOptions {
        tree: crate::snapshot::TreeOptions {
            roots: job.paths.clone(),
            excludes: job.exclude.clone(),
            one_file_system: job.one_file_system,
        },
        tags: job.tags.clone(),
        backup: config.backup.clone(),
        full_read: false,
        pre: job.pre.clone(),
        post: job.post.clone(),
        progress: Progress::none(),
    }
}

/// Runs a drill and records a `change` when every check passed, otherwise an S2 `incident`
/// naming the failed checks (S1 when data integrity itself failed).
pub async fn run_drill(
    config: &Config,
    log: &EventLog,
    definition: DrillDefinition,
    keep: bool,
    restore_command: String,
) -> Result<DrillReport, crate::Error> {
    let name = definition.name.clone();
    let source = format!("drill.{name}");
    let result = async {
        let repo = Repository::open(config, true).await?;
        let options = DrillOptions {
            definition,
            restore_command,
            scratch_dir: config.drills.scratch_dir.clone(),
            bin_dir: config.postgres.bin_dir.clone(),
            source: Some(config.postgres.clone()),
            keep,
        };
        Ok::<_, crate::Error>(drill::run(&repo, &options).await?)
    }
    .await;
    let event = match &result {
        Ok(report) if report.passed => {
            Event::from_occurrence(Occurrence::DrillPassed, &source, format!("drill {name} passed"))
                .label("drill", &name)
                .details(serde_json::to_value(report).unwrap_or_default())
        }
        Ok(report) => {
            let failed = report.failed_checks();
            let integrity = failed.iter().any(|c| matches!(*c, "checksums" | "wal_chain" | "page_integrity"));
            let occurrence = if integrity { Occurrence::CorruptionFound } else { Occurrence::DrillFailed };
            Event::from_occurrence(occurrence, &source, format!("drill {name} failed: {}", failed.join(", ")))
                .label("drill", &name)
                .details(serde_json::to_value(report).unwrap_or_default())
        }
        Err(error) => {
            Event::from_occurrence(Occurrence::DrillFailed, &source, format!("drill {name} could not run: {error}"))
                .label("drill", &name)
                .details(json!({ "error": error.to_string(), "passed": false }))
        }
    };
    record(log, &event)?;
    result
}

/// The `[[fs]]` jobs' own retention policies (by their absolute root paths).
#[must_use]
pub fn job_policies(config: &Config) -> crate::retention::JobPolicies {
    config
        .fs
        .iter()
        .filter_map(|job| {
            let paths = job
                .paths
                .iter()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string())
                .collect();
            job.retention.clone().map(|policy| (paths, policy))
        })
        .collect()
}

/// Scheduled retention: forget by the configured policies, then prune (grace `grace`), each
/// recorded as an event (the prune's reclaimed bytes feed a metric).
pub async fn retention(
    config: &Config,
    log: &EventLog,
    grace: chrono::Duration,
) -> Result<crate::retention::PruneReport, crate::Error> {
    let result = retention_steps(config, log, grace).await;
    if let Err(error) = &result {
        let event = Event::from_occurrence(
            Occurrence::MaintenanceFailed,
            "retention.prune",
            format!("scheduled retention failed: {error}"),
        )
        .label("error_type", error.kind().label())
        .details(json!({ "error": error.to_string() }));
        record(log, &event)?;
    }
    result
}

async fn retention_steps(
    config: &Config,
    log: &EventLog,
    grace: chrono::Duration,
) -> Result<crate::retention::PruneReport, crate::Error> {
    let repo = Repository::open(config, true).await?;
    let now = chrono::Utc::now();
    let forgotten = crate::retention::forget(&repo, &config.retention, &job_policies(config), now, false).await?;
    if forgotten.forgotten > 0 {
        let event = Event::from_occurrence(
            Occurrence::MaintenanceSucceeded,
            "retention.forget",
            format!("{} snapshot(s) forgotten by the retention policy", forgotten.forgotten),
        )
        .details(serde_json::to_value(&forgotten).unwrap_or_default());
        record(log, &event)?;
    }
    let lock_wait = config.daemon.prune_lock_wait.0;
    let pruned =
        crate::retention::prune(&repo, crate::retention::PruneOptions { now, grace, dry_run: false, lock_wait })
            .await?;
    let event = Event::from_occurrence(
        Occurrence::MaintenanceSucceeded,
        "retention.prune",
        format!(
            "prune reclaimed {} bytes ({} packs, {} WAL files)",
            pruned.bytes_reclaimed, pruned.packs_deleted, pruned.wal_deleted
        ),
    )
    .details(serde_json::to_value(&pruned).unwrap_or_default());
    record(log, &event)?;
    Ok(pruned)
}

/// Which data objects a verify run reads.
#[derive(Debug, Clone)]
pub enum VerifyScope {
    /// Structure only.
    Structure,
    /// Every pack and WAL object.
    All,
    /// The n-th of m slices.
    Slice(u64, u64),
    /// Today's share of a schedule that reads everything once per `period_days`.
    Due {
        /// The period.
        period_days: u64,
    },
}

/// Runs a verify at `now`, keeps the record of what was read when (so daily runs spread the
/// reading over the period), and records the event the verification metrics come from.
pub async fn verify(
    config: &Config,
    log: &EventLog,
    scope: VerifyScope,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::verify::VerifyReport, crate::Error> {
    verify_with_progress(config, log, scope, now, Progress::none()).await
}

/// [`verify`] reporting the bytes of data objects read to `progress` (the CLI's bar).
pub async fn verify_with_progress(
    config: &Config,
    log: &EventLog,
    scope: VerifyScope,
    now: chrono::DateTime<chrono::Utc>,
    progress: Progress,
) -> Result<crate::verify::VerifyReport, crate::Error> {
    let result = verify_steps(config, log, scope, now, progress).await;
    if let Err(error) = &result {
        // Could not run to its end: what it did not read is unproven (an integrity error is
        // corruption found, S1).
        let occurrence = if error.kind() == crate::ErrorKind::Integrity {
            Occurrence::CorruptionFound
        } else {
            Occurrence::VerifyFailed
        };
        let event = Event::from_occurrence(occurrence, "verify", format!("verify could not run: {error}"))
            .label("error_type", error.kind().label())
            .details(json!({ "error": error.to_string() }));
        record(log, &event)?;
    }
    result
}

async fn verify_steps(
    config: &Config,
    log: &EventLog,
    scope: VerifyScope,
    now: chrono::DateTime<chrono::Utc>,
    progress: Progress,
) -> Result<crate::verify::VerifyReport, crate::Error> {
    use crate::verify::{Subset, VerifiedRecord, VerifyOptions};
    let repo = Repository::open(config, true).await?;
    let record_path = VerifiedRecord::path(&config.backup.state_dir, &repo.meta.id);
    let mut record = VerifiedRecord::load(&record_path);
    let (read_data, subset) = match scope {
        VerifyScope::Structure => (false, None),
        VerifyScope::All => (true, None),
        VerifyScope::Slice(n, m) => (true, Some(Subset { slice: Some((n, m)), ..Subset::default() })),
        VerifyScope::Due { period_days } => (true, Some(record.due(now, period_days))),
    };
    let report = crate::verify::run(&repo, &VerifyOptions { read_data, subset, progress }).await?;
    if read_data && report.problems.is_empty() {
        record.mark(&report.data_objects_read, now);
        if let Err(error) = record.save(&record_path) {
            tracing::warn!(path = %record_path.display(), error = %error, "cannot save the verification record");
        }
    }
    self::record(log, &verify_event(&report, record.oldest_age_seconds(now)))?;
    Ok(report)
}

/// The event for a verify run: a `change` when nothing was wrong, an S1 incident otherwise,
/// with the counts the verification metrics come from.
#[must_use]
pub fn verify_event(report: &crate::verify::VerifyReport, oldest_verified_age_seconds: Option<i64>) -> Event {
    let details = json!({
        "objects_checked": report.objects_checked,
        "bytes_read": report.bytes_read,
        "corruptions": report.problems.len(),
        "oldest_verified_age_seconds": oldest_verified_age_seconds,
        "duration_seconds": report.duration_seconds,
        "problems": report.problems,
    });
    if report.problems.is_empty() {
        Event::from_occurrence(
            Occurrence::VerifySucceeded,
            "verify",
            format!("verify ok: {} objects, {} bytes read", report.objects_checked, report.bytes_read),
        )
        .details(details)
    } else {
        Event::from_occurrence(
            Occurrence::CorruptionFound,
            "verify",
            format!("verify found {} problem(s), first: {}", report.problems.len(), report.problems[0]),
        )
        .details(details)
    }
}

/// The restore_command for this binary and configuration (`'…/radd' --config '…' wal-fetch %f %p`).
pub fn restore_command(config_path: &Path) -> Result<String, std::io::Error> {
    let exe = std::env::current_exe()?;
    Ok(format!("{} --config {} wal-fetch %f %p", sh_quote(&exe), sh_quote(config_path)))
}

/// Quotes a path for `sh`, which PostgreSQL runs archive and restore commands with.
#[must_use]
pub fn sh_quote(value: &Path) -> String {
    format!("'{}'", value.display().to_string().replace('\'', r"'\''"))
}

/// Creates a scratch instance (`radd restore --scratch`) and records a `change` event: who (the
/// OS user), what (snapshot and target), the RTO and the expiry. A failure is an incident only
/// when the repository is at fault, by the rule of `radd restore`: a bad target, port or limit
/// is the operator's to fix (exit code), not an incident.
pub async fn scratch_restore(
    config: &Config,
    log: &EventLog,
    repo: &Repository,
    options: &crate::scratch::CreateOptions,
) -> Result<crate::scratch::Instance, crate::Error> {
    let host = crate::scratch::Host::from_config(config);
    let result = crate::scratch::create(repo, &host, options).await;
    let event = match &result {
        Ok(i) => Some(
            Event::from_occurrence(
                Occurrence::ScratchStarted,
                "scratch",
                format!(
                    "scratch instance {} started by {}: snapshot {} at {}, port {}, expires {}",
                    i.id, i.owner, i.snapshot_id, i.target, i.port, i.expires
                ),
            )
            .label("scratch_id", i.id.clone())
            .label("owner", i.owner.clone())
            .details(serde_json::to_value(i).unwrap_or_default()),
        ),
        Err(e) if e.is_usage() => None,
        Err(e) => {
            let occurrence = if e.kind() == crate::ErrorKind::Integrity {
                Occurrence::CorruptionFound
            } else {
                Occurrence::RestoreFailed
            };
            Some(
                Event::from_occurrence(
                    occurrence,
                    "scratch",
                    format!("scratch restore of {} ({}) failed: {e}", options.snapshot, options.recovery),
                )
                .label("error_type", e.kind().label()),
            )
        }
    };
    if let Some(event) = event {
        record(log, &event)?;
    }
    Ok(result?)
}

/// Stops and removes the selected scratch instances, recording a `change` event per teardown
/// (manual, TTL, or an abandoned creation). Returns the stopped instances and the failures of
/// those that could not be stopped (the others are stopped all the same).
pub fn scratch_stop(
    config: &Config,
    log: &EventLog,
    selection: &crate::scratch::Selection,
) -> Result<(Vec<crate::scratch::StopReport>, Vec<crate::scratch::Error>), crate::Error> {
    let host = crate::scratch::Host::from_config(config);
    let (reports, errors) = crate::scratch::stop(&host, selection, chrono::Utc::now());
    for r in &reports {
        let why = match r.reason {
            crate::scratch::Reason::Manual => "stopped",
            crate::scratch::Reason::Expired => "expired (TTL) and stopped",
            crate::scratch::Reason::Abandoned => "abandoned during creation and removed",
        };
        let event = Event::from_occurrence(
            Occurrence::ScratchStopped,
            "scratch",
            format!("scratch instance {} {why}: snapshot {} at {}, created by {} at {}", r.instance.id, r.instance.snapshot_id, r.instance.target, r.instance.owner, r.instance.created),
        )
        .label("scratch_id", r.instance.id.clone())
        .details(json!({ "reason": r.reason, "was_running": r.was_running, "killed": r.killed, "by": crate::scratch::instance::os_user(), "instance": r.instance }));
        record(log, &event)?;
    }
    Ok((reports, errors))
}
