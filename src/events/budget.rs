//! Error budgets computed from the event log: are backups proven (drill success ratio) and
//! fresh (backup-freshness SLO)? Pure functions of the events and a clock, so the same numbers
//! come out of `radd events budget`, the daemon and tests with hand-made events.
//!
//! Budget remaining, for an objective `o` (e.g. 0.99) and an actual ratio `a`:
//! `remaining = 1 - (1 - a) / (1 - o)`, at most 1. It is 1 when nothing failed, 0 when the
//! failures used up exactly the allowed `1 - o`, and negative when the objective is missed
//! (-1 = twice the allowance spent). An objective of 1 allows nothing: any shortfall is -inf.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;

use super::{Event, EventKind, Severity};

/// Objective for the share of drills that pass.
pub const DRILL_SUCCESS_OBJECTIVE: f64 = 0.99;
/// Objective for the share of time a fresh enough backup exists.
pub const FRESHNESS_OBJECTIVE: f64 = 0.99;
/// Default maximum backup age (`radd events budget`): a daily backup plus 2 h of slack.
pub const DEFAULT_FRESHNESS_HOURS: i64 = 26;
/// Default budget window (`radd events budget`).
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

/// The error budget over one window. Serialised as `radd events budget --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetReport {
    /// Start of the window, RFC 3339 UTC: the requested window's start, or the first
    /// recorded event when the log is younger (time before radd ran is not downtime).
    pub window_start: String,
    /// The window asked for, in seconds.
    pub window_requested_seconds: i64,
    /// How much history the numbers rest on: from `window_start` to `window_end`, in seconds.
    pub history_seconds: i64,
    /// End of the window (`now`), RFC 3339 UTC.
    pub window_end: String,
    /// Drill results in the window.
    pub drills: DrillBudget,
    /// Backup freshness over the window.
    pub freshness: FreshnessBudget,
    /// Incidents in the window by severity.
    pub incidents: IncidentCounts,
}

/// Drills (events whose source starts with `drill.`) in the window: a `change` passed, an
/// `incident` failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillBudget {
    /// Drills that passed.
    pub passed: usize,
    /// Drills that failed.
    pub failed: usize,
    /// `passed / (passed + failed)`; `None` when no drill ran — which is itself a problem,
    /// but not one a ratio can express.
    pub success_ratio: Option<f64>,
    /// [`DRILL_SUCCESS_OBJECTIVE`].
    pub objective: f64,
    /// See the module doc; `None` when no drill ran.
    pub budget_remaining: Option<f64>,
}

/// Share of the window during which the newest successful backup (a `change` event whose
/// source starts with `backup.`) was younger than `max_age_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreshnessBudget {
    /// The freshness threshold.
    pub max_age_seconds: i64,
    /// Fresh time / window length, exact to the millisecond; backups from before the window
    /// count for the part of their freshness that reaches into it.
    pub fresh_ratio: f64,
    /// Window time without a fresh backup.
    pub stale_seconds: i64,
    /// [`FRESHNESS_OBJECTIVE`].
    pub objective: f64,
    /// See the module doc.
    pub budget_remaining: f64,
    /// Time of the newest successful backup at or before `now`, if any.
    pub newest_backup: Option<String>,
}

/// Incident counts by severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IncidentCounts {
    /// Data at risk.
    #[serde(rename = "S1")]
    pub s1: usize,
    /// Recoverability unproven.
    #[serde(rename = "S2")]
    pub s2: usize,
    /// Degraded.
    #[serde(rename = "S3")]
    pub s3: usize,
    /// Observability only.
    #[serde(rename = "S4")]
    pub s4: usize,
    /// Incidents without a severity (written by hand or by another tool): counted, not hidden.
    pub unrated: usize,
}

