//! The daemon's scheduled jobs: built from the configuration as one list, run by one loop each.
//!
//! A reload (SIGHUP) builds a new list and starts new loops; the old loops stop scheduling but
//! a run already going finishes. A per-task lock keeps a new loop's run from overlapping the
//! old loop's run of the same task.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::watch;
use tracing::Instrument;

use super::{Error, State};
use crate::config::{Config, FsJobConfig};
use crate::{drill, jobs};

/// One job the daemon runs on a schedule.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    /// The task name in logs and metrics (`backup.pg`, `backup.fs.<job>`, `retention`,
    /// `verify`, `drill.<name>`).
    pub task: String,
    /// When it runs.
    pub schedule: cron::Schedule,
    /// What it runs.
    pub work: Work,
}

/// What a scheduled job does.
#[derive(Debug, Clone)]
pub enum Work {
    /// A base backup of the source.
    BackupPg,
    /// Forget by the retention policies, then prune with this grace.
    Retention {
        /// Grace of the prune.
        grace: chrono::Duration,
    },
    /// The daily incremental verification.
    Verify {
        /// Every object is read in full at least once per this many days.
        period_days: u64,
    },
    /// A file-tree backup job.
    Fs(Box<FsJobConfig>),
    /// A restore drill.
    Drill(Box<drill::DrillDefinition>),
}

/// The jobs `config` schedules, each declared to the metrics by the caller. A schedule that
/// does not parse is an error naming its key.
pub fn jobs(config: &Config) -> Result<Vec<ScheduledJob>, crate::Error> {
    let cron = |key: &str, value: &str| {
        crate::config::parse_cron(value).map_err(|e| crate::Error::Daemon(Error::Schedule(format!("{key}: {e}"))))
    };
    let d = &config.daemon;
    let mut list = Vec::new();
    if let Some(c) = &d.backup_schedule {
        list.push(ScheduledJob { task: "backup.pg".into(), schedule: c.schedule.clone(), work: Work::BackupPg });
    }
    if let Some(c) = &d.retention_schedule {
        let grace = chrono::Duration::from_std(d.prune_grace.0)
            .map_err(|e| crate::Error::Daemon(Error::Schedule(format!("daemon.prune_grace {}: {e}", d.prune_grace))))?;
        list.push(ScheduledJob {
            task: "retention".into(),
            schedule: c.schedule.clone(),
            work: Work::Retention { grace },
        });
    }
    if let Some(c) = &d.verify_schedule {
        let period_days = d.verify_period.0.as_secs() / 86_400;
        list.push(ScheduledJob {
            task: "verify".into(),
            schedule: c.schedule.clone(),
            work: Work::Verify { period_days },
        });
    }
    for job in &config.fs {
        let Some(schedule) = &job.schedule else { continue };
        list.push(ScheduledJob {
            task: format!("backup.fs.{}", job.name),
            schedule: cron(&format!("fs job {}: schedule", job.name), schedule)?,
            work: Work::Fs(Box::new(job.clone())),
        });
    }
    let drills: Vec<(PathBuf, drill::DrillDefinition)> = if config.drills.dir.is_dir() {
        drill::list(&config.drills.dir)?
    } else {
        tracing::warn!(dir = %config.drills.dir.display(), "drills directory does not exist: no drills scheduled");
        Vec::new()
    };
    for (path, definition) in drills {
        if definition.kind == drill::DrillKind::Fs && config.fs.is_empty() {
            tracing::info!(drill = %definition.name, file = %path.display(), "file-tree drill not scheduled: no [[fs]] job is configured, so there is nothing for it to restore");
            continue;
        }
        list.push(ScheduledJob {
            task: format!("drill.{}", definition.name),
            schedule: cron(&format!("{}: schedule", path.display()), &definition.schedule)?,
            work: Work::Drill(Box::new(definition)),
        });
    }
    Ok(list)
}

/// Declares each job to the metrics, so a task that never ran is visible from start-up.
pub fn declare(state: &State, list: &[ScheduledJob]) {
    state.metrics.tasks_unconfigured();
    for job in list {
        match &job.work {
            // Its runs are recorded as retention.prune (forget records only when it forgot something).
            Work::Retention { .. } => state.metrics.task_configured("retention.prune"),
            Work::Drill(definition) => state.metrics.drill_configured(definition),
            _ => state.metrics.task_configured(&job.task),
        }
    }
}

