//! The metrics wire format is pinned: every metric rendered after representative observations
//! must appear in the README's metrics table with the same type and labels, and vice versa.

use std::collections::BTreeSet;

use chrono::{TimeDelta, Utc};
use serde_json::json;

use super::Metrics;
use crate::events::{Event, Severity};

/// (name, type, sorted label names).
type Family = (String, String, Vec<String>);

/// Parses a text exposition into its families: types from `# TYPE`, labels from samples.
fn rendered_families(text: &str) -> BTreeSet<Family> {
    let mut types = std::collections::BTreeMap::new();
    let mut labels: std::collections::BTreeMap<String, BTreeSet<String>> = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
            types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).expect("sample has a value");
            let set = labels.entry(line[..name_end].to_owned()).or_default();
            if let Some(body) = line[name_end..].strip_prefix('{') {
                let body = &body[..body.find('}').expect("closed label set")];
                // Label values here never contain `,` or `=` (they are task and check names).
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    set.insert(pair.split_once('=').expect("label=value").0.to_owned());
                }
            }
        }
    }
    types
        .into_iter()
        .map(|(name, kind)| {
            let l = labels.get(&name).map(|s| s.iter().cloned().collect()).unwrap_or_default();
            (name, kind, l)
        })
        .collect()
}

/// The rows of the README table whose first cell is a `radd_…` metric name.
fn readme_families() -> BTreeSet<Family> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read README.md");
    readme
        .lines()
        .filter(|l| l.starts_with("| `radd_"))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let unquote = |s: &str| s.trim_matches('`').to_owned();
            let mut labels: Vec<String> =
                if cells[2] == "—" { Vec::new() } else { cells[2].split(',').map(|l| unquote(l.trim())).collect() };
            labels.sort();
            (unquote(cells[0]), cells[1].to_owned(), labels)
        })
        .collect()
}

/// Metrics after one of every observation radd makes.
fn observed() -> Metrics {
    let m = Metrics::new();
    let now = Utc::now();
    let events = [
        Event::change("backup.pg", "backup taken")
            .details(json!({"new_bytes": 10, "reused_bytes": 90, "total_bytes": 100, "uploaded_bytes": 12, "duration_seconds": 2.5}))
            .at(now - TimeDelta::hours(2)),
        Event::incident(Severity::S2, "backup.fs.etc", "snapshot failed").at(now - TimeDelta::hours(1)),
        Event::change("retention.prune", "pruned").details(json!({"bytes_reclaimed": 5})),
        Event::change("verify", "verify ok").details(json!({"objects_checked": 3, "bytes_read": 300, "corruptions": 0, "oldest_verified_age_seconds": 60})),
        Event::change("drill.monthly-rad", "drill passed").details(json!({
            "passed": true, "rpo_seconds": 2.0, "rto_seconds": 4.0,
            "checks": [{"check": "checksums", "status": "passed"}, {"check": "sql:rows", "status": "passed"}]
        })),
    ];
    m.observe_events(&events, now);
    m.task_configured("backup.pg");
    let drill: crate::drill::DrillDefinition =
        toml::from_str("name = \"monthly-rad\"\n[checks]\nrpo = { max = \"5m\" }\n").expect("drill definition");
    m.drill_configured(&drill);
    m.source_up(true);
    m.archive_measured(2, 30.0);
    m.archive_failures(1);
    m.heartbeat(1.0);
    m.sink_backlog("webhook", 0);
    m.config_reloaded(true);
    m
}

#[test]
fn readme_table_lists_every_metric_with_its_type_and_labels() {
    let rendered = rendered_families(&observed().render());
    let documented = readme_families();
    let undocumented: Vec<_> = rendered.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&rendered).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "README metrics table differs from /metrics:\n rendered, not in README: {undocumented:?}\n in README, not rendered: {stale:?}"
    );
    for (name, kind, labels) in &rendered {
        assert!(
            !labels.iter().any(|l| l == "job" || l == "instance"),
            "{name} uses a label Prometheus reserves for targets"
        );
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name}: counters and only counters end in _total");
    }
}

#[test]
fn task_series_come_from_events_and_counters_only_grow() {
    let m = observed();
    let text = m.render();
    for series in [
        "radd_last_success_timestamp_seconds{task=\"backup.pg\"}",
        "radd_backup_bytes{kind=\"new\",task=\"backup.pg\"} 10",
        "radd_drill_check_passed{check=\"sql\",drill=\"monthly-rad\"} 1",
        "radd_drill_rpo_objective_seconds{drill=\"monthly-rad\"} 300",
        "radd_task_failures_total{task=\"backup.fs.etc\"} 1",
        "radd_incidents_total{severity=\"S2\"} 1",
        "radd_incidents_total{severity=\"S1\"} 0",
        "radd_task_configured{task=\"drill.monthly-rad\"} 1",
        "radd_task_failures_total{task=\"drill.monthly-rad\"} 0",
        "radd_build_info{version=\"",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    // Re-observing the same log does not double-count; a longer log raises the counter.
    let failed = Event::incident(Severity::S2, "backup.fs.etc", "failed again");
    let log = [Event::incident(Severity::S2, "backup.fs.etc", "failed"), failed];
    m.observe_events(&log, Utc::now());
    m.observe_events(&log, Utc::now());
    assert!(m.render().contains("radd_task_failures_total{task=\"backup.fs.etc\"} 2"), "{}", m.render());
}

#[test]
fn unmeasured_values_are_absent_not_zero() {
    let m = Metrics::new();
    let text = m.render();
    for name in [
        "radd_archive_lag_seconds",
        "radd_archive_pending_segments",
        "radd_heartbeat_timestamp_seconds",
        "radd_verify_objects",
        "radd_source_up",
    ] {
        assert!(!text.contains(&format!("\n{name} ")), "{name} exported before it was measured:\n{text}");
    }
    m.archive_measured(1, 12.0);
    assert!(m.render().contains("\nradd_archive_lag_seconds 12\n"));
    m.archive_unmeasured();
    m.source_up(false);
    let text = m.render();
    assert!(!text.contains("radd_archive_lag_seconds 0") && !text.contains("\nradd_archive_lag_seconds "), "{text}");
    assert!(text.contains("\nradd_source_up 0\n"), "{text}");
    // A stats reset on the source lowers its count: a counter reset, not a decrease.
    m.archive_failures(5);
    m.archive_failures(2);
    assert!(m.render().contains("\nradd_archive_failures_total 2\n"));
}

#[test]
fn a_drill_that_could_not_run_did_not_pass() {
    let m = Metrics::new();
    m.observe_events(
        &[Event::incident(Severity::S2, "drill.quick", "drill quick could not run: no snapshot")],
        Utc::now(),
    );
    assert!(m.render().contains("radd_drill_passed{drill=\"quick\"} 0"));
}
