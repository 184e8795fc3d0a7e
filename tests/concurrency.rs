//! Prune beside running backups (issue 13 item 2): backups hold a shared repository lock until
//! they commit, prune takes the exclusive one, so a prune — whatever its grace period — never
//! deletes what a running backup reuses or uploads. Each process is paused at an exact point
//! (`RADD_PAUSE_AT`, src/faults.rs) so the overlap is certain, not a matter of timing.

use std::process::Child;
use std::time::Duration;

use crate::common::env::{Backend, TestEnv, find_file, json, sql, stderr, switch_and_wait_archived};
use crate::common::pause::{background, finish_within, resume, spawn_paused, wait_reached};

fn finish(child: Child) -> std::process::Output {
    finish_within(child, Duration::from_secs(300))
}

/// Config with small packs, so a backup writes many packs.
fn small_packs(env: &TestEnv) {
    for config in [&env.push_config, &env.config] {
        let text =
            std::fs::read_to_string(config).unwrap().replacen("[backup]\n", "[backup]\npack_size = \"1MiB\"\n", 1);
        std::fs::write(config, text).unwrap();
    }
}

/// The trial the issue reports (prune --grace 0s while `backup pg` runs: rc 0 and
/// unrestorable), made certain: the backup has uploaded every pack and waits before its commit.
/// Prune refuses (exit 1, naming the backup), or with --lock-wait waits for it; the committed
/// snapshot is then fully referenced, verifies and restores.
#[test]
fn prune_never_deletes_what_a_running_backup_references() {
    let env = TestEnv::new(Backend::Local);
    small_packs(&env);
    let source = env.source_cluster();
    sql(
        &source,
        "CREATE TABLE noise AS SELECT g, decode(repeat(md5(g::text), 64), 'hex') AS b FROM generate_series(1, 60000) g",
    );
    sql(&source, "CHECKPOINT");
    // Every pack the paused backup uploaded is unreferenced until it commits: exactly what a
    // zero grace period would delete.
    let point = "backup:before-commit";
    let mut backup = spawn_paused(&env, &env.push_config, &["--json", "backup", "pg"], point);
    wait_reached(&env, &mut backup, point);

    let refused = env.radd(&["prune", "--grace", "0s", "--force"]);
    assert_eq!(refused.status.code(), Some(1), "prune beside a backup must be refused: {}", stderr(&refused));
    let err = stderr(&refused);
    assert!(err.contains("backup pg") && err.contains("in use"), "the refusal names the backup: {err}");
    assert_eq!(
        std::fs::read_dir(env.local_object("condemned")).map(|d| d.count()).unwrap_or(0),
        0,
        "a refused prune condemned nothing"
    );

    // A prune that waits starts only once the backup committed.
    let waiting =
        background(&env, &env.config, &["--json", "prune", "--grace", "0s", "--force", "--lock-wait", "120s"])
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    resume(&env, point);
    let out = finish(backup);
    assert!(out.status.success(), "the backup commits: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pruned = finish(waiting);
    assert!(pruned.status.success(), "the waiting prune runs after the backup: {}", stderr(&pruned));
    assert!(stderr(&pruned).contains("waiting for a running backup"), "it waited: {}", stderr(&pruned));

    // Two more zero-grace prunes: everything the new snapshot references survives.
    for _ in 0..2 {
        assert!(env.radd(&["prune", "--grace", "0s", "--force"]).status.success());
    }
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    switch_and_wait_archived(&source);
    let restored = env.restore_and_start(report["snapshot_id"].as_str().unwrap(), "beside-prune", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM noise"), "60000");
}

/// A backup started while a prune holds the exclusive lock waits for it, then reads the index
/// the prune left (never packs it deleted).
#[test]
fn a_backup_waits_for_a_running_prune() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    // Two versions, the first forgotten: its packs are what the prune condemns and deletes.
    for seed in [1, 2] {
        std::fs::write(src.join("a"), crate::common::env::noise(3 << 20, seed)).unwrap();
        assert!(env.radd_push(&["backup", "fs", src.to_str().unwrap()]).status.success());
    }
    assert_eq!(json(&env.radd(&["--json", "forget", "--keep-last", "1"]))["forgotten"], 1);

    let point = "prune:condemned";
    let mut prune = spawn_paused(&env, &env.config, &["--json", "prune", "--grace", "0s", "--force"], point);
    wait_reached(&env, &mut prune, point);
    let backup =
        background(&env, &env.push_config, &["--json", "backup", "fs", src.to_str().unwrap()]).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    resume(&env, point);
    assert!(finish(prune).status.success());
    let out = finish(backup);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting for the repository's exclusive lock"),
        "the backup waited: {}",
        stderr(&out)
    );
    assert!(env.radd(&["prune", "--grace", "0s", "--force"]).status.success());
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let target = env.path().join("restored");
    let restored = env.radd(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(restored.status.success(), "{}", stderr(&restored));
    let restored = find_file(&target, "a").expect("file a restored");
    assert_eq!(std::fs::read(restored).unwrap(), crate::common::env::noise(3 << 20, 2));
}

/// A backup whose lock was removed under it (`radd unlock --all` by an operator) cannot know
/// whether a prune ran meanwhile: it fails loudly and commits nothing.
#[test]
fn a_backup_whose_lock_lapsed_commits_nothing() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let point = "backup:before-commit";
    let mut backup = spawn_paused(&env, &env.push_config, &["--json", "backup", "pg"], point);
    wait_reached(&env, &mut backup, point);
    assert!(env.radd(&["unlock", "--all"]).status.success());
    resume(&env, point);
    let out = finish(backup);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("lapsed"), "{}", stderr(&out));
    assert_eq!(json(&env.radd(&["--json", "snapshots"])).as_array().unwrap().len(), 0, "nothing committed");
}

/// A grace period below the safe minimum is a usage error unless forced, on the command line
/// and in the daemon's configuration.
#[test]
fn a_short_grace_period_needs_force() {
    let env = TestEnv::new(Backend::Local);
    let out = env.radd(&["prune", "--grace", "10m"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force") && stderr(&out).contains("1h"), "{}", stderr(&out));
    assert!(env.radd(&["prune", "--grace", "10m", "--force"]).status.success());
    let text = std::fs::read_to_string(&env.config).unwrap() + "\n[daemon]\nprune_grace = \"5m\"\n";
    std::fs::write(&env.config, text).unwrap();
    let out = env.radd(&["snapshots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("daemon.prune_grace"), "{}", stderr(&out));
}