/// One lock per task name, shared across reloads: a task never runs twice at once.
#[derive(Debug, Clone, Default)]
pub struct TaskLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl TaskLocks {
    fn get(&self, task: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(task.to_owned()).or_default().clone()
    }
}

/// Runs `job` at every occurrence of its schedule until `stop` (this generation of loops ends:
/// reload or shutdown). A run that has started finishes; `shutdown` cancels a file-tree read.
/// Occurrences missed while a run was still going are skipped with a warning.
pub async fn cron_loop(
    state: State,
    job: ScheduledJob,
    locks: TaskLocks,
    mut stop: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    let name = &job.task;
    loop {
        let Some(next) = job.schedule.upcoming(Utc).next() else {
            tracing::warn!(task = %name, "schedule has no future occurrence");
            return;
        };
        tracing::info!(task = %name, next = %next.to_rfc3339(), "next run scheduled");
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let lock = locks.get(name);
        let _running = lock.lock().await;
        if *stop.borrow() {
            return;
        }
        // One line per run: task, outcome, duration, what it did or why it failed.
        let started = std::time::Instant::now();
        let outcome =
            run(&state, &job.work, shutdown.clone()).instrument(tracing::info_span!("task", task = %name)).await;
        let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        match outcome {
            Ok(detail) => tracing::info!(task = %name, outcome = "ok", seconds, detail = %detail, "task finished"),
            Err(detail) => {
                tracing::error!(task = %name, outcome = "failed", seconds, detail = %detail, "task finished")
            }
        }
        if let Some(missed) = job.schedule.after(&next).next().filter(|t| *t < Utc::now()) {
            tracing::warn!(task = %name, missed = %missed.to_rfc3339(), "run overlapped the next occurrence; it is skipped");
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One run of `work`: what it did, or why it failed (its event is recorded by `jobs`).
async fn run(st: &State, work: &Work, mut shutdown: watch::Receiver<bool>) -> Result<String, String> {
    match work {
        Work::BackupPg => jobs::backup_pg(&st.config, &st.events, false)
            .await
            .map(|r| format!("snapshot {}: {} bytes new of {}", r.snapshot_id, r.new_bytes, r.total_bytes))
            .map_err(|e| e.to_string()),
        Work::Retention { grace } => jobs::retention(&st.config, &st.events, *grace)
            .await
            .map(|r| {
                format!(
                    "{} bytes reclaimed ({} packs, {} WAL files)",
                    r.bytes_reclaimed, r.packs_deleted, r.wal_deleted
                )
            })
            .map_err(|e| e.to_string()),
        Work::Verify { period_days } => {
            let scope = jobs::VerifyScope::Due { period_days: *period_days };
            match jobs::verify(&st.config, &st.events, scope, Utc::now()).await {
                Ok(report) if report.ok => {
                    Ok(format!("{} objects, {} bytes read", report.objects_checked, report.bytes_read))
                }
                Ok(report) => Err(format!("{} problem(s) found", report.problems.len())),
                Err(error) => Err(format!("could not run: {error}")),
            }
        }
        Work::Fs(job) => {
            let options = jobs::fs_job_options(&st.config, job);
            // SIGTERM cancels the read; the post-hook still runs and nothing is committed.
            let cancel = async move {
                let _ = shutdown.wait_for(|s| *s).await;
            };
            jobs::backup_fs(&st.config, &st.events, &job.name, options, cancel)
                .await
                .map(|r| format!("snapshot {}: {} files, {} bytes", r.snapshot_id, r.files, r.total_bytes))
                .map_err(|e| e.to_string())
        }
        Work::Drill(definition) => {
            match jobs::run_drill(&st.config, &st.events, (**definition).clone(), false, st.restore_command.clone())
                .await
            {
                Ok(report) if report.passed => {
                    Ok(format!("passed; RPO {:?}s RTO {:?}s", report.rpo_seconds, report.rto_seconds))
                }
                Ok(report) => Err(format!("failed checks: {}", report.failed_checks().join(", "))),
                Err(error) => Err(format!("could not run: {error}")),
            }
        }
    }
}
