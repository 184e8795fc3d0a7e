//! Base backup → more writes → restore to latest and to a PITR target, on every backend.

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};
use crate::common::setup::phase_rows;

/// The flow the issue asks for: every row written before the target is restored, none after.
fn backup_then_restore_latest_and_pitr(env: TestEnv) {
    let backend = env.backend;
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, phase int, payload text)");
    sql(&source, "INSERT INTO t (phase, payload) SELECT 1, md5(g::text) FROM generate_series(1, 5000) g");

    let backup = env.backup_pg();
    let snapshot = backup["snapshot_id"].as_str().expect("snapshot id").to_owned();
    assert!(backup["files"].as_u64().unwrap() > 500, "{backup}");

    sql(&source, "INSERT INTO t (phase, payload) SELECT 2, md5(g::text) FROM generate_series(1, 3000) g");
    let pitr_lsn = sql(&source, "SELECT pg_current_wal_lsn()");
    let pitr_time = sql(&source, "SELECT clock_timestamp()");
    sql(&source, "INSERT INTO t (phase, payload) SELECT 3, md5(g::text) FROM generate_series(1, 2000) g");
    switch_and_wait_archived(&source);

    let listed = json(&env.radd_push(&["--json", "snapshots"]));
    assert_eq!(listed.as_array().expect("array").len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], snapshot.as_str());

    let latest = env.restore_and_start("latest", "latest", &[]);
    assert_eq!((phase_rows(&latest, 1), phase_rows(&latest, 2), phase_rows(&latest, 3)), (5000, 3000, 2000));
    drop(latest);

    let by_lsn = env.restore_and_start(&snapshot, "pitr-lsn", &["--lsn", &pitr_lsn]);
    assert_eq!((phase_rows(&by_lsn, 1), phase_rows(&by_lsn, 2), phase_rows(&by_lsn, 3)), (5000, 3000, 0));
    drop(by_lsn);

    if backend == Backend::Local {
        let by_time = env.restore_and_start(&snapshot[..10], "pitr-time", &["--time", &pitr_time]);
        assert_eq!((phase_rows(&by_time, 1), phase_rows(&by_time, 2), phase_rows(&by_time, 3)), (5000, 3000, 0));
    }

    // Pushing a segment that is already archived (same content) succeeds: idempotent.
    let segment = source.data_dir().join("pg_wal").join(backup_start_segment(&env, &snapshot));
    if segment.exists() {
        let again = env.radd_push(&["wal-push", segment.to_str().unwrap()]);
        assert!(again.status.success(), "re-push failed: {}", stderr(&again));
    }
}

fn backup_start_segment(env: &TestEnv, snapshot: &str) -> String {
    let listed = json(&env.radd_push(&["--json", "snapshots"]));
    let record = listed.as_array().unwrap().iter().find(|s| s["id"] == snapshot).expect("snapshot listed").clone();
    let lsn: radd::pg::Lsn = record["pg"]["start_lsn"].as_str().unwrap().parse().unwrap();
    let tli = radd::pg::Timeline(record["pg"]["timeline"].as_u64().unwrap() as u32);
    radd::pg::WalFileName::segment_for(tli, lsn, radd::pg::SegmentSize::DEFAULT).to_name(radd::pg::SegmentSize::DEFAULT)
}

crate::pg_matrix! {
    /// Backup, restore to latest, to an LSN and to a time on every PostgreSQL version.
    fn backup_and_restore_local(pg) {
        backup_then_restore_latest_and_pitr(TestEnv::with_pg(Backend::Local, pg));
    }
}

#[test]
fn backup_and_restore_s3() {
    backup_then_restore_latest_and_pitr(TestEnv::new(Backend::S3));
}

