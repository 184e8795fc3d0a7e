//! `radd info` (issue 14 item 4): the restorable window per timeline, backups with sizes and
//! durations, each drill's last result — from a real cluster, its archive and a drill run.

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};

#[test]
fn info_shows_the_window_backups_and_drills() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g");
    let backup = env.backup_pg();
    let newest = switch_and_wait_archived(&source);
    let tree = env.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"data").unwrap();
    assert!(env.radd_push(&["backup", "fs", tree.to_str().unwrap()]).status.success());
    std::fs::write(
        env.path().join("drills/quick-fs.toml"),
        "name = \"quick-fs\"\nkind = \"fs\"\nsnapshot = \"latest\"\n",
    )
    .unwrap();
    let drill = env.radd(&["drill", "run", "quick-fs"]);
    assert!(drill.status.success(), "{}", stderr(&drill));

    let out = env.radd(&["--json", "info"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = json(&out);
    let timeline = &info["timelines"][0];
    assert_eq!(timeline["timeline"], 1, "{info:#}");
    assert_eq!(timeline["backups"], 1);
    assert_eq!(timeline["oldest_backup_start_lsn"], backup["start_lsn"], "{info:#}");
    assert!(timeline["newest_wal"].as_str().unwrap() >= newest.as_str(), "{info:#}");
    assert!(timeline["newest_wal_age_seconds"].as_i64().unwrap() < 600);
    let backups = info["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2);
    assert!(
        backups.iter().all(|b| b["duration_seconds"].as_f64().is_some_and(|d| d >= 0.0)
            && b["total_bytes"].as_u64().unwrap() > 0),
        "{info:#}"
    );
    // Both times to the millisecond (RFC 3339, UTC, same width), so they compare as strings: a
    // record whose `finished` was truncated to the second could read before its `started`.
    for b in backups {
        let (started, finished) = (b["started"].as_str().unwrap(), b["finished"].as_str().unwrap());
        assert_eq!(started.len(), finished.len(), "{info:#}");
        assert!(finished >= started, "{info:#}");
    }
    assert_eq!(info["drills"][0]["drill"], "quick-fs");
    assert_eq!(info["drills"][0]["passed"], true);

    let text = env.radd(&["info"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("timeline 1: restorable from") && text.contains("quick-fs"), "{text}");
}
