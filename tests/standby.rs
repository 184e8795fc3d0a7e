//! Base backups from a streaming standby (issue 12, item 7): the primary archives through radd,
//! a real standby streams from it (`pg_basebackup -R`), `[postgres]` points at the standby and
//! `[postgres.primary]` at the primary. The backup runs the backup API on the standby, the
//! primary switches WAL, and a restore of it brings back every row without ever streaming from
//! the primary. Without `[postgres.primary]` the backup fails in seconds saying what to add.

use std::time::{Duration, Instant};

use radd::pg::ScratchCluster;

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};
use crate::common::setup::phase_rows;

fn insert(primary: &ScratchCluster, phase: i32, count: u32) {
    sql(
        primary,
        &format!("INSERT INTO t (phase, payload) SELECT {phase}, md5(g::text) FROM generate_series(1, {count}) g"),
    );
}

/// A streaming standby of `primary` under `<tmp>/standby`, started and accepting read queries.
fn start_standby(env: &TestEnv, primary: &ScratchCluster) -> ScratchCluster {
    let work = env.path().join("standby");
    std::fs::create_dir(&work).expect("create standby dir");
    let mut standby = primary.base_backup(&work).expect("pg_basebackup -R from the primary");
    assert!(standby.data_dir().join("standby.signal").exists(), "pg_basebackup -R writes standby.signal");
    standby.start(&[("fsync", "off".into())], &env.env).expect("start standby");
    assert_eq!(sql(&standby, "SELECT pg_is_in_recovery()"), "t", "the copy runs as a standby");
    standby
}

