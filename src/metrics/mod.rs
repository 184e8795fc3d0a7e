//! Every metric radd exports, defined in this one file, and the Prometheus text rendering.
//!
//! The names, types and labels are a wire format: alert rules and dashboards (deploy/) are
//! written against them, and the README's metrics table lists every one; a unit test
//! (`wire_format`) fails when the rendered set and that table differ.
//!
//! Short-lived processes (wal-push, ad-hoc CLI runs) cannot feed a daemon's counters, so task
//! results are derived from the durable event log ([`Metrics::observe_events`], in
//! `observe.rs`); live readings (archive lag, source reachability, sink backlog) are set by
//! the daemon as it takes them. Rules:
//! - no label is named `job` or `instance` (Prometheus' own target labels would rename them to
//!   `exported_job`): a run of radd's work is a `task` (`backup.pg`, `drill.monthly-rad`);
//! - counters are counters, named `_total`;
//! - a value radd could not measure is absent, never 0 (`radd_source_up 0` says why lag is
//!   missing);
//! - every configured task has a `radd_task_configured{task}` series from start-up, so
//!   "never ran" is `radd_task_configured unless radd_last_success_timestamp_seconds`;
//! - labels come from bounded sets (task, check, drill, sink, kind, severity, slo): never
//!   paths, segment names or error text.

mod observe;
#[cfg(test)]
mod wire_format;

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::drill::DrillDefinition;

/// The severities `radd_incidents_total` always has a series for (plus `unrated` once seen).
const SEVERITIES: [&str; 4] = ["S1", "S2", "S3", "S4"];

/// The registry and every metric.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    task_configured: IntGaugeVec,
    last_success: GaugeVec,
    last_failure: GaugeVec,
    task_duration: GaugeVec,
    task_failures: IntCounterVec,
    incidents: IntCounterVec,
    backup_bytes: IntGaugeVec,
    drill_check: IntGaugeVec,
    drill_passed: IntGaugeVec,
    drill_rpo: GaugeVec,
    drill_rto: GaugeVec,
    drill_rpo_objective: GaugeVec,
    verify_objects: GaugeVec,
    verify_bytes: GaugeVec,
    verify_corruptions: GaugeVec,
    verify_oldest_read: GaugeVec,
    error_budget: GaugeVec,
    source_up: GaugeVec,
    archive_lag: GaugeVec,
    archive_pending: GaugeVec,
    archive_failures: IntCounterVec,
    sink_backlog: IntGaugeVec,
    heartbeat: GaugeVec,
    config_reload_success: IntGaugeVec,
    config_reload_time: IntGaugeVec,
}

/// Registers `metric` (a definition made from literals in this file, so failing is a bug in
/// this file, caught by every test that builds a [`Metrics`]).
#[allow(clippy::expect_used)] // Invariant: the names defined in this file are unique.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

// Invariant (all three): names and labels, literals of this file, are valid.
#[allow(clippy::expect_used)]
fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(registry, GaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid"))
}

#[allow(clippy::expect_used)]
fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid"))
}

