//! Restores that cannot hurt production: a restored copy started beside production does not
//! archive into production's repository unless `--archive` asks for it (issue 12, item 3).

use std::path::Path;
use std::time::Duration;

use crate::common::env::{Backend, TestEnv, block_on, json, sql, stderr, switch_and_wait_archived};

/// Starts the restored directory `target` (restored without `--archive`) and waits for promotion.
fn start_copy(env: &TestEnv, target: &Path, name: &str, settings: &[(&str, String)]) -> radd::pg::ScratchCluster {
    let work = env.path().join(format!("{name}-run"));
    std::fs::create_dir(&work).expect("create run dir");
    let mut copy = radd::pg::ScratchCluster::new(env.pg_bin(), &work).expect("scratch cluster").with_data_dir(target);
    copy.start(settings, &env.env).expect("start the restored copy");
    block_on(copy.wait_promoted(Duration::from_secs(120))).expect("restored copy promotes");
    copy
}

fn history_files(env: &TestEnv) -> Vec<String> {
    let wal = env.local_object("wal");
    let mut found = Vec::new();
    for dir in std::fs::read_dir(&wal).expect("wal dir").filter_map(Result::ok) {
        for file in std::fs::read_dir(dir.path()).expect("timeline dir").filter_map(Result::ok) {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".history") {
                found.push(name);
            }
        }
    }
    found
}

