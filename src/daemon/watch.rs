//! Periodic work: the heartbeat on the source, archive lag, and event delivery to sinks.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{State, duration};
use crate::events::{Event, Occurrence, RetryPolicy, sinks_from_config};
use crate::{jobs, pg};

/// Refreshes `radd.heartbeat` on the source every `every`, reconnecting as needed.
pub async fn heartbeat_loop(state: State, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut client = None;
    loop {
        if client.as_ref().is_none_or(|c: &tokio_postgres::Client| c.is_closed()) {
            // A standby is read-only: with [postgres.primary] the heartbeat goes to the primary.
            client = match pg::connect(&state.config.postgres.writable()).await {
                Ok(c) => Some(c),
                Err(error) => {
                    tracing::warn!(error = %error, "heartbeat: cannot connect to the source");
                    None
                }
            };
        }
        if let Some(c) = &client {
            match pg::heartbeat::beat(c).await {
                Ok(at) => state.metrics.heartbeat.set(at.timestamp_millis() as f64 / 1000.0),
                Err(error) => tracing::warn!(error = %error, "heartbeat failed"),
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Measures archive lag (raising one S1 incident per stall) and delivers events to sinks.
pub async fn watch_loop(state: State, every: Duration, mut stop: watch::Receiver<bool>) {
    let stall = duration(&state.config.daemon.archive_stall).unwrap_or(Duration::from_secs(300));
    let sinks = match sinks_from_config(&state.config.events) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(error = %error, "event sinks are misconfigured: events stay in the local log");
            Vec::new()
        }
    };
    let mut data_dir = state.config.postgres.data_dir.clone();
    let mut stalled = false;
    let mut undeliverable = vec![false; sinks.len()];
    loop {
        if data_dir.is_none() {
            data_dir = ask_data_dir(&state).await;
        }
        if let Some(dir) = &data_dir {
            match archive_status(dir) {
                Ok((pending, lag)) => {
                    state.metrics.archive_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
                    state.metrics.archive_lag.set(lag.as_secs_f64());
                    if lag > stall && !stalled {
                        stalled = true;
                        let event = Event::from_occurrence(
                            Occurrence::ArchiveStalled,
                            "wal.archive",
                            format!("WAL archiving stalled: oldest of {pending} pending segments waits for {}s", lag.as_secs()),
                        )
                        .details(serde_json::json!({ "pending_segments": pending, "lag_seconds": lag.as_secs_f64() }));
                        if let Err(error) = jobs::record(&state.events, &event) {
                            tracing::error!(error = %error, "cannot record the archive stall incident");
                        }
                    } else if lag <= stall && stalled {
                        stalled = false;
                        tracing::info!("WAL archiving caught up");
                    }
                }
                Err(error) => tracing::warn!(dir = %dir.display(), error = %error, "cannot read archive status"),
            }
        }
        for (i, sink) in sinks.iter().enumerate() {
            match state.events.deliver(sink, RetryPolicy::default()).await {
                Ok(report) => {
                    state.metrics.sink_backlog.with_label_values(&[sink.name()]).set(i64::try_from(report.backlog).unwrap_or(i64::MAX));
                    match (&report.last_error, undeliverable[i]) {
                        (Some(error), false) => {
                            undeliverable[i] = true;
                            tracing::warn!(sink = sink.name(), error = %error, backlog = report.backlog, "event delivery failing; events stay queued");
                        }
                        (None, true) => undeliverable[i] = false,
                        _ => {}
                    }
                }
                Err(error) => tracing::error!(sink = sink.name(), error = %error, "event delivery failed"),
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn ask_data_dir(state: &State) -> Option<PathBuf> {
    let client = pg::connect(&state.config.postgres).await.ok()?;
    let row = client.query_one("SELECT current_setting('data_directory')", &[]).await.ok()?;
    Some(PathBuf::from(row.get::<_, String>(0)))
}

/// Number of `.ready` files and the age of the oldest one.
fn archive_status(data_dir: &Path) -> std::io::Result<(usize, Duration)> {
    let now = SystemTime::now();
    let mut pending = 0;
    let mut oldest = Duration::ZERO;
    for entry in std::fs::read_dir(data_dir.join("pg_wal/archive_status"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".ready") {
            pending += 1;
            let age = entry.metadata()?.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            oldest = oldest.max(age);
        }
    }
    Ok((pending, oldest))
}