/// Acceptance: a second backup of an unchanged ~100 MB cluster uploads < 5% of the first.
#[test]
fn second_backup_of_unchanged_cluster_uploads_almost_nothing() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    let pgbench = std::process::Command::new(env.pg.program("pgbench"))
        .args([
            "-i",
            "-s",
            "7",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &source.port().to_string(),
            "postgres",
        ])
        .output()
        .expect("run pgbench");
    assert!(pgbench.status.success(), "pgbench -i failed: {}", stderr(&pgbench));
    sql(&source, "VACUUM FREEZE");
    sql(&source, "CHECKPOINT");
    // The unchanged-file shortcut only trusts files last modified more than a second before
    // the parent backup started (a timestamp rule, so this one wait is the point of the test).
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let first = env.backup_pg();
    let second = env.backup_pg();
    let full = json(&env.radd_push(&["--json", "backup", "pg", "--full-read"]));
    eprintln!(
        "incremental: second backup read {} of {} files ({} B); --full-read read {} files",
        second["files_read"], second["files"], second["read_bytes"], full["files_read"]
    );
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert!(second["files_unchanged"].as_u64().unwrap() > 0, "{second}");
    assert!(
        second["read_bytes"].as_u64().unwrap() * 10 < first["read_bytes"].as_u64().unwrap(),
        "unchanged files were re-read: {second}"
    );
    assert_eq!(full["files_unchanged"], 0, "--full-read must read everything: {full}");
    assert_eq!(full["files_read"], full["files"]);
    let total = first["total_bytes"].as_u64().unwrap();
    let up1 = first["uploaded_bytes"].as_u64().unwrap();
    let up2 = second["uploaded_bytes"].as_u64().unwrap();
    let new2 = second["new_bytes"].as_u64().unwrap();
    eprintln!("dedup: cluster {total} B; first backup uploaded {up1} B; second uploaded {up2} B ({new2} B new)");
    assert!(total > 100_000_000, "cluster should be > 100 MB, is {total}");
    assert!(up2 * 20 < up1, "second backup uploaded {up2} bytes, first {up1}: not < 5%");
    assert!(new2 * 20 < total, "second backup had {new2} new bytes of {total}");
    assert!(second["reused_bytes"].as_u64().unwrap() > total * 9 / 10, "{second}");

    // And the deduplicated second snapshot restores to the same data.
    switch_and_wait_archived(&source);
    let restored = env.restore_and_start(second["snapshot_id"].as_str().unwrap(), "second", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM pgbench_accounts"), "700000");
    drop(restored);

    // Scattered page changes in the 90 MB accounts table: the incremental stores the changed
    // 8 KiB pages and a patch of the table's block list, not the whole list again.
    let bench = std::process::Command::new(env.pg.program("pgbench"))
        .args(["-n", "-t", "300", "-h", "127.0.0.1", "-U", "postgres", "-p", &source.port().to_string(), "postgres"])
        .output()
        .expect("run pgbench");
    assert!(bench.status.success(), "pgbench failed: {}", stderr(&bench));
    sql(&source, "CHECKPOINT");
    let third = env.backup_pg();
    let up3 = third["uploaded_bytes"].as_u64().unwrap();
    eprintln!("incremental after 300 transactions: uploaded {up3} B, read {} B", third["read_bytes"]);
    assert!(third["read_bytes"].as_u64().unwrap() > 80_000_000, "the changed accounts table is read: {third}");
    assert!(up3 < 1_500_000, "300 transactions must not re-upload block lists or whole blocks: {up3} B");
    let balance = sql(&source, "SELECT sum(abalance) FROM pgbench_accounts");
    switch_and_wait_archived(&source);

    // The first snapshots go; the patched lists' bases stay for the snapshot that uses them.
    let third_id = third["snapshot_id"].as_str().unwrap();
    assert!(env.radd(&["forget", "--keep-last", "1"]).status.success());
    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    assert!(env.radd(&["prune"]).status.success());
    let pruned = json(&env.radd(&["--json", "prune", "--now", &later]));
    assert!(pruned["packs_deleted"].as_u64().unwrap() > 0, "{pruned:#}");
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let restored = env.restore_and_start(third_id, "third", &["--immediate"]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM pgbench_accounts"), "700000");
    assert_eq!(sql(&restored, "SELECT sum(abalance) FROM pgbench_accounts"), balance, "every changed page came back");
}