crate::pg_matrix! {
    /// A copy restored without flags writes and switches WAL: nothing of its timeline reaches the
    /// repository. With `--archive` the copy's timeline history is archived (it became a primary).
    fn restored_copy_does_not_archive_by_default(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        let _source = env.source_with_backup(1000);

        let target = env.path().join("copy");
        let out = env.radd(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert!(out.status.success(), "restore: {}", stderr(&out));
        let auto_conf = std::fs::read_to_string(target.join("postgresql.auto.conf")).expect("auto conf");
        assert!(auto_conf.contains("archive_mode = 'off'"), "{auto_conf}");
        let copy = start_copy(&env, &target, "copy", &[]);
        sql(&copy, "INSERT INTO t VALUES (-1)");
        sql(&copy, "SELECT pg_switch_wal()");
        assert_eq!(sql(&copy, "SHOW archive_mode"), "off");
        assert_eq!(sql(&copy, "SELECT count(*) FROM pg_stat_archiver WHERE archived_count > 0"), "0");
        assert!(history_files(&env).is_empty(), "the copy archived a timeline: {:?}", history_files(&env));
        drop(copy);

        let primary = env.path().join("new-primary");
        let out = env.radd(&["restore", "latest", "--archive", "--target", primary.to_str().unwrap()]);
        assert!(out.status.success(), "restore --archive: {}", stderr(&out));
        let auto_conf = std::fs::read_to_string(primary.join("postgresql.auto.conf")).expect("auto conf");
        assert!(!auto_conf.contains("archive_mode"), "--archive keeps the source's archiving: {auto_conf}");
        // The harness's source archives through command-line settings; a new primary is started the same way.
        let archive_command = env.archive_command();
        let _new_primary = start_copy(&env, &primary, "new-primary", &[("archive_mode", "on".into()), ("archive_command", archive_command)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while history_files(&env).is_empty() {
            assert!(std::time::Instant::now() < deadline, "--archive: the promoted copy archived no history file");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(history_files(&env), vec!["00000002.history".to_owned()]);

        let both = env.radd(&["restore", "latest", "--archive", "--no-archive", "--target", "/nonexistent/x"]);
        assert_eq!(both.status.code(), Some(2), "--archive with --no-archive is a usage error: {}", stderr(&both));
    }
}

const TIMELINE_DRILL: &str = r#"
name = "timelines"
snapshot = "latest"
[target]
recovery = "latest"
[scratch]
timeout = "3m"
[checks]
page_integrity = false
"#;

fn row_ids(cluster: &radd::pg::ScratchCluster) -> String {
    sql(cluster, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id < 0 OR id > 1000")
}

crate::pg_matrix! {
    /// A copy restored with `--archive` beside a production that keeps running: the copy archives
    /// its timeline 2 (history file and a segment), production goes on archiving timeline 1. The
    /// fork diverged: `verify` reports it, `restore latest` refuses to follow it (nothing
    /// written), `--timeline 1` gives production's rows and `--timeline 2` the copy's, and a
    /// drill fails its `timeline` check with an incident.
    fn a_diverged_timeline_is_reported_and_not_followed(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        let source = env.source_with_backup(1000);

        let copy_dir = env.path().join("copy");
        let out = env.radd(&["restore", "latest", "--archive", "--target", copy_dir.to_str().unwrap()]);
        assert!(out.status.success(), "restore --archive: {}", stderr(&out));
        let archive_command = env.archive_command();
        let copy = start_copy(&env, &copy_dir, "copy", &[("archive_mode", "on".into()), ("archive_command", archive_command)]);
        sql(&copy, "INSERT INTO t VALUES (-1)");
        switch_and_wait_archived(&copy);
        assert_eq!(history_files(&env), vec!["00000002.history".to_owned()]);
        drop(copy);
        // Production did not stop: a later commit, archived on timeline 1 after the fork.
        sql(&source, "INSERT INTO t VALUES (2001)");
        switch_and_wait_archived(&source);
        switch_and_wait_archived(&source);

        let verify = env.radd(&["--json", "verify"]);
        assert_eq!(verify.status.code(), Some(3), "verify must fail on a diverged timeline: {}", stderr(&verify));
        let report: serde_json::Value = serde_json::from_slice(&verify.stdout).expect("verify JSON");
        let problems = report["problems"].as_array().expect("problems");
        let timeline = problems.iter().find(|p| p["kind"] == "timeline").unwrap_or_else(|| panic!("no timeline problem: {report:#}"));
        assert_eq!(timeline["object"], "wal/00000002/00000002.history");
        assert!(timeline["detail"].as_str().unwrap().contains("timeline 2 branched off timeline 1"), "{timeline}");

        let refused = env.path().join("refused");
        let out = env.radd(&["restore", "latest", "--target", refused.to_str().unwrap()]);
        assert!(!out.status.success(), "restore latest must refuse a diverged timeline");
        assert!(stderr(&out).contains("--timeline 1"), "{}", stderr(&out));
        assert!(!refused.exists(), "a refused restore wrote its target");

        let production = env.restore_and_start("latest", "tl1", &["--timeline", "1"]);
        assert_eq!(row_ids(&production), "2001", "timeline 1 has production's later commit and not the copy's row");
        drop(production);
        let fork = env.restore_and_start("latest", "tl2", &["--timeline", "2"]);
        assert_eq!(row_ids(&fork), "-1", "timeline 2 is the copy's");
        drop(fork);
        let out = env.radd(&["restore", "latest", "--timeline", "7", "--target", env.path().join("tl7").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "an unknown timeline is a usage error: {}", stderr(&out));

        std::fs::write(env.path().join("drills/timelines.toml"), TIMELINE_DRILL).expect("write drill");
        let out = env.radd(&["--json", "drill", "run", "timelines"]);
        assert_eq!(out.status.code(), Some(4), "the drill fails: {}", stderr(&out));
        let drill: serde_json::Value = serde_json::from_slice(&out.stdout).expect("drill JSON");
        let check = drill["checks"].as_array().unwrap().iter().find(|c| c["check"] == "timeline").cloned().expect("timeline check");
        assert_eq!(check["status"], "failed", "{drill:#}");
        let events = json(&env.radd(&["--json", "events"]));
        let last = events.as_array().and_then(|e| e.last()).cloned().expect("drill event");
        assert_eq!(last["kind"], "incident", "{last:#}");
    }
}
