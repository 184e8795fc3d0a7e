//! Every metric radd exports, defined in this one file, and the Prometheus text rendering.
//!
//! Short-lived processes (wal-push, ad-hoc CLI runs) cannot feed a daemon's counters, so job
//! results are derived from the durable event log ([`Metrics::observe_events`]); live readings
//! (archive lag, sink backlog) are set by the daemon as it takes them. Labels come from bounded
//! sets (job, check, drill, sink, kind, severity): never paths, segment names or error text.

use prometheus::{Encoder, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::events::{Event, EventKind};

/// The registry and every metric.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    last_success: GaugeVec,
    last_failure: GaugeVec,
    job_duration: GaugeVec,
    failures: IntGaugeVec,
    backup_bytes: IntGaugeVec,
    drill_check: IntGaugeVec,
    drill_success: IntGaugeVec,
    drill_rpo: GaugeVec,
    drill_rto: GaugeVec,
    incidents: IntGaugeVec,
    /// (event detail, gauge) for the last verify run.
    verify: Vec<(&'static str, prometheus::Gauge)>,
    /// Age in seconds of the oldest WAL segment waiting to be archived (0 when none).
    pub archive_lag: prometheus::Gauge,
    /// WAL segments waiting to be archived (`.ready` files).
    pub archive_pending: IntGauge,
    /// Events not yet delivered, per sink.
    pub sink_backlog: IntGaugeVec,
    /// Unix time of the last heartbeat written to the source.
    pub heartbeat: prometheus::Gauge,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    registry.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    registry.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Defines and registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let r = Registry::new();
        let archive_lag = prometheus::Gauge::new("radd_archive_lag_seconds", "Age of the oldest WAL segment waiting to be archived (0 when none).").expect("valid");
        r.register(Box::new(archive_lag.clone())).expect("unique");
        let archive_pending = IntGauge::new("radd_archive_pending_segments", "WAL segments waiting to be archived (.ready files in pg_wal/archive_status).").expect("valid");
        r.register(Box::new(archive_pending.clone())).expect("unique");
        let heartbeat = prometheus::Gauge::new("radd_heartbeat_timestamp_seconds", "Unix time of the last heartbeat radd wrote to the source cluster.").expect("valid");
        r.register(Box::new(heartbeat.clone())).expect("unique");
        Metrics {
            last_success: gauge_vec(&r, "radd_last_success_timestamp_seconds", "Unix time of the last successful run of a job (from the event log).", &["job"]),
            last_failure: gauge_vec(&r, "radd_last_failure_timestamp_seconds", "Unix time of the last failed run of a job (from the event log).", &["job"]),
            job_duration: gauge_vec(&r, "radd_job_duration_seconds", "Duration of the last run of a job.", &["job"]),
            failures: int_gauge_vec(&r, "radd_job_failures", "Failed runs of a job recorded in the event log (all time).", &["job"]),
            backup_bytes: int_gauge_vec(&r, "radd_backup_bytes", "Bytes of the last run of a job by kind: total, new, reused, uploaded (backups), reclaimed (prune).", &["job", "kind"]),
            drill_check: int_gauge_vec(&r, "radd_drill_check_passed", "Result of each check in the last run of a drill: 1 passed, 0 failed.", &["drill", "check"]),
            drill_success: int_gauge_vec(&r, "radd_drill_passed", "Whether the last run of a drill passed every check (1) or not (0).", &["drill"]),
            drill_rpo: gauge_vec(&r, "radd_drill_rpo_seconds", "Data-loss window measured by the last run of a drill.", &["drill"]),
            drill_rto: gauge_vec(&r, "radd_drill_rto_seconds", "Time from drill start to a queryable restored instance in the last run.", &["drill"]),
            incidents: int_gauge_vec(&r, "radd_incidents", "Incidents in the event log by severity (all time).", &["severity"]),
            verify: [
                ("objects_checked", "radd_verify_objects", "Objects read in full by the last verify run."),
                ("bytes_read", "radd_verify_bytes", "Bytes read by the last verify run."),
                ("corruptions", "radd_verify_corruptions", "Problems (corrupt, missing, gap) found by the last verify run."),
                ("oldest_verified_age_seconds", "radd_verify_oldest_unverified_age_seconds", "Time since the least recently verified data object was last read in full."),
            ]
            .into_iter()
            .map(|(detail, name, help)| {
                let g = prometheus::Gauge::new(name, help).expect("valid");
                r.register(Box::new(g.clone())).expect("unique");
                (detail, g)
            })
            .collect(),
            sink_backlog: int_gauge_vec(&r, "radd_event_sink_backlog", "Events not yet delivered to a sink.", &["sink"]),
            archive_lag,
            archive_pending,
            heartbeat,
            registry: r,
        }
    }

    /// Rebuilds every job-derived series from the event log (oldest first), so runs by any
    /// process — daemon or CLI — show up.
    pub fn observe_events(&self, events: &[Event]) {
        self.failures.reset();
        self.incidents.reset();
        for event in events {
            let job = event.source.as_str();
            let at = event.timestamp().map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
            match event.kind {
                EventKind::Change => self.last_success.with_label_values(&[job]).set(at),
                EventKind::Incident => {
                    self.last_failure.with_label_values(&[job]).set(at);
                    self.failures.with_label_values(&[job]).inc();
                    let severity = event.severity.map_or("none", |s| s.as_str());
                    self.incidents.with_label_values(&[severity]).inc();
                }
            }
            let details = &event.details;
            if let Some(d) = details.get("duration_seconds").and_then(serde_json::Value::as_f64) {
                self.job_duration.with_label_values(&[job]).set(d);
            }
            if event.kind == EventKind::Change && job.starts_with("backup.") {
                for kind in ["total", "new", "reused", "uploaded"] {
                    if let Some(v) = details.get(format!("{kind}_bytes")).and_then(serde_json::Value::as_i64) {
                        self.backup_bytes.with_label_values(&[job, kind]).set(v);
                    }
                }
            }
            if let Some(bytes) = details.get("bytes_reclaimed").and_then(serde_json::Value::as_i64) {
                self.backup_bytes.with_label_values(&[job, "reclaimed"]).set(bytes);
            }
            if job == "verify" {
                for (detail, gauge) in &self.verify {
                    if let Some(v) = details.get(*detail).and_then(serde_json::Value::as_f64) {
                        gauge.set(v);
                    }
                }
            }
            if let Some(drill) = job.strip_prefix("drill.") {
                self.observe_drill(drill, details);
            }
        }
    }

    fn observe_drill(&self, drill: &str, details: &serde_json::Value) {
        if let Some(passed) = details.get("passed").and_then(serde_json::Value::as_bool) {
            self.drill_success.with_label_values(&[drill]).set(i64::from(passed));
        }
        if let Some(checks) = details.get("checks").and_then(serde_json::Value::as_array) {
            for c in checks {
                let (Some(check), Some(status)) = (c.get("check").and_then(|v| v.as_str()), c.get("status").and_then(|v| v.as_str())) else {
                    continue;
                };
                if status != "skipped" {
                    let name = check.split(':').next().unwrap_or(check);
                    self.drill_check.with_label_values(&[drill, name]).set(i64::from(status == "passed"));
                }
            }
        }
        if let Some(rpo) = details.get("rpo_seconds").and_then(serde_json::Value::as_f64) {
            self.drill_rpo.with_label_values(&[drill]).set(rpo);
        }
        if let Some(rto) = details.get("rto_seconds").and_then(serde_json::Value::as_f64) {
            self.drill_rto.with_label_values(&[drill]).set(rto);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_and_backup_series_come_from_events() {
        let m = Metrics::new();
        let backup = Event::change("backup.pg", "backup taken").details(serde_json::json!({"new_bytes": 10, "total_bytes": 100, "duration_seconds": 2.5}));
        let drill = Event::incident(crate::events::Severity::S2, "drill.monthly-rad", "drill failed").details(serde_json::json!({
            "passed": false, "rto_seconds": 4.0,
            "checks": [{"check": "checksums", "status": "failed"}, {"check": "sql:rows", "status": "passed"}]
        }));
        m.observe_events(&[backup, drill]);
        let text = m.render();
        assert!(text.contains("radd_last_success_timestamp_seconds{job=\"backup.pg\"}"), "{text}");
        assert!(text.contains("radd_drill_check_passed{check=\"checksums\",drill=\"monthly-rad\"} 0"), "{text}");
        assert!(text.contains("radd_drill_check_passed{check=\"sql\",drill=\"monthly-rad\"} 1"), "{text}");
        assert!(text.contains("radd_backup_bytes{job=\"backup.pg\",kind=\"new\"} 10"), "{text}");
        assert!(text.contains("radd_incidents{severity=\"S2\"} 1"), "{text}");
    }
}
