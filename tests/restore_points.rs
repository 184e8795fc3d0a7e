//! Named restore points and human time targets (issue 15 items 2 and 5): `radd restore-point`
//! before a "migration", `restore latest --name` back to exactly that point, and `--time` in a
//! zone, echoed as an absolute time; targets outside the window refused before anything is
//! written, with no incident.

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};
use crate::common::setup::{insert_phase, phase_rows};

fn rows(cluster: &radd::pg::ScratchCluster) -> [i64; 3] {
    [phase_rows(cluster, 1), phase_rows(cluster, 2), phase_rows(cluster, 3)]
}

/// No event of kind incident in the log: refusals of the operator's request are not incidents.
fn assert_no_incident(env: &TestEnv) {
    let events = json(&env.radd(&["--json", "events"]));
    let incidents: Vec<_> = events.as_array().expect("events").iter().filter(|e| e["kind"] == "incident").collect();
    assert!(incidents.is_empty(), "a refused request filed an incident: {incidents:#?}");
}

/// `radd restore` into `<tmp>/<name>` must exit 2 naming `needle`, write nothing, file no incident.
fn refused(env: &TestEnv, name: &str, args: &[&str], needle: &str) -> String {
    let target = env.path().join(name);
    let mut all = vec!["restore"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--target", target.to_str().unwrap()]);
    let out = env.radd(&all);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?} must be refused (usage): {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in: {err}");
    assert!(!target.exists(), "{args:?}: a refused restore wrote {}", target.display());
    assert_no_incident(env);
    err
}

#[test]
fn restore_by_name_stops_exactly_at_the_restore_point() {
    let env = TestEnv::new(Backend::S3);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, phase int)");
    insert_phase(&source, 1, 3000);
    let first = env.backup_pg_id();
    insert_phase(&source, 2, 2000);

    let out = env.radd(&["--json", "restore-point", "before-migration"]);
    assert!(out.status.success(), "restore-point: {}", stderr(&out));
    let point = json(&out);
    assert_eq!(point["name"], "before-migration", "{point:#}");
    assert_eq!(point["timeline"], 1, "{point:#}");
    let lsn: radd::pg::Lsn = point["lsn"].as_str().expect("lsn").parse().expect("an LSN");
    assert!(point["by"].as_str().is_some_and(|b| b.contains('@')), "{point:#}");
    // The "migration", and a backup after it: `latest` must not pick that one.
    insert_phase(&source, 3, 1000);
    sql(&source, "ALTER TABLE t ADD COLUMN migrated bool DEFAULT true");
    env.backup_pg_id();
    switch_and_wait_archived(&source);

    // A name with a slash and spaces is stored under one key and listed as written.
    let odd = env.radd(&["restore-point", "deploy 2.0/rc"]);
    assert!(odd.status.success(), "{}", stderr(&odd));
    let again = env.radd(&["restore-point", "before-migration"]);
    assert_eq!(again.status.code(), Some(2), "a taken name is refused: {}", stderr(&again));
    assert!(
        stderr(&again).contains("exists already") && stderr(&again).contains(&lsn.to_string()),
        "{}",
        stderr(&again)
    );
    for bad in ["", &"x".repeat(64), "tab\there"] {
        let out = env.radd(&["restore-point", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("is not usable"), "{bad:?}: {}", stderr(&out));
    }

    let info = json(&env.radd(&["--json", "info"]));
    let names: Vec<&str> = info["restore_points"]
        .as_array()
        .expect("restore_points")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before-migration", "deploy 2.0/rc"], "{info:#}");
    assert_eq!(info["restore_points"][0]["lsn"], point["lsn"], "{info:#}");
    let text = String::from_utf8_lossy(&env.radd(&["info"]).stdout).into_owned();
    assert!(
        text.contains("restore points:") && text.contains("before-migration") && text.contains(&lsn.to_string()),
        "{text}"
    );

    let unknown =
        refused(&env, "unknown", &["latest", "--name", "before-migraton"], "no restore point \"before-migraton\"");
    assert!(unknown.contains("before-migration, deploy 2.0/rc"), "the known names are listed: {unknown}");

    let target = env.path().join("by-name");
    let out =
        env.radd(&["--json", "restore", "latest", "--name", "before-migration", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "restore --name: {}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["snapshot_id"], first.as_str(), "the backup after the point cannot reach it: {report:#}");
    assert_eq!(report["restore_point"]["lsn"], point["lsn"], "{report:#}");
    assert_eq!(report["target_time"], point["time"], "{report:#}");
    assert_eq!(report["recovery_target"], "restore point before-migration", "{report:#}");
    let auto_conf = std::fs::read_to_string(target.join("postgresql.auto.conf")).expect("auto conf");
    assert!(auto_conf.contains("recovery_target_name = 'before-migration'"), "{auto_conf}");
    let cluster = env.restore_and_start_dir(&target, "by-name");
    assert_eq!(rows(&cluster), [3000, 2000, 0], "exactly the rows before the point");
    assert_eq!(
        sql(
            &cluster,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'migrated'"
        ),
        "0"
    );

    let events = json(&env.radd(&["--json", "events"]));
    let created = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "restore-point")
        .cloned()
        .expect("a restore-point event");
    assert_eq!(created["kind"], "change", "{created:#}");
    assert_eq!(created["details"]["name"], "before-migration", "{created:#}");
}

#[test]
fn human_times_restore_in_a_zone_and_outside_the_window_are_refused() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, phase int)");
    insert_phase(&source, 1, 3000);
    env.backup_pg_id();
    insert_phase(&source, 2, 2000);
    // One instant, written in Kolkata's local time (UTC+05:30, no summer time) and in UTC.
    let both = sql(
        &source,
        "WITH n AS (SELECT clock_timestamp() AS t) SELECT to_char(t AT TIME ZONE 'Asia/Kolkata', 'YYYY-MM-DD HH24:MI:SS.US') \
         || '|' || to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM n",
    );
    let (kolkata, utc) = both.split_once('|').expect("two times");
    insert_phase(&source, 3, 1000);
    switch_and_wait_archived(&source);

    let local = format!("{kolkata} Asia/Kolkata");
    let target = env.path().join("by-zone");
    let out = env.radd(&["--json", "restore", "latest", "--time", &local, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "restore --time {local:?}: {}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["target_time"], utc, "the target is echoed as an absolute UTC time: {report:#}");
    let cluster = env.restore_and_start_dir(&target, "by-zone");
    assert_eq!(rows(&cluster), [3000, 2000, 0]);

    let late = refused(&env, "now", &["latest", "--time", "now"], "past the end of the archive");
    assert!(late.contains("restorable window"), "{late}");
    let early = refused(&env, "long-ago", &["latest", "--time", "3650d ago"], "before the oldest backup");
    // The window named is the one `radd info` shows.
    let info = json(&env.radd(&["--json", "info"]));
    let window = &info["timelines"][0];
    for field in ["restorable_from_lsn", "restorable_to_lsn", "newest_wal", "restorable_from"] {
        let value = window[field].as_str().unwrap_or_else(|| panic!("info lacks {field}: {info:#}"));
        assert!(early.contains(value), "the refusal names the window's {field} {value}: {early}");
    }
    let bad = refused(&env, "bad", &["latest", "--time", "yesterday-ish"], "cannot read the time");
    assert!(bad.contains("yesterday 14:05") && bad.contains("2h ago"), "the accepted forms are named: {bad}");
}
