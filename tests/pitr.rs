//! Point-in-time restores that pick the right backup and say where the window is (issue 12,
//! item 4), and `--allow-gap` restores that end before the gap and record the loss (item 5).

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};
use crate::common::setup::{insert_phase, phase_rows};

fn phases(cluster: &radd::pg::ScratchCluster) -> [i64; 4] {
    [phase_rows(cluster, 1), phase_rows(cluster, 2), phase_rows(cluster, 3), phase_rows(cluster, 4)]
}

/// Runs `radd restore` with `args` into `<tmp>/<name>`; asserts a usage refusal (exit 2)
/// whose message contains `needle`, and that nothing was written.
fn refused(env: &TestEnv, name: &str, args: &[&str], needle: &str) {
    let target = env.path().join(name);
    let mut all = vec!["restore"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--target", target.to_str().unwrap()]);
    let out = env.radd(&all);
    assert_eq!(out.status.code(), Some(2), "{args:?} must be refused as outside the window: {}", stderr(&out));
    assert!(stderr(&out).contains(needle), "{args:?}: expected {needle:?} in: {}", stderr(&out));
    assert!(!target.exists(), "{args:?}: a refused restore wrote {}", target.display());
}

crate::pg_matrix! {
    /// Two backups with a target between them: `latest --time T` and `latest --lsn L` restore
    /// the older one (the newer was taken after T and cannot go back); a target before the
    /// oldest backup, past the end of the archive, or before an explicit snapshot is refused
    /// before anything is written, naming the window.
    fn pitr_picks_the_newest_snapshot_consistent_before_the_target(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        let source = env.source_cluster();
        sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, phase int)");
        insert_phase(&source, 1, 3000);
        let first = env.backup_pg_id();
        insert_phase(&source, 2, 2000);
        let lsn = sql(&source, "SELECT pg_current_wal_lsn()");
        let time = sql(&source, "SELECT clock_timestamp()");
        insert_phase(&source, 3, 1000);
        let second = env.backup_pg_id();
        insert_phase(&source, 4, 500);
        switch_and_wait_archived(&source);

        for (name, args) in [("by-time", ["--time", time.as_str()]), ("by-lsn", ["--lsn", lsn.as_str()])] {
            let target = env.path().join(name);
            let out = env.radd(&["--json", "restore", "latest", args[0], args[1], "--target", target.to_str().unwrap()]);
            let report = json(&out);
            assert_eq!(report["snapshot_id"], first.as_str(), "{name}: the backup taken after the target cannot reach it: {report:#}");
            let cluster = env.restore_and_start_dir(&target, name);
            assert_eq!(phases(&cluster), [3000, 2000, 0, 0], "{name}");
        }

        refused(&env, "too-early", &["latest", "--time", "2001-01-01 00:00:00+00"], "before the oldest backup");
        refused(&env, "too-late", &["latest", "--time", "2999-01-01T00:00:00Z"], "past the end of the archive");
        refused(&env, "lsn-too-late", &["latest", "--lsn", "FFFF/0"], "past the end of the archive");
        refused(&env, "explicit-too-early", &[&second, "--time", &time], "became consistent after");
        refused(&env, "bad-time", &["latest", "--time", "yesterday-ish"], "cannot read the time");
    }
}

crate::pg_matrix! {
    /// A segment deleted after the consistency point: without `--allow-gap` the restore is
    /// refused; with it the restored cluster stops before the gap, promotes, holds exactly the
    /// rows archived before it, and the restore event records the lost LSN range.
    fn allow_gap_restores_up_to_the_gap_and_records_the_loss(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        let source = env.source_cluster();
        sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, phase int)");
        insert_phase(&source, 1, 3000);
        let snapshot = env.backup_pg_id();
        insert_phase(&source, 2, 2000);
        switch_and_wait_archived(&source);
        insert_phase(&source, 3, 1000);
        switch_and_wait_archived(&source);
        insert_phase(&source, 4, 500);
        switch_and_wait_archived(&source);
        let victim = env.delete_wal_before_last();

        let target = env.path().join("gap");
        let out = env.radd(&["restore", &snapshot, "--target", target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "a gap without --allow-gap is refused: {}", stderr(&out));
        assert!(!target.exists());

        let out = env.radd(&["--json", "restore", &snapshot, "--allow-gap", "--target", target.to_str().unwrap()]);
        let report = json(&out);
        assert_eq!(report["accepted_loss"]["first_missing"], victim.as_str(), "{report:#}");
        let auto_conf = std::fs::read_to_string(target.join("postgresql.auto.conf")).expect("auto conf");
        assert!(auto_conf.contains(&format!("--end-before {victim}")), "{auto_conf}");
        let cluster = env.restore_and_start_dir(&target, "gap");
        assert_eq!(phases(&cluster), [3000, 2000, 0, 0], "recovery stops before the missing segment");
        assert_eq!(sql(&cluster, "SELECT pg_is_in_recovery()"), "f", "promoted at the gap");

        let events = json(&env.radd(&["--json", "events"]));
        let last = events.as_array().and_then(|e| e.last()).cloned().expect("a restore event");
        assert_eq!(last["source"], "restore", "{last:#}");
        let loss = &last["details"]["accepted_loss"];
        assert_eq!(loss["first_missing"], victim.as_str(), "{last:#}");
        let from: radd::pg::Lsn = loss["from_lsn"].as_str().expect("from").parse().expect("lsn");
        let to: radd::pg::Lsn = loss["to_lsn"].as_str().expect("to").parse().expect("lsn");
        assert!(from < to, "{loss}");
    }
}
