//! `radd daemon`: runs the schedules (base backup, drills), writes the heartbeat, watches
//! archive lag, delivers events to sinks, and serves `/metrics` and `/healthz`.
//!
//! Wires modules together; holds no domain logic. SIGTERM/SIGINT become one shutdown signal:
//! scheduling stops, running jobs get `daemon.shutdown_grace` to finish, then are cancelled —
//! dropping a job tears down its scratch instance and aborts an unfinished backup, whose
//! snapshot is then simply never committed.

mod http;
mod scratch_reaper;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch as signal_watch;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use http::app;

use crate::config::Config;
use crate::events::EventLog;
use crate::metrics::Metrics;
use crate::{drill, jobs};

/// Shared state of the running daemon.
#[derive(Clone)]
pub struct State {
    /// Configuration, loaded once at start.
    pub config: Arc<Config>,
    /// The production event log.
    pub events: Arc<EventLog>,
    /// Every metric.
    pub metrics: Metrics,
    /// restore_command written into scratch instances.
    pub restore_command: String,
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {address}: {source}; set daemon.listen to a free address")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A schedule or duration is invalid.
    #[error("{0}")]
    Schedule(String),
}

fn duration(value: &str) -> Option<Duration> {
    if value.is_empty() {
        return None;
    }
    humantime::parse_duration(value).ok().filter(|d| !d.is_zero())
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config, restore_command: String) -> Result<(), crate::Error> {
    let events = Arc::new(jobs::event_log(&config)?);
    let state = State { config: Arc::new(config), events, metrics: Metrics::new(), restore_command };
    let (stop_tx, stop_rx) = signal_watch::channel(false);

    let listener = tokio::net::TcpListener::bind(&state.config.daemon.listen)
        .await
        .map_err(|source| crate::Error::Daemon(Error::Listen { address: state.config.daemon.listen.clone(), source }))?;
    tracing::info!(address = %state.config.daemon.listen, "serving /metrics and /healthz");
    let server = {
        let mut stop = stop_rx.clone();
        let app = app(state.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %error, "HTTP server failed");
            }
        })
    };

    let mut tasks = JoinSet::new();
    schedule_jobs(&state, &stop_rx, &mut tasks)?;
    if let Some(every) = duration(&state.config.daemon.heartbeat_interval) {
        tasks.spawn(watch::heartbeat_loop(state.clone(), every, stop_rx.clone()));
    }
    let every = duration(&state.config.daemon.watch_interval).unwrap_or(Duration::from_secs(15));
    tasks.spawn(watch::watch_loop(state.clone(), every, stop_rx.clone()));
    tasks.spawn(scratch_reaper::reap_loop(state.clone(), every, stop_rx.clone()));

    wait_for_signal().await;
    tracing::info!("shutdown requested: no new jobs; waiting for running ones");
    let _ = stop_tx.send(true);
    let grace = duration(&state.config.daemon.shutdown_grace).unwrap_or(Duration::from_secs(60));
    let finished = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(?grace, "jobs still running after the grace period: cancelling them");
        tasks.shutdown().await;
    }
    let _ = server.await;
    tracing::info!("daemon stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the one shutdown signal of the daemon and of
/// long CLI runs (a file-tree snapshot still runs its post-hook).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot watch SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Starts one loop per scheduled job: the base backup and every drill in the drills directory.
/// Each is declared to the metrics first, so a task that never ran is visible from start-up.
fn schedule_jobs(state: &State, stop: &signal_watch::Receiver<bool>, tasks: &mut JoinSet<()>) -> Result<(), crate::Error> {
    let config = &state.config;
    if !config.daemon.backup_schedule.is_empty() {
        let schedule = crate::config::parse_cron(&config.daemon.backup_schedule)
            .map_err(|e| crate::Error::Daemon(Error::Schedule(format!("daemon.backup_schedule: {e}"))))?;
        state.metrics.task_configured("backup.pg");
        let st = state.clone();
        tasks.spawn(cron_loop("backup.pg".into(), schedule, stop.clone(), move || {
            let st = st.clone();
            async move {
                jobs::backup_pg(&st.config, &st.events, false)
                    .await
                    .map(|r| format!("snapshot {}: {} bytes new of {}", r.snapshot_id, r.new_bytes, r.total_bytes))
                    .map_err(|e| e.to_string())
            }
        }));
    }
    if !config.daemon.retention_schedule.is_empty() {
        let schedule = crate::config::parse_cron(&config.daemon.retention_schedule)
            .map_err(|e| crate::Error::Daemon(Error::Schedule(format!("daemon.retention_schedule: {e}"))))?;
        let grace = duration(&config.daemon.prune_grace).and_then(|d| chrono::Duration::from_std(d).ok()).unwrap_or(chrono::Duration::hours(24));
        // Its runs are recorded as retention.prune (forget records only when it forgot something).
        state.metrics.task_configured("retention.prune");
        let st = state.clone();
        tasks.spawn(cron_loop("retention".into(), schedule, stop.clone(), move || {
            let st = st.clone();
            async move {
                jobs::retention(&st.config, &st.events, grace)
                    .await
                    .map(|r| format!("{} bytes reclaimed ({} packs, {} WAL files)", r.bytes_reclaimed, r.packs_deleted, r.wal_deleted))
                    .map_err(|e| e.to_string())
            }
        }));
    }
    if !config.daemon.verify_schedule.is_empty() {
        let schedule = crate::config::parse_cron(&config.daemon.verify_schedule)
            .map_err(|e| crate::Error::Daemon(Error::Schedule(format!("daemon.verify_schedule: {e}"))))?;
        let period_days = duration(&config.daemon.verify_period).map_or(30, |d| d.as_secs() / 86_400);
        state.metrics.task_configured("verify");
        let st = state.clone();
        tasks.spawn(cron_loop("verify".into(), schedule, stop.clone(), move || {
            let st = st.clone();
            async move {
                let scope = jobs::VerifyScope::Due { period_days };
                match jobs::verify(&st.config, &st.events, scope, Utc::now()).await {
                    Ok(report) if report.ok => Ok(format!("{} objects, {} bytes read", report.objects_checked, report.bytes_read)),
                    Ok(report) => Err(format!("{} problem(s) found", report.problems.len())),
                    Err(error) => Err(format!("could not run: {error}")),
                }
            }
        }));
    }
    for job in &config.fs {
        let Some(schedule) = &job.schedule else { continue };
        let schedule = crate::config::parse_cron(schedule)
            .map_err(|e| crate::Error::Daemon(Error::Schedule(format!("fs job {}: schedule: {e}", job.name))))?;
        state.metrics.task_configured(&format!("backup.fs.{}", job.name));
        let st = state.clone();
        let job = job.clone();
        let stop_job = stop.clone();
        tasks.spawn(cron_loop(format!("backup.fs.{}", job.name), schedule, stop.clone(), move || {
            let st = st.clone();
            let job = job.clone();
            let mut stop = stop_job.clone();
            async move {
                let options = jobs::fs_job_options(&st.config, &job);
                // SIGTERM cancels the read; the post-hook still runs and nothing is committed.
                let cancel = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                jobs::backup_fs(&st.config, &st.events, &job.name, options, cancel)
                    .await
                    .map(|r| format!("snapshot {}: {} files, {} bytes", r.snapshot_id, r.files, r.total_bytes))
                    .map_err(|e| e.to_string())
            }
        }));
    }
    let drills: Vec<(PathBuf, drill::DrillDefinition)> = if config.drills.dir.is_dir() {
        drill::list(&config.drills.dir)?
    } else {
        tracing::warn!(dir = %config.drills.dir.display(), "drills directory does not exist: no drills scheduled");
        Vec::new()
    };
    for (path, definition) in drills {
        if definition.kind == crate::drill::DrillKind::Fs && config.fs.is_empty() {
            tracing::info!(drill = %definition.name, file = %path.display(), "file-tree drill not scheduled: no [[fs]] job is configured, so there is nothing for it to restore");
            continue;
        }
        let schedule = crate::config::parse_cron(&definition.schedule)
            .map_err(|e| crate::Error::Daemon(Error::Schedule(format!("{}: schedule: {e}", path.display()))))?;
        state.metrics.drill_configured(&definition);
        let st = state.clone();
        let name = format!("drill.{}", definition.name);
        tasks.spawn(cron_loop(name, schedule, stop.clone(), move || {
            let st = st.clone();
            let definition = definition.clone();
            async move {
                match jobs::run_drill(&st.config, &st.events, definition, false, st.restore_command.clone()).await {
                    Ok(report) if report.passed => Ok(format!("passed; RPO {:?}s RTO {:?}s", report.rpo_seconds, report.rto_seconds)),
                    Ok(report) => Err(format!("failed checks: {}", report.failed_checks().join(", "))),
                    Err(error) => Err(format!("could not run: {error}")),
                }
            }
        }));
    }
    Ok(())
}

/// Runs `job` at every occurrence of `schedule` until shutdown. One loop per job, so runs of
/// the same job never overlap; occurrences missed while a run was still going are skipped
/// with a warning.
async fn cron_loop<F, Fut>(name: String, schedule: cron::Schedule, mut stop: signal_watch::Receiver<bool>, job: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    loop {
        let Some(next) = schedule.upcoming(Utc).next() else {
            tracing::warn!(task = %name, "schedule has no future occurrence");
            return;
        };
        tracing::info!(task = %name, next = %next.to_rfc3339(), "next run scheduled");
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        // One line per run: task, outcome, duration, what it did or why it failed.
        let started = std::time::Instant::now();
        let outcome = job().instrument(tracing::info_span!("task", task = %name)).await;
        let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        match outcome {
            Ok(detail) => tracing::info!(task = %name, outcome = "ok", seconds, detail = %detail, "task finished"),
            Err(detail) => tracing::error!(task = %name, outcome = "failed", seconds, detail = %detail, "task finished"),
        }
        if let Some(missed) = schedule.after(&next).next().filter(|t| *t < Utc::now()) {
            tracing::warn!(task = %name, missed = %missed.to_rfc3339(), "run overlapped the next occurrence; it is skipped");
        }
        if *stop.borrow() {
            return;
        }
    }
}
