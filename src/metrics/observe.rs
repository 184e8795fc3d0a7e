//! Task, drill, verify and error-budget series rebuilt from the event log at every scrape.
//!
//! The log only grows, so counts taken from it only grow: they are exported as real counters
//! (raised to the count), monotonic for the daemon's lifetime.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use prometheus::IntCounterVec;
use serde_json::Value;

use super::Metrics;
use crate::events::{self, Event, EventKind};

/// Sets the counter at `labels` to `count`: raised by the difference, or, if `count` is
/// lower (the source reset its count), recreated at `count`, which Prometheus reads as a
/// counter reset.
pub(super) fn set_count(vec: &IntCounterVec, labels: &[&str], count: u64) {
    let counter = vec.with_label_values(labels);
    let current = counter.get();
    if count >= current {
        counter.inc_by(count - current);
    } else {
        let _ = vec.remove_label_values(labels);
        vec.with_label_values(labels).inc_by(count);
    }
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    #[allow(clippy::cast_precision_loss)] // milliseconds since 1970 fit f64 exactly
    let ms = t.timestamp_millis() as f64;
    ms / 1000.0
}

impl Metrics {
    /// Rebuilds every task-derived series from the event log (oldest first), so runs by any
    /// process — daemon or CLI — show up, and the error budget as of `now`.
    pub fn observe_events(&self, events: &[Event], now: DateTime<Utc>) {
        let mut failures: BTreeMap<&str, u64> = BTreeMap::new();
        let mut incidents: BTreeMap<&str, u64> = BTreeMap::new();
        for event in events {
            let task = event.source.as_str();
            let at = event.timestamp();
            let at_s = at.map_or(0.0, unix_seconds);
            match event.kind {
                EventKind::Change => self.last_success.with_label_values(&[task]).set(at_s),
                EventKind::Incident => {
                    self.last_failure.with_label_values(&[task]).set(at_s);
                    *failures.entry(task).or_default() += 1;
                    *incidents.entry(event.severity.map_or("unrated", |s| s.as_str())).or_default() += 1;
                }
            }
            let details = &event.details;
            if let Some(d) = details.get("duration_seconds").and_then(Value::as_f64) {
                self.task_duration.with_label_values(&[task]).set(d);
            }
            if event.kind == EventKind::Change && task.starts_with("backup.") {
                for kind in ["total", "new", "reused", "uploaded"] {
                    if let Some(v) = details.get(format!("{kind}_bytes")).and_then(Value::as_i64) {
                        self.backup_bytes.with_label_values(&[task, kind]).set(v);
                    }
                }
            }
            if let Some(bytes) = details.get("bytes_reclaimed").and_then(Value::as_i64) {
                self.backup_bytes.with_label_values(&[task, "reclaimed"]).set(bytes);
            }
            if task == "verify" {
                self.observe_verify(details, at);
            }
            if let Some(drill) = task.strip_prefix("drill.") {
                self.observe_drill(drill, event.kind, details);
            }
        }
        for (task, count) in failures {
            set_count(&self.task_failures, &[task], count);
        }
        for (severity, count) in incidents {
            set_count(&self.incidents, &[severity], count);
        }
        self.observe_budget(events, now);
    }

    fn observe_verify(&self, details: &Value, at: Option<DateTime<Utc>>) {
        let none: &[&str] = &[];
        for (detail, gauge) in [
            ("objects_checked", &self.verify_objects),
            ("bytes_read", &self.verify_bytes),
            ("corruptions", &self.verify_corruptions),
        ] {
            if let Some(v) = details.get(detail).and_then(Value::as_f64) {
                gauge.with_label_values(none).set(v);
            }
        }
        // The age is relative to the run; as a timestamp it stays true after the run.
        let oldest = details.get("oldest_verified_age_seconds").and_then(Value::as_i64).zip(at);
        if let Some((age, at)) = oldest {
            self.verify_oldest_read.with_label_values(none).set(unix_seconds(at - TimeDelta::seconds(age)));
        }
    }

    fn observe_drill(&self, drill: &str, kind: EventKind, details: &Value) {
        // A drill that could not run reports no `passed`: it did not pass.
        let passed = details.get("passed").and_then(Value::as_bool).unwrap_or(kind == EventKind::Change);
        self.drill_passed.with_label_values(&[drill]).set(i64::from(passed));
        if let Some(checks) = details.get("checks").and_then(Value::as_array) {
            for c in checks {
                let (Some(check), Some(status)) =
                    (c.get("check").and_then(Value::as_str), c.get("status").and_then(Value::as_str))
                else {
                    continue;
                };
                if status != "skipped" {
                    // `sql:<probe>` → `sql`: probe names are free text, the label set stays bounded.
                    let name = check.split(':').next().unwrap_or(check);
                    self.drill_check.with_label_values(&[drill, name]).set(i64::from(status == "passed"));
                }
            }
        }
        if let Some(rpo) = details.get("rpo_seconds").and_then(Value::as_f64) {
            self.drill_rpo.with_label_values(&[drill]).set(rpo);
        }
        if let Some(rto) = details.get("rto_seconds").and_then(Value::as_f64) {
            self.drill_rto.with_label_values(&[drill]).set(rto);
        }
    }

    /// The `radd events budget` defaults (30 days, 26 h freshness); the drill budget is absent
    /// while no drill ran in the window (a ratio of nothing is not 1).
    fn observe_budget(&self, events: &[Event], now: DateTime<Utc>) {
        let report = events::budget(
            events,
            now,
            TimeDelta::days(events::DEFAULT_WINDOW_DAYS),
            TimeDelta::hours(events::DEFAULT_FRESHNESS_HOURS),
        );
        match report.drills.budget_remaining {
            Some(remaining) => self.error_budget.with_label_values(&["drills"]).set(remaining),
            None => {
                let _ = self.error_budget.remove_label_values(&["drills"]);
            }
        }
        self.error_budget.with_label_values(&["freshness"]).set(report.freshness.budget_remaining);
    }
}
