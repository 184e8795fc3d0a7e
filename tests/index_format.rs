//! Issue 16 item 1: index objects are binary now; a repository whose index objects an older
//! radd wrote as JSON still backs up incrementally against them, verifies, prunes and restores.

use std::os::unix::fs::PermissionsExt;

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};

/// Payloads of the local repository's index objects (after the 40-byte record envelope).
fn index_payloads(env: &TestEnv) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    std::fs::read_dir(env.local_object("index"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let body = std::fs::read(&path).unwrap();
            (path, body)
        })
        .collect()
}

/// Rewrites every index object as the JSON the code before binary index objects wrote
/// (`{"packs":[{"id":…,"blobs":[["<hex>",offset,length],…]}]}`), authenticated with the id key
/// as that code did. Returns how many were rewritten.
fn rewrite_as_old_json(env: &TestEnv) -> usize {
    let id_key = env.id_key();
    let mut rewritten = 0;
    for (path, body) in index_payloads(env) {
        assert!(
            body[40..].starts_with(radd::snapshot::index::MAGIC),
            "new index objects are binary: {}",
            path.display()
        );
        let index = radd::snapshot::IndexFile::decode(&body[40..]).expect("binary index object decodes");
        let payload = serde_json::to_vec(&index).unwrap();
        assert_eq!(payload[0], b'{');
        let record = radd::repository::record_envelope(
            &id_key,
            3,
            &format!("index/{}", path.file_name().unwrap().to_str().unwrap()),
            &payload,
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&path, record).unwrap();
        rewritten += 1;
    }
    rewritten
}

#[test]
fn json_index_objects_of_an_older_radd_still_back_up_incrementally_verify_prune_and_restore() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)");
    sql(&source, "INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 60000) g");
    sql(&source, "VACUUM FREEZE");
    sql(&source, "CHECKPOINT");
    let first = env.backup_pg();
    let old_objects = rewrite_as_old_json(&env);
    assert!(old_objects >= 1);

    // Files count as unchanged only when they changed over a second before their parent backup
    // started (radd's settle rule): let the first backup's writes settle before the second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Every block looked up in the index loaded from the JSON objects: all but a few known.
    let second = json(&env.radd_push(&["--json", "backup", "pg", "--full-read"]));
    let (total, new) = (second["total_bytes"].as_u64().unwrap(), second["new_bytes"].as_u64().unwrap());
    assert!(new * 10 < total, "the full read deduplicated against the JSON index: {new} new of {total} B");
    assert!(first["new_bytes"].as_u64().unwrap() > 5 * new, "{first}");

    sql(&source, "UPDATE t SET v = 'changed' WHERE id % 500 = 0");
    sql(&source, "CHECKPOINT");
    let third = env.backup_pg();
    assert_eq!(third["parent"], second["snapshot_id"], "{third}");
    assert!(third["files_unchanged"].as_u64().unwrap() > 0, "{third}");
    let payloads = index_payloads(&env);
    let json_objects = payloads.iter().filter(|(_, body)| body[40] == b'{').count();
    let binary_objects =
        payloads.iter().filter(|(_, body)| body[40..].starts_with(radd::snapshot::index::MAGIC)).count();
    assert_eq!(json_objects, old_objects, "the old objects stay as they were");
    assert!(binary_objects >= 1, "the later backups wrote binary index objects");

    let verify = env.radd(&["--json", "verify", "--read-data"]);
    assert!(verify.status.success(), "a repository of both encodings verifies: {}", stderr(&verify));

    // Prune reads both encodings, and rewrites what it changes as binary.
    assert!(env.radd(&["forget", "--keep-last", "1"]).status.success());
    assert!(env.radd(&["prune"]).status.success());
    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let pruned = env.radd(&["--json", "prune", "--now", &later]);
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "verifies after the prune: {}", stderr(&verify));

    switch_and_wait_archived(&source);
    let restored = env.restore_and_start(third["snapshot_id"].as_str().unwrap(), "after-json-index", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM t WHERE v = 'changed'"), "120");
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), "60000");
}

/// A damaged binary index object is reported alone: the intact ones around it still decode.
#[test]
fn verify_names_only_the_damaged_index_object() {
    let env = TestEnv::new(Backend::Local);
    for (name, seed) in [("one", 1), ("two", 2)] {
        let src = env.path().join(name);
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), crate::common::env::noise(300_000, seed)).unwrap();
        assert!(env.radd_push(&["backup", "fs", src.to_str().unwrap()]).status.success());
    }
    let mut objects = index_payloads(&env);
    assert_eq!(objects.len(), 2, "one index object per backup");
    objects.sort();
    let (damaged, mut body) = objects.remove(0);
    let last = body.len() - 1;
    body[last] ^= 1;
    std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&damaged, body).unwrap();
    let out = env.radd(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify prints its report");
    let problems = report["problems"].as_array().unwrap();
    let name = damaged.file_name().unwrap().to_str().unwrap();
    let index_problems: Vec<&str> =
        problems.iter().filter_map(|p| p["object"].as_str()).filter(|o| o.starts_with("index/")).collect();
    assert_eq!(index_problems, [format!("index/{name}")], "only the damaged index object: {report:#}");
}

/// The blob index now loads while PostgreSQL starts the backup (and while a restore checks the
/// WAL archive): a damaged index object still fails both, naming the object, and the backup it
/// cut short leaves PostgreSQL able to take the next one once the object is whole again.
#[test]
fn a_damaged_index_object_fails_a_base_backup_and_a_restore_that_load_it_concurrently() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 20000) g");
    let first = env.backup_pg();
    assert!(first["snapshot_id"].is_string(), "{first}");
    switch_and_wait_archived(&source);

    let (damaged, whole) = index_payloads(&env).into_iter().next().expect("the backup wrote an index object");
    let name = format!("index/{}", damaged.file_name().unwrap().to_str().unwrap());
    let mut body = whole.clone();
    let last = body.len() - 1;
    body[last] ^= 1;
    std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&damaged, &body).unwrap();

    let backup = env.radd_push(&["backup", "pg"]);
    assert!(!backup.status.success(), "a backup against a damaged index must fail");
    assert!(stderr(&backup).contains(&name), "the error names {name}: {}", stderr(&backup));
    let target = env.path().join("restored");
    let restore = env.radd(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(!restore.status.success(), "a restore through a damaged index must fail");
    assert!(stderr(&restore).contains(&name), "the error names {name}: {}", stderr(&restore));
    assert!(!target.exists(), "a failed restore leaves no target behind");

    std::fs::write(&damaged, &whole).unwrap();
    sql(&source, "INSERT INTO t SELECT g, 'after' FROM generate_series(20001, 20500) g");
    let next = env.radd_push(&["--json", "backup", "pg"]);
    assert!(next.status.success(), "PostgreSQL is out of the cut-short backup: {}", stderr(&next));
    let listed = json(&env.radd_push(&["--json", "snapshots"]));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    switch_and_wait_archived(&source);
    let restored = env.restore_and_start("latest", "after-repair", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), "20500");
}
