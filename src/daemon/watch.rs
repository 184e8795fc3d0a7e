//! Periodic work: the heartbeat on the source, archive lag, and event delivery to sinks.
//!
//! Archive lag is only exported when it was measured: when the source cannot be reached (or
//! its `pg_wal/archive_status` cannot be read) the series are left out and `radd_source_up` is
//! 0, with the reason logged once per change.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::State;
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
                Ok(at) => state.metrics.heartbeat(at.timestamp_millis() as f64 / 1000.0),
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
    let sinks = match sinks_from_config(&state.config.events) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(error = %error, "event sinks are misconfigured: events stay in the local log");
            Vec::new()
        }
    };
    let mut archive = ArchiveWatch::new(&state);
    let mut undeliverable = vec![false; sinks.len()];
    loop {
        archive.tick(&state).await;
        for (i, sink) in sinks.iter().enumerate() {
            match state.events.deliver(sink, RetryPolicy::default()).await {
                Ok(report) => {
                    state.metrics.sink_backlog(sink.name(), report.backlog);
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

/// How long one probe of the source may take before it counts as failed (an unreachable host
/// must not hold up event delivery).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The archive side of the watch: one connection to the source, the last probe outcome (so
/// a failure is logged once per change, not every tick) and whether a stall was reported.
struct ArchiveWatch {
    client: Option<tokio_postgres::Client>,
    /// Why the last probe failed; `None` while the source is up, `Some("")` before the first
    /// probe (so the first success logs nothing and the first failure logs its reason).
    down: Option<String>,
    stall: Duration,
    stalled: bool,
}

impl ArchiveWatch {
    fn new(state: &State) -> Self {
        let stall = state.config.daemon.archive_stall.0;
        ArchiveWatch { client: None, down: Some(String::new()), stall, stalled: false }
    }

    /// Probes the source and measures the archive queue. A failed probe leaves lag and pending
    /// out of /metrics (radd could not measure them) and sets `radd_source_up` 0.
    async fn tick(&mut self, state: &State) {
        let measured = match tokio::time::timeout(PROBE_TIMEOUT, self.probe(state)).await {
            Ok(result) => result,
            Err(_) => {
                self.client = None;
                Err(format!("no answer from PostgreSQL within {}s", PROBE_TIMEOUT.as_secs()))
            }
        };
        match measured {
            Ok((pending, lag)) => {
                state.metrics.source_up(true);
                state.metrics.archive_measured(pending, lag.as_secs_f64());
                if self.down.take().is_some_and(|reason| !reason.is_empty()) {
                    tracing::info!("source reachable again: archive lag measured");
                }
                self.check_stall(state, pending, lag);
            }
            Err(reason) => {
                state.metrics.source_up(false);
                state.metrics.archive_unmeasured();
                if self.down.as_ref() != Some(&reason) {
                    tracing::warn!(reason = %reason, "cannot measure WAL archiving on the source: radd_source_up 0, archive lag not exported");
                    self.down = Some(reason);
                }
            }
        }
    }

    /// Connects if needed, reads `pg_stat_archiver`, then counts `.ready` files.
    async fn probe(&mut self, state: &State) -> Result<(usize, Duration), String> {
        if self.client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            self.client = Some(pg::connect(&state.config.postgres).await.map_err(|e| e.to_string())?);
        }
        let Some(client) = &self.client else { return Err("no connection to the source".into()) };
        let configured = state.config.postgres.data_dir.clone();
        let status = match pg::archiver::status(client, configured.is_none()).await {
            Ok(status) => status,
            Err(error) => {
                self.client = None;
                return Err(error.to_string());
            }
        };
        state.metrics.archive_failures(status.failed_count);
        let Some(dir) = configured.or(status.data_directory) else {
            return Err("the source did not report its data directory".into());
        };
        archive_status(&dir).map_err(|e| {
            format!(
                "cannot read {}: {e}; radd must run on the database host as a user that can read it",
                dir.join("pg_wal/archive_status").display()
            )
        })
    }

    /// Raises one S1 incident when the oldest pending segment waits longer than the stall
    /// threshold, and notes the recovery.
    fn check_stall(&mut self, state: &State, pending: usize, lag: Duration) {
        if lag > self.stall && !self.stalled {
            self.stalled = true;
            let event = Event::from_occurrence(
                Occurrence::ArchiveStalled,
                "wal.archive",
                format!("WAL archiving stalled: oldest of {pending} pending segments waits for {}s", lag.as_secs()),
            )
            .details(serde_json::json!({ "pending_segments": pending, "lag_seconds": lag.as_secs_f64() }));
            if let Err(error) = jobs::record(&state.events, &event) {
                tracing::error!(error = %error, "cannot record the archive stall incident");
            }
        } else if lag <= self.stall && self.stalled {
            self.stalled = false;
            tracing::info!("WAL archiving caught up");
        }
    }
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