#[allow(clippy::expect_used)]
fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid"))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Defines and registers every metric; sets `radd_build_info` and a zero for every
    /// severity of `radd_incidents_total` (so `increase()` sees the first incident).
    #[must_use]
    // Long on purpose: the list of every metric and its registration, one line group per metric.
    pub fn new() -> Self {
        let r = Registry::new();
        let build_info =
            int_gauge(&r, "radd_build_info", "Always 1; the version label is radd's version.", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let task = &["task"];
        let drill = &["drill"];
        let m = Metrics {
            task_configured: int_gauge(
                &r,
                "radd_task_configured",
                "1 for every task the daemon schedules (backup.pg, backup.fs.<job>, retention.prune, verify, drill.<name>), from start-up.",
                task,
            ),
            last_success: gauge(
                &r,
                "radd_last_success_timestamp_seconds",
                "Unix time of the last successful run of a task (event log); absent if it never succeeded.",
                task,
            ),
            last_failure: gauge(
                &r,
                "radd_last_failure_timestamp_seconds",
                "Unix time of the last failed run of a task (event log); absent if it never failed.",
                task,
            ),
            task_duration: gauge(
                &r,
                "radd_task_duration_seconds",
                "Duration of the last run of a task that reported one.",
                task,
            ),
            task_failures: counter(
                &r,
                "radd_task_failures_total",
                "Failed runs of a task (incidents in the event log).",
                task,
            ),
            incidents: counter(&r, "radd_incidents_total", "Incidents in the event log by severity.", &["severity"]),
            backup_bytes: int_gauge(
                &r,
                "radd_backup_bytes",
                "Bytes of the last run of a task by kind: total, new, reused, uploaded (backups), reclaimed (prune).",
                &["task", "kind"],
            ),
            drill_check: int_gauge(
                &r,
                "radd_drill_check_passed",
                "Result of each check in the last run of a drill: 1 passed, 0 failed.",
                &["drill", "check"],
            ),
            drill_passed: int_gauge(
                &r,
                "radd_drill_passed",
                "Whether the last run of a drill passed every check (1) or not, or could not run (0).",
                drill,
            ),
            drill_rpo: gauge(
                &r,
                "radd_drill_rpo_seconds",
                "Data-loss window measured by the last run of a drill (heartbeat age in the restored copy).",
                drill,
            ),
            drill_rto: gauge(
                &r,
                "radd_drill_rto_seconds",
                "Time from drill start to a queryable restored instance in the last run.",
                drill,
            ),
            drill_rpo_objective: gauge(
                &r,
                "radd_drill_rpo_objective_seconds",
                "The drill's configured RPO objective (checks.rpo.max), for drills that have one.",
                drill,
            ),
            verify_objects: gauge(&r, "radd_verify_objects", "Objects read in full by the last verify run.", &[]),
            verify_bytes: gauge(&r, "radd_verify_bytes", "Bytes read by the last verify run.", &[]),
            verify_corruptions: gauge(
                &r,
                "radd_verify_corruptions",
                "Problems (corrupt, missing, gap) found by the last verify run.",
                &[],
            ),
            verify_oldest_read: gauge(
                &r,
                "radd_verify_oldest_read_timestamp_seconds",
                "Unix time the least recently verified data object was last read in full (as of the last verify run).",
                &[],
            ),
            error_budget: gauge(
                &r,
                "radd_error_budget_remaining_ratio",
                "Error budget remaining over 30 days (radd events budget): slo=drills (99% pass), slo=freshness (backup younger than 26h 99% of the time); 1 untouched, <0 objective missed.",
                &["slo"],
            ),
            source_up: gauge(
                &r,
                "radd_source_up",
                "1 when the daemon's last probe of the source PostgreSQL (connect, pg_stat_archiver, pg_wal/archive_status) succeeded, 0 when it failed (reason in the log).",
                &[],
            ),
            archive_lag: gauge(
                &r,
                "radd_archive_lag_seconds",
                "Age of the oldest WAL segment waiting to be archived (0 when none); absent when it cannot be measured.",
                &[],
            ),
            archive_pending: gauge(
                &r,
                "radd_archive_pending_segments",
                "WAL segments waiting to be archived (.ready files); absent when they cannot be counted.",
                &[],
            ),
            archive_failures: counter(
                &r,
                "radd_archive_failures_total",
                "Failed archive_command runs as counted by the source (pg_stat_archiver.failed_count; a stats reset is a counter reset).",
                &[],
            ),
            sink_backlog: int_gauge(
                &r,
                "radd_event_sink_backlog",
                "Events not yet delivered to a configured sink.",
                &["sink"],
            ),
            heartbeat: gauge(
                &r,
                "radd_heartbeat_timestamp_seconds",
                "Unix time of the last heartbeat radd wrote to the source; absent until the first.",
                &[],
            ),
            config_reload_success: int_gauge(
                &r,
                "radd_config_last_reload_successful",
                "1 when the last configuration load (start or SIGHUP) succeeded, 0 when it failed and the daemon kept the previous one.",
                &[],
            ),
            config_reload_time: int_gauge(
                &r,
                "radd_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load (start or SIGHUP).",
                &[],
            ),
            registry: r,
        };
        for severity in SEVERITIES {
            m.incidents.with_label_values(&[severity]);
        }
        m
    }

    /// Declares a task the daemon runs (`backup.pg`, `backup.fs.<job>`, `retention.prune`,
    /// `verify`), so that it has series before it first runs: `radd_task_configured` 1 and a
    /// zero failure counter.
    pub fn task_configured(&self, task: &str) {
        self.task_configured.with_label_values(&[task]).set(1);
        self.task_failures.with_label_values(&[task]);
    }

    /// Forgets which tasks are configured (before a reload declares them again); their
    /// counters stay, as counters must.
    pub fn tasks_unconfigured(&self) {
        self.task_configured.reset();
        self.drill_rpo_objective.reset();
    }

    /// Records whether the last configuration load (start or SIGHUP) succeeded.
    pub fn config_reloaded(&self, success: bool) {
        self.config_reload_success.with_label_values(&[] as &[&str]).set(i64::from(success));
        if success {
            self.config_reload_time.with_label_values(&[] as &[&str]).set(chrono::Utc::now().timestamp());
        }
    }

    /// Declares a scheduled drill: its task (`drill.<name>`) and, when it has one, its RPO
    /// objective. An unparsable objective is left out (the drill itself reports it).
    pub fn drill_configured(&self, definition: &DrillDefinition) {
        self.task_configured(&format!("drill.{}", definition.name));
        let objective = definition
            .checks
            .rpo
            .as_ref()
            .and_then(|r| r.max.as_deref())
            .and_then(|m| humantime::parse_duration(m).ok());
        if let Some(objective) = objective {
            self.drill_rpo_objective.with_label_values(&[definition.name.as_str()]).set(objective.as_secs_f64());
        }
    }

    /// Records the outcome of a probe of the source: up (1) or not (0). Lag and pending series
    /// are removed by [`Metrics::archive_unmeasured`], not here.
    pub fn source_up(&self, up: bool) {
        self.source_up.with_label_values(&[] as &[&str]).set(if up { 1.0 } else { 0.0 });
    }

    /// Records one measurement of the archive queue.
    pub fn archive_measured(&self, pending: usize, lag_seconds: f64) {
        #[allow(clippy::cast_precision_loss)] // segment counts are far below 2^52
        self.archive_pending.with_label_values(&[] as &[&str]).set(pending as f64);
        self.archive_lag.with_label_values(&[] as &[&str]).set(lag_seconds);
    }

    /// The archive queue could not be measured: lag and pending are left out (never 0).
    pub fn archive_unmeasured(&self) {
        self.archive_lag.reset();
        self.archive_pending.reset();
    }

    /// Records the source's count of failed `archive_command` runs (a lower count than before
    /// is a stats reset and is exported as a counter reset).
    pub fn archive_failures(&self, failed_count: u64) {
        observe::set_count(&self.archive_failures, &[], failed_count);
    }

    /// Records a heartbeat written at `unix_seconds`.
    pub fn heartbeat(&self, unix_seconds: f64) {
        self.heartbeat.with_label_values(&[] as &[&str]).set(unix_seconds);
    }

    /// Records the number of events not yet delivered to `sink`.
    pub fn sink_backlog(&self, sink: &str, backlog: usize) {
        self.sink_backlog.with_label_values(&[sink]).set(i64::try_from(backlog).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %error, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
