//! Nothing lost, nothing silent: wrong key, corrupt chunk, missing WAL, unknown snapshot,
//! non-empty target, unsafe key file — each a clear error, a non-zero exit, nothing written.

use std::os::unix::fs::PermissionsExt;

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};

/// A repository with one snapshot and archived WAL after it.
fn env_with_backup() -> (TestEnv, String) {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_with_rows(20000);
    let backup = env.backup_pg();
    sql(&source, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    switch_and_wait_archived(&source);
    for _ in 0..3 {
        sql(&source, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g");
        switch_and_wait_archived(&source);
    }
    (env, backup["snapshot_id"].as_str().unwrap().to_owned())
}

fn restore(env: &TestEnv, snapshot: &str, target: &str) -> std::process::Output {
    let target = env.path().join(target);
    env.radd(&["restore", snapshot, "--target", target.to_str().unwrap()])
}

fn assert_nothing_restored(env: &TestEnv, target: &str) {
    assert!(!env.path().join(target).exists(), "a failed restore left {target} behind");
    let leftovers: Vec<_> = std::fs::read_dir(env.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("radd-restore"))
        .collect();
    assert!(leftovers.is_empty(), "staging directories left: {leftovers:?}");
}

#[test]
fn restore_refuses_bad_requests() {
    let (env, snapshot) = env_with_backup();

    let out = restore(&env, "20991231", "unknown");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert_nothing_restored(&env, "unknown");

    let busy = env.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("precious"), "keep me").unwrap();
    let out = restore(&env, &snapshot, "busy");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(busy.join("precious")).unwrap(), "keep me");

    // The archiving side's config has no identity: it cannot restore.
    let target = env.path().join("no-identity");
    let out = env.radd_push(&["restore", &snapshot, "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("identity"), "{}", stderr(&out));

    // Key files readable by others are refused.
    let identity = env.path().join("identity.key");
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = restore(&env, &snapshot, "loose-key");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("AGE-SECRET-KEY"), "secret leaked into an error message");
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_nothing_restored(&env, "loose-key");

    // A second `repo init` must not touch the existing repository.
    let out = env.radd_push(&["repo", "init"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already initialised"), "{}", stderr(&out));
}

#[test]
fn wrong_identity_cannot_restore() {
    let (env, snapshot) = env_with_backup();
    let other = env.path().join("other.key");
    let out = crate::common::env::run(
        std::process::Command::new(crate::common::env::radd_binary()).args(["keygen", "--identity"]).arg(&other),
        &[],
    );
    assert!(out.status.success());
    let config = std::fs::read_to_string(&env.config).unwrap().replace("identity.key", "other.key");
    let wrong = env.path().join("wrong.toml");
    std::fs::write(&wrong, config).unwrap();
    let target = env.path().join("wrong-key");
    let out = env.radd_with(&wrong, &["restore", &snapshot, "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("decrypt"), "{}", stderr(&out));
    assert_nothing_restored(&env, "wrong-key");
}

#[test]
fn corrupt_pack_fails_restore() {
    let (env, snapshot) = env_with_backup();
    env.corrupt_a_pack();

    let out = restore(&env, &snapshot, "corrupt");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("packs/") && (err.contains("corrupt") || err.contains("decrypt")), "{err}");
    assert_nothing_restored(&env, "corrupt");
}

#[test]
fn missing_wal_segment_is_a_gap_not_the_end() {
    let (env, snapshot) = env_with_backup();
    let victim = env.delete_wal_before_last();

    let out = restore(&env, &snapshot, "gap");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&victim), "error must name {victim}: {}", stderr(&out));
    assert_nothing_restored(&env, "gap");

    let dest = env.path().join("seg");
    let out = env.radd(&["wal-fetch", &victim, dest.to_str().unwrap()]);
    assert!(out.status.code().unwrap() > 125, "wal-fetch of a gap must abort recovery: {:?}", out.status);
    assert!(!dest.exists());

    // Accepting the gap explicitly restores up to it.
    let target = env.path().join("gap-accepted");
    let out = env.radd(&["restore", &snapshot, "--target", target.to_str().unwrap(), "--allow-gap"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Issue 5: a large backup writes index objects while it runs (memory must not grow with it);
/// ending abruptly right after one leaves index entries for packs no snapshot references: the
/// repository still verifies, nothing is recorded, and the next backup reuses those packs and
/// restores.
#[test]
fn backup_ended_after_an_early_index_object_leaves_a_consistent_repository() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(
        &source,
        "CREATE TABLE noise AS SELECT g, decode(repeat(md5(random()::text), 64), 'hex') AS b FROM generate_series(1, 30000) g",
    );
    sql(&source, "CHECKPOINT");
    // Index objects of at most 100 blobs, packs of 1 MiB (128 blocks): the backup writes index
    // objects long before it ends.
    for config in [&env.push_config, &env.config] {
        let text = std::fs::read_to_string(config).unwrap();
        std::fs::write(
            config,
            text.replacen("[backup]\n", "[backup]\npack_size = \"1MiB\"\nindex_shard_blobs = 100\n", 1),
        )
        .unwrap();
    }
    let mut cmd = std::process::Command::new(crate::common::env::radd_binary());
    cmd.arg("--config").arg(&env.push_config).args(["backup", "pg"]);
    let mut vars = env.env.clone();
    vars.push(("RADD_CRASH_AT".into(), "backup:index-object".into()));
    let out = crate::common::env::run(&mut cmd, &vars);
    assert_eq!(
        out.status.code(),
        Some(137),
        "the backup should have ended at its first early index object: {}",
        stderr(&out)
    );
    let early = std::fs::read_dir(env.local_object("index")).unwrap().count();
    assert!(early >= 1, "an index object was written before the backup ended");

    let snapshots = json(&env.radd(&["--json", "snapshots"]));
    assert_eq!(snapshots.as_array().unwrap().len(), 0, "nothing recorded: {snapshots}");
    let verify = env.radd(&["--json", "verify", "--read-data"]);
    assert!(verify.status.success(), "repository must verify: {}", stderr(&verify));

    let again = env.backup_pg();
    let objects = std::fs::read_dir(env.local_object("index")).unwrap().count();
    assert!(objects > early + 2, "the full backup wrote its index in many objects of 100 blobs: {objects}");
    switch_and_wait_archived(&source);
    let restored = env.restore_and_start(again["snapshot_id"].as_str().unwrap(), "after-early-index", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM noise"), "30000");

    // The retry reused what the ended backup had indexed; prune leaves it all alone.
    assert!(again["reused_bytes"].as_u64().unwrap() > 0, "the retry reuses the ended backup's indexed packs: {again}");
    let pruned = json(&env.radd(&["--json", "prune", "--grace", "0s", "--force"]));
    assert_eq!(pruned["packs_condemned"], 0, "every pack is referenced: {pruned}");
    let verify = env.radd(&["--json", "verify", "--read-data"]);
    assert!(verify.status.success(), "repository must verify after prune: {}", stderr(&verify));
}

/// Issue 5: killing a backup mid-upload leaves a repository that verifies, with no snapshot
/// recorded; the next backup succeeds and restores.
#[test]
fn killed_backup_leaves_a_verifiable_repository_and_no_snapshot() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    // Incompressible rows, so the backup spans several packs and takes long enough to interrupt.
    sql(
        &source,
        "CREATE TABLE noise AS SELECT g, decode(repeat(md5(random()::text), 64), 'hex') AS b FROM generate_series(1, 120000) g",
    );
    sql(&source, "CHECKPOINT");
    let config = std::fs::read_to_string(&env.push_config).unwrap();
    let small_packs = config.replacen("[backup]\n", "[backup]\npack_size = \"1MiB\"\nupload_concurrency = 1\n", 1);
    std::fs::write(&env.push_config, small_packs).unwrap();

    let mut backup = std::process::Command::new(crate::common::env::radd_binary());
    backup.arg("--config").arg(&env.push_config).args(["backup", "pg"]);
    backup
        .envs(env.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = backup.spawn().expect("start backup");
    let packs = env.local_object("packs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&packs).map(|d| d.count()).unwrap_or(0) < 2 {
        assert!(child.try_wait().unwrap().is_none(), "backup finished before it could be interrupted");
        assert!(std::time::Instant::now() < deadline, "no packs uploaded within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().expect("kill -9 the backup");
    child.wait().unwrap();

    let snapshots = json(&env.radd(&["--json", "snapshots"]));
    assert_eq!(snapshots.as_array().unwrap().len(), 0, "a killed backup must not be recorded: {snapshots}");
    let verify = env.radd(&["--json", "verify", "--read-data"]);
    assert!(verify.status.success(), "repository must verify after the kill: {}", stderr(&verify));

    let again = env.backup_pg();
    switch_and_wait_archived(&source);
    let restored = env.restore_and_start(again["snapshot_id"].as_str().unwrap(), "after-kill", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM noise"), "120000");
}
