//! Issue 13 item 4: a restore reads each pack at most once, however many incrementals lie behind
//! the snapshot (their files alternate between the parents' packs and their own).

use std::path::Path;

use crate::common::env::{Backend, TestEnv, json, noise, sql, switch_and_wait_archived};

/// Small packs, so a snapshot's files spread over many of them.
fn small_packs(env: &TestEnv) {
    for config in [&env.push_config, &env.config] {
        let text =
            std::fs::read_to_string(config).unwrap().replacen("[backup]\n", "[backup]\npack_size = \"1MiB\"\n", 1);
        std::fs::write(config, text).unwrap();
    }
}

fn restore(env: &TestEnv, snapshot: &str, target: &Path) -> serde_json::Value {
    let report = json(&env.radd(&["--json", "restore", snapshot, "--target", target.to_str().unwrap()]));
    let (read, distinct) = (
        report["packs_read"].as_u64().expect("packs_read"),
        report["packs_distinct"].as_u64().expect("packs_distinct"),
    );
    assert_eq!(read, distinct, "every pack the snapshot references is read exactly once: {report:#}");
    report
}

#[test]
fn restore_after_ten_incrementals_reads_each_pack_once() {
    let env = TestEnv::new(Backend::Local);
    small_packs(&env);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, payload text NOT NULL)");
    sql(&source, "INSERT INTO t SELECT g, 0, repeat(md5(g::text), 4) FROM generate_series(1, 40000) g");
    let mut last = String::new();
    let mut packs_per_backup = Vec::new();
    for round in 0..=10 {
        if round > 0 {
            // Scattered updates touch pages all over the table; new rows grow it.
            sql(&source, &format!("UPDATE t SET v = v + {round} WHERE id % 10 = {}", round % 10));
            sql(
                &source,
                &format!(
                    "INSERT INTO t SELECT g, {round}, md5(g::text) FROM generate_series({}, {}) g",
                    40000 + round * 1000 + 1,
                    40000 + (round + 1) * 1000
                ),
            );
        }
        sql(&source, "CHECKPOINT");
        let backup = env.backup_pg();
        last = backup["snapshot_id"].as_str().expect("snapshot id").to_owned();
        packs_per_backup.push(std::fs::read_dir(env.local_object("packs")).unwrap().count());
    }
    let (rows, sum) = (sql(&source, "SELECT count(*) FROM t"), sql(&source, "SELECT sum(v) FROM t"));
    switch_and_wait_archived(&source);
    assert!(packs_per_backup[10] > packs_per_backup[0], "the incrementals added packs: {packs_per_backup:?}");

    let target = env.path().join("restored");
    let report = restore(&env, &last, &target);
    assert!(report["packs_distinct"].as_u64().unwrap() >= 10, "the snapshot spreads over many packs: {report:#}");
    let restored = env.restore_and_start_dir(&target, "restored");
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), rows);
    assert_eq!(sql(&restored, "SELECT sum(v) FROM t"), sum);
    assert_eq!(
        sql(&restored, "SELECT count(*) FROM t WHERE payload <> md5(id::text) AND payload <> repeat(md5(id::text), 4)"),
        "0"
    );
}

#[test]
fn fs_restore_after_ten_incrementals_reads_each_pack_once() {
    let env = TestEnv::new(Backend::Local);
    small_packs(&env);
    let src = env.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    let mut files: Vec<Vec<u8>> = (0..12u64).map(|i| noise(3 << 20, i + 1)).collect();
    let mut last = String::new();
    for round in 0..=10usize {
        if round > 0 {
            // Rewrite a region in the middle of three files: each then mixes old and new chunks.
            for f in [round % 12, (round + 4) % 12, (round + 8) % 12] {
                let at = (round * 97_003) % (2 << 20);
                files[f][at..at + 300_000].copy_from_slice(&noise(300_000, (round * 100 + f) as u64));
            }
        }
        for (i, data) in files.iter().enumerate() {
            std::fs::write(src.join(format!("f{i}")), data).unwrap();
        }
        let backup = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]));
        last = backup["snapshot_id"].as_str().expect("snapshot id").to_owned();
    }
    let target = env.path().join("restored");
    let report = restore(&env, &last, &target);
    assert!(report["packs_distinct"].as_u64().unwrap() >= 10, "the snapshot spreads over many packs: {report:#}");
    let restored = target.join(src.strip_prefix("/").unwrap());
    for (i, data) in files.iter().enumerate() {
        let got = std::fs::read(restored.join(format!("f{i}"))).unwrap();
        assert!(got == *data, "f{i} differs after the restore");
    }
    assert_eq!(report["files"], 12, "{report:#}");
}

/// Writing out of order keeps the check as strong: every blob is checked against its id before
/// it is written (format 3) and each file is read back and compared with its manifest checksum.
/// An index that points two blobs at each other's bytes (re-authenticated, as only a holder of the
/// id key could) makes the restore fail with exit 3 naming a file, and nothing is left behind.
#[test]
fn a_file_whose_bytes_do_not_match_its_manifest_fails_the_restore_and_leaves_nothing() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("pair");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), noise(100_000, 1)).unwrap();
    std::fs::write(src.join("b"), noise(100_000, 2)).unwrap();
    let snapshot = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]))["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let id_key = env.id_key();
    let mut swapped = 0;
    for entry in std::fs::read_dir(env.local_object("index")).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        let mut index = radd::snapshot::IndexFile::decode(&body[40..]).expect("index record decodes");
        for pack in &mut index.packs {
            let blobs = &mut pack.blobs;
            let equal: Vec<usize> = (0..blobs.len()).filter(|&i| blobs[i].2 == 100_000).collect();
            if let [i, j] = equal[..] {
                let offset = blobs[i].1;
                blobs[i].1 = blobs[j].1;
                blobs[j].1 = offset;
                swapped += 1;
            }
        }
        let payload = radd::snapshot::index::encode(&index.packs);
        let key = format!("index/{}", path.file_name().unwrap().to_str().unwrap());
        let record = radd::repository::record_envelope(&id_key, 3, &key, &payload);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::write(&path, record).unwrap();
    }
    assert_eq!(swapped, 1, "the two files' blobs share one pack");

    let target = env.path().join("restored");
    let out = env.radd(&["restore", &snapshot, "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", crate::common::env::stderr(&out));
    let err = crate::common::env::stderr(&out);
    assert!(err.contains("does not match its id") && (err.contains("pair/a") || err.contains("pair/b")), "{err}");
    assert!(!target.exists(), "a failed restore leaves no target");
    let staging: Vec<_> = std::fs::read_dir(env.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("radd-restore"))
        .collect();
    assert!(staging.is_empty(), "no staging directory is left: {staging:?}");
}
