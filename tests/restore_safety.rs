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
        let source = env.source_cluster();
        sql(&source, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
        let backup = env.radd_push(&["backup", "pg"]);
        assert!(backup.status.success(), "backup: {}", stderr(&backup));
        switch_and_wait_archived(&source);

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
        let archive_command = format!("'{}' --config '{}' wal-push %p", crate::common::env::radd_binary().display(), env.push_config.display());
        let new_primary = start_copy(&env, &primary, "new-primary", &[("archive_mode", "on".into()), ("archive_command", archive_command)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while history_files(&env).is_empty() {
            assert!(std::time::Instant::now() < deadline, "--archive: the promoted copy archived no history file");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(history_files(&env), vec!["00000002.history".to_owned()]);

        let both = env.radd(&["restore", "latest", "--archive", "--no-archive", "--target", "/nonexistent/x"]);
        assert_eq!(both.status.code(), Some(2), "--archive with --no-archive is a usage error: {}", stderr(&both));
        let _ = json;
    }
}
