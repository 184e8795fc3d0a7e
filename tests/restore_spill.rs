//! Issue 16 item 1 (restore side): a restore whose plan is larger than its memory bound spills
//! the placements to a temporary file and merges them back; forced here with
//! `RADD_RESTORE_SPILL_PLACEMENTS=1000` on a cluster of many more chunks, every row comes back
//! and nothing is left beside the target.

use crate::common::env::{Backend, TestEnv, sql, stderr, switch_and_wait_archived};

#[test]
fn a_restore_with_its_plan_spilled_to_disk_brings_back_every_row() {
    let mut env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, payload text NOT NULL)");
    sql(&source, "INSERT INTO t SELECT g, g % 97, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g");
    let backup = env.backup_pg();
    let snapshot = backup["snapshot_id"].as_str().expect("snapshot id").to_owned();
    let (rows, sum) = (sql(&source, "SELECT count(*) FROM t"), sql(&source, "SELECT sum(v) FROM t"));
    switch_and_wait_archived(&source);

    env.env.push(("RADD_RESTORE_SPILL_PLACEMENTS".into(), "1000".into()));
    env.env.push(("RUST_LOG".into(), "radd::restore=debug".into()));
    let parent = env.path().join("spill-parent");
    std::fs::create_dir(&parent).unwrap();
    let target = parent.join("restored");
    let out = env.radd(&["--json", "restore", &snapshot, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    let log = stderr(&out);
    let runs: usize = log
        .lines()
        .find(|l| l.contains("restore plan spilled to disk"))
        .and_then(|l| l.split("runs=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("the plan spilled: {log}"));
    // The cluster's files hold several thousand chunks: several runs to merge.
    assert!(runs >= 3, "several runs of 1000 placements: {runs}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("restore report");
    assert_eq!(report["packs_read"], report["packs_distinct"], "each pack read once: {report:#}");
    let left: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["restored"], "nothing but the target is left beside it");

    env.env.retain(|(k, _)| !k.starts_with("RADD_RESTORE") && k != "RUST_LOG");
    let restored = env.restore_and_start_dir(&target, "restored");
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), rows);
    assert_eq!(sql(&restored, "SELECT sum(v) FROM t"), sum);
    assert_eq!(sql(&restored, "SELECT count(*) FROM t WHERE payload <> repeat(md5(id::text), 3)"), "0");
}