/// Computes the error budget for the window `[now - window, now]` from `events` (any order),
/// starting no earlier than the first recorded event: on day one the window is that day. A
/// window of no length (no events, or a non-positive `window`) yields freshness 1 or 0
/// depending on the backup age at `now`.
#[must_use]
pub fn budget(events: &[Event], now: DateTime<Utc>, window: TimeDelta, freshness: TimeDelta) -> BudgetReport {
    let timed = || events.iter().filter_map(|e| e.timestamp().map(|t| (t, e)));
    let first = timed().map(|(t, _)| t).min();
    let start = first.map_or(now, |first| first.max(now - window)).min(now);
    let in_window = || timed().filter(|(t, _)| *t >= start && *t <= now);

    let (mut passed, mut failed) = (0, 0);
    let mut incidents = IncidentCounts::default();
    for (_, event) in in_window() {
        if event.source.starts_with("drill.") {
            match event.kind {
                EventKind::Change => passed += 1,
                EventKind::Incident => failed += 1,
            }
        }
        if event.kind == EventKind::Incident {
            match event.severity {
                Some(Severity::S1) => incidents.s1 += 1,
                Some(Severity::S2) => incidents.s2 += 1,
                Some(Severity::S3) => incidents.s3 += 1,
                Some(Severity::S4) => incidents.s4 += 1,
                None => incidents.unrated += 1,
            }
        }
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let success_ratio = (passed + failed > 0).then(|| passed as f64 / (passed + failed) as f64);

    let mut backups: Vec<DateTime<Utc>> = timed()
        .filter(|(t, e)| *t <= now && e.kind == EventKind::Change && e.source.starts_with("backup."))
        .map(|(t, _)| t)
        .collect();
    backups.sort_unstable();
    let fresh = fresh_time(&backups, start, now, freshness);
    let window_ms = (now - start).num_milliseconds();
    #[allow(clippy::cast_precision_loss)] // milliseconds of a window fit f64 exactly
    let fresh_ratio = if window_ms > 0 {
        fresh.num_milliseconds() as f64 / window_ms as f64
    } else if backups.last().is_some_and(|&t| now - t < freshness) {
        1.0
    } else {
        0.0
    };

    BudgetReport {
        window_start: rfc3339(start),
        window_requested_seconds: window.num_seconds(),
        history_seconds: (now - start).num_seconds(),
        window_end: rfc3339(now),
        drills: DrillBudget {
            passed,
            failed,
            success_ratio,
            objective: DRILL_SUCCESS_OBJECTIVE,
            budget_remaining: success_ratio.map(|r| budget_remaining(r, DRILL_SUCCESS_OBJECTIVE)),
        },
        freshness: FreshnessBudget {
            max_age_seconds: freshness.num_seconds(),
            fresh_ratio,
            stale_seconds: ((now - start) - fresh).num_seconds().max(0),
            objective: FRESHNESS_OBJECTIVE,
            budget_remaining: budget_remaining(fresh_ratio, FRESHNESS_OBJECTIVE),
            newest_backup: backups.last().map(|&t| rfc3339(t)),
        },
        incidents,
    }
}

/// `1 - (1 - actual) / (1 - objective)`, at most 1 (see the module doc).
#[must_use]
pub fn budget_remaining(actual: f64, objective: f64) -> f64 {
    let allowed = 1.0 - objective;
    let spent = 1.0 - actual;
    if allowed <= 0.0 {
        return if spent <= 0.0 { 1.0 } else { f64::NEG_INFINITY };
    }
    (1.0 - spent / allowed).min(1.0)
}

/// Length of the union of `[t, t + freshness)` over the sorted backup times, clipped to
/// `[start, end]`.
fn fresh_time(sorted: &[DateTime<Utc>], start: DateTime<Utc>, end: DateTime<Utc>, freshness: TimeDelta) -> TimeDelta {
    let mut total = TimeDelta::zero();
    let mut current: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for &t in sorted {
        let (from, to) = (t.max(start), (t + freshness).min(end));
        if to <= from {
            continue;
        }
        current = match current {
            Some((cur_from, cur_to)) if from <= cur_to => Some((cur_from, cur_to.max(to))),
            Some((cur_from, cur_to)) => {
                total += cur_to - cur_from;
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
    if let Some((from, to)) = current {
        total += to - from;
    }
    total
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the ratios are exact by construction; compared exactly on purpose
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 31, 0, 0, 0).unwrap()
    }

    fn h(hours: i64) -> TimeDelta {
        TimeDelta::hours(hours)
    }

    fn backup(at: DateTime<Utc>) -> Event {
        Event::change("backup.pg", "base backup taken").at(at)
    }

    #[test]
    fn freshness_counts_exact_intervals_including_backups_before_the_window() {
        let now = now();
        let start = now - TimeDelta::days(30);
        let events = vec![
            backup(start - h(10)), // fresh for the first 16 h of the window
            backup(start + h(24)), // fresh 24 h .. 50 h
            backup(start + h(48)), // overlaps: fresh until 74 h
            Event::incident(Severity::S2, "backup.pg", "backup failed").at(start + h(100)),
            Event::change("restore", "restored").at(start + h(200)), // not a backup
            backup(now - h(2)),                                      // fresh for the last 2 h
            backup(now + h(1)),                                      // in the future: ignored
        ];
        let report = budget(&events, now, TimeDelta::days(30), h(DEFAULT_FRESHNESS_HOURS));
        assert_eq!(report.freshness.fresh_ratio, 68.0 / 720.0);
        assert_eq!(report.freshness.stale_seconds, (720 - 68) * 3600);
        assert_eq!(report.freshness.max_age_seconds, 26 * 3600);
        assert_eq!(report.freshness.newest_backup.as_deref(), Some("2025-03-30T22:00:00.000Z"));
        let expected = 1.0 - (1.0 - 68.0 / 720.0) / 0.01;
        assert!((report.freshness.budget_remaining - expected).abs() < 1e-9);
        assert_eq!(report.window_start, "2025-03-01T00:00:00.000Z");
        assert_eq!(report.incidents, IncidentCounts { s2: 1, ..IncidentCounts::default() });
        assert_eq!(report.drills.success_ratio, None);
        assert_eq!(report.drills.budget_remaining, None);
    }

    #[test]
    fn daily_backups_keep_the_whole_budget() {
        let now = now();
        let events: Vec<_> = (0..=31).map(|d| backup(now - TimeDelta::days(d) + h(1) - h(2))).collect();
        let report = budget(&events, now, TimeDelta::days(30), h(26));
        assert_eq!(report.freshness.fresh_ratio, 1.0);
        assert_eq!(report.freshness.stale_seconds, 0);
        assert_eq!(report.freshness.budget_remaining, 1.0);
    }

    #[test]
    fn no_history_means_no_window() {
        let report = budget(&[], now(), TimeDelta::days(30), h(26));
        assert_eq!(report.history_seconds, 0);
        assert_eq!(report.window_requested_seconds, 30 * 24 * 3600);
        assert_eq!(report.freshness.fresh_ratio, 0.0);
        assert_eq!(report.freshness.stale_seconds, 0);
        assert_eq!(report.freshness.newest_backup, None);
    }

    #[test]
    fn the_window_starts_at_the_first_event() {
        // Day one: the first backup 2 h ago keeps the whole budget (the 30 days before radd
        // ran are not downtime).
        let report = budget(&[backup(now() - h(2))], now(), TimeDelta::days(30), h(26));
        assert_eq!(report.history_seconds, 2 * 3600);
        assert_eq!(report.freshness.fresh_ratio, 1.0);
        assert_eq!(report.freshness.budget_remaining, 1.0);
        // A failed first backup 3 h ago: all of those 3 h are stale.
        let failed = Event::incident(Severity::S2, "backup.pg", "failed").at(now() - h(3));
        let report = budget(&[failed], now(), TimeDelta::days(30), h(26));
        assert_eq!(report.history_seconds, 3 * 3600);
        assert_eq!(report.freshness.stale_seconds, 3 * 3600);
    }

    #[test]
    fn drills_and_incidents_in_the_window_only() {
        let now = now();
        let drill_ok = |at| Event::change("drill.monthly-rad", "drill passed").at(at);
        let drill_failed = |at| Event::incident(Severity::S2, "drill.monthly-rad", "drill failed").at(at);
        let mut unrated = Event::change("wal.archive", "odd");
        unrated.kind = EventKind::Incident;
        let events = vec![
            drill_failed(now - TimeDelta::days(31)), // before the window
            drill_ok(now - TimeDelta::days(29)),
            drill_ok(now - TimeDelta::days(20)),
            drill_failed(now - TimeDelta::days(10)),
            drill_ok(now - h(1)),
            Event::incident(Severity::S1, "wal.archive", "archiving stalled").at(now - h(5)),
            Event::incident(Severity::S4, "events.gitlab", "sink refused").at(now - h(5)),
            unrated.at(now - h(3)),
        ];
        let report = budget(&events, now, TimeDelta::days(30), h(26));
        assert_eq!((report.drills.passed, report.drills.failed), (3, 1));
        assert_eq!(report.drills.success_ratio, Some(0.75));
        let remaining = report.drills.budget_remaining.unwrap();
        assert!((remaining - -24.0).abs() < 1e-9, "{remaining}");
        assert_eq!(report.drills.objective, 0.99);
        assert_eq!(report.incidents, IncidentCounts { s1: 1, s2: 1, s3: 0, s4: 1, unrated: 1 });
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["incidents"]["S2"], 1);
    }

    #[test]
    fn budget_remaining_formula() {
        assert_eq!(budget_remaining(1.0, 0.99), 1.0);
        assert!(budget_remaining(0.99, 0.99).abs() < 1e-9);
        assert!((budget_remaining(0.98, 0.99) - -1.0).abs() < 1e-9);
        assert!((budget_remaining(0.995, 0.99) - 0.5).abs() < 1e-9);
        assert_eq!(budget_remaining(1.0, 1.0), 1.0);
        assert_eq!(budget_remaining(0.5, 1.0), f64::NEG_INFINITY);
    }
}