/// Waits until the standby has replayed everything the primary has written so far.
fn wait_replayed(primary: &ScratchCluster, standby: &ScratchCluster) {
    let lsn = sql(primary, "SELECT pg_current_wal_lsn()");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sql(standby, &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")) != "t" {
        assert!(
            Instant::now() < deadline,
            "standby did not replay {lsn} within 60 s; see {}",
            standby.log_file().display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Points `[postgres]` of both configs at the standby (replacing the section the harness
/// appended) and, when given, `[postgres.primary]` at `primary`.
fn point_configs_at(env: &TestEnv, standby: &ScratchCluster, primary: Option<&ScratchCluster>) {
    for config in [&env.push_config, &env.config] {
        let text = std::fs::read_to_string(config).expect("read config");
        let head = text.split("\n[postgres]\n").next().expect("config text");
        let mut section = format!(
            "\n[postgres]\nhost = \"127.0.0.1\"\nport = {}\ndata_dir = \"{}\"\nbin_dir = \"{}\"\n",
            standby.port(),
            standby.data_dir().display(),
            env.pg_bin().display()
        );
        if let Some(primary) = primary {
            section.push_str(&format!("\n[postgres.primary]\nhost = \"127.0.0.1\"\nport = {}\n", primary.port()));
        }
        std::fs::write(config, format!("{head}{section}")).expect("write config");
    }
}

crate::pg_matrix! {
    /// Two backups from the standby (the second with the first as its parent), more writes on the
    /// primary, then each restored to latest and started: every row, no streaming from production.
    fn backup_from_standby_restores_every_row(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        let primary = env.source_cluster();
        sql(&primary, "CREATE TABLE t (id serial PRIMARY KEY, phase int, payload text)");
        insert(&primary, 1, 5000);
        let standby = start_standby(&env, &primary);
        point_configs_at(&env, &standby, Some(&primary));
        insert(&primary, 2, 3000);
        wait_replayed(&primary, &standby);
        assert_eq!(phase_rows(&standby, 2), 3000, "the standby streams from the primary");

        let first = env.backup_pg();
        assert_eq!(first["from_standby"], true, "{first:#}");
        assert!(first["files"].as_u64().expect("files") > 500, "{first:#}");
        insert(&primary, 3, 2000);
        wait_replayed(&primary, &standby);
        let second = env.backup_pg();
        assert_eq!(second["from_standby"], true, "{second:#}");
        assert_eq!(second["parent"], first["snapshot_id"], "the parent record serves standby backups too: {second:#}");
        insert(&primary, 4, 1000);
        switch_and_wait_archived(&primary);

        let listed = json(&env.radd_push(&["--json", "snapshots"]));
        let listed = listed.as_array().expect("array");
        assert_eq!(listed.len(), 2, "{listed:#?}");
        for record in listed {
            assert_eq!(record["pg"]["from_standby"], true, "{record:#}");
            let data_dir = record["pg"]["data_dir"].as_str().expect("data_dir");
            assert!(data_dir.ends_with("standby/data"), "read from the standby's data directory: {data_dir}");
        }
        let events = json(&env.radd_push(&["--json", "events"]));
        let backups: Vec<_> = events.as_array().expect("array").iter().filter(|e| e["source"] == "backup.pg").collect();
        assert_eq!(backups.len(), 2, "{events:#}");
        assert!(backups.iter().all(|e| e["kind"] == "change" && e["details"]["from_standby"] == true), "{backups:#?}");

        for (name, snapshot) in [("from-first", &first), ("from-second", &second)] {
            let id = snapshot["snapshot_id"].as_str().expect("snapshot id");
            let restored = env.restore_and_start(id, name, &[]);
            assert_eq!((phase_rows(&restored, 1), phase_rows(&restored, 2), phase_rows(&restored, 3), phase_rows(&restored, 4)), (5000, 3000, 2000, 1000), "{name}");
            let auto_conf = std::fs::read_to_string(restored.data_dir().join("postgresql.auto.conf")).expect("auto conf");
            assert!(auto_conf.contains("primary_conninfo = ''"), "a restored standby backup must not name the primary: {auto_conf}");
            assert!(!restored.data_dir().join("standby.signal").exists(), "{name}: restored as a standby");
            assert_eq!(sql(&restored, "SELECT pg_is_in_recovery()"), "f", "{name}: promoted");
        }
        assert_eq!(sql(&primary, "SELECT count(*) FROM pg_stat_replication"), "1", "only the real standby streams from the primary");

        // The heartbeat cannot be written on the read-only standby: it goes to the primary.
        let beat = env.radd_push(&["heartbeat"]);
        assert!(beat.status.success(), "heartbeat failed: {}", stderr(&beat));
        assert_eq!(sql(&primary, "SELECT count(*) FROM radd.heartbeat"), "1");
    }
}

crate::pg_matrix! {
    /// A standby without `[postgres.primary]` (or with a primary that is not one) fails in
    /// seconds, exit 2, naming the section to add; nothing is committed, an incident is filed, and
    /// once the primary is configured the backup works.
    fn backup_from_standby_without_primary_says_what_to_configure(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        let primary = env.source_cluster();
        sql(&primary, "CREATE TABLE t (id serial PRIMARY KEY, phase int, payload text)");
        insert(&primary, 1, 1000);
        let standby = start_standby(&env, &primary);
        point_configs_at(&env, &standby, None);

        let clock = Instant::now();
        let out = env.radd_push(&["backup", "pg"]);
        let elapsed = clock.elapsed();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "a configuration problem: {err}");
        assert!(elapsed < Duration::from_secs(10), "failed only after {elapsed:?}: {err}");
        assert!(err.contains("is a standby") && err.contains("[postgres.primary]"), "{err}");
        assert_eq!(json(&env.radd_push(&["--json", "snapshots"])).as_array().expect("array").len(), 0);
        let events = json(&env.radd_push(&["--json", "events"]));
        let last = events.as_array().expect("array").last().expect("an event").clone();
        assert_eq!((last["kind"].as_str(), last["source"].as_str()), (Some("incident"), Some("backup.pg")), "{last:#}");
        assert_eq!(last["labels"]["error_type"], "config", "{last:#}");

        // A "primary" that is itself in recovery cannot switch WAL.
        point_configs_at(&env, &standby, Some(&standby));
        let out = env.radd_push(&["backup", "pg"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("[postgres.primary]") && err.contains("in recovery"), "{err}");

        point_configs_at(&env, &standby, Some(&primary));
        let backup = env.backup_pg();
        assert_eq!(backup["from_standby"], true, "{backup:#}");
        let restored = env.restore_and_start("latest", "restored", &[]);
        assert_eq!(phase_rows(&restored, 1), 1000);
    }
}
