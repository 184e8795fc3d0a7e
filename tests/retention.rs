//! Retention on real snapshots: the plan (--dry-run), pins, forgetting, and that what is kept
//! still restores and verifies. Calendar rules are unit-tested with chosen times in
//! src/retention; here "now" is injected with --now instead of waiting.

use crate::common::env::{Backend, TestEnv, json, noise, stderr};

#[test]
fn forget_keeps_exactly_the_policy_and_pins() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("docs");
    std::fs::create_dir(&src).unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        std::fs::write(src.join("note"), format!("version {i}")).unwrap();
        let snap = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]));
        ids.push(snap["snapshot_id"].as_str().unwrap().to_owned());
    }
    let out = env.radd_push(&["pin", &ids[0]]);
    assert!(out.status.success(), "{}", stderr(&out));

    let plan = json(&env.radd_push(&["--json", "forget", "--keep-last", "2", "--dry-run"]));
    assert_eq!(plan["applied"], false);
    assert_eq!(plan["forgotten"], 1, "{plan:#}");
    let forgotten: Vec<&str> = plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["snapshot_id"].as_str().unwrap())
        .collect();
    assert_eq!(forgotten, [ids[1].as_str()]);
    let pinned = plan["decisions"].as_array().unwrap().iter().find(|d| d["snapshot_id"] == ids[0].as_str()).unwrap();
    assert!(pinned["reasons"].as_array().unwrap().iter().any(|r| r == "pinned"), "{pinned:#}");
    assert_eq!(
        json(&env.radd_push(&["--json", "snapshots"])).as_array().unwrap().len(),
        4,
        "a dry run deletes nothing"
    );

    // A job's own policy applies to its snapshots when no flag overrides it.
    let job = format!("\n[[fs]]\nname = \"docs\"\npaths = [\"{}\"]\nretention = {{ keep_last = 1 }}\n", src.display());
    std::fs::write(&env.push_config, std::fs::read_to_string(&env.push_config).unwrap() + &job).unwrap();
    let by_job = json(&env.radd_push(&["--json", "forget", "--dry-run"]));
    assert_eq!(by_job["forgotten"], 2, "keep_last = 1 of the job, plus the pinned one: {by_job:#}");

    let done = json(&env.radd_push(&["--json", "forget", "--keep-last", "2"]));
    assert_eq!(done["forgotten"], 1);
    let left: Vec<String> = json(&env.radd_push(&["--json", "snapshots"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, [ids[0].clone(), ids[2].clone(), ids[3].clone()]);

    // Everything kept restores and the repository verifies; the pinned one has version 0.
    let target = env.path().join("old");
    let out = env.radd(&["restore", &ids[0], "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(target.join(src.strip_prefix("/").unwrap()).join("note")).unwrap(), "version 0");
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));

    // A day later, keep_within 1h keeps only the newest and the pinned snapshot.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let later = json(&env.radd_push(&["--json", "forget", "--keep-within", "1h", "--now", &tomorrow]));
    assert_eq!(later["forgotten"], 1, "{later:#}");
    let left = json(&env.radd_push(&["--json", "snapshots"]));
    assert_eq!(left.as_array().unwrap().len(), 2);
    let out = env.radd_push(&["unpin", &ids[0]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json(&env.radd_push(&["--json", "events"]));
    assert!(events.as_array().unwrap().iter().any(|e| e["source"] == "retention.forget"), "{events:#}");
}

fn repo_bytes(env: &TestEnv, dir: &str) -> u64 {
    std::fs::read_dir(env.local_object(dir))
        .map(|d| d.filter_map(Result::ok).map(|e| e.metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

/// Forgotten data is condemned first and deleted only after the grace period; a backup that
/// reuses a condemned pack in between reprieves it, so it still restores.
#[test]
fn prune_deletes_after_grace_and_never_breaks_a_concurrent_backup() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("data");
    std::fs::create_dir(&src).unwrap();
    let path = src.to_str().unwrap();
    let mut ids = Vec::new();
    for v in 0..3u64 {
        std::fs::write(src.join("blob"), noise(2 << 20, v + 1)).unwrap();
        ids.push(json(&env.radd_push(&["--json", "backup", "fs", path]))["snapshot_id"].as_str().unwrap().to_owned());
    }
    let before = repo_bytes(&env, "packs");
    assert_eq!(json(&env.radd_push(&["--json", "forget", "--keep-last", "1"]))["forgotten"], 2);

    let first = json(&env.radd(&["--json", "prune"]));
    assert!(first["packs_condemned"].as_u64().unwrap() >= 2, "{first:#}");
    assert_eq!(first["packs_deleted"], 0, "nothing is deleted before the grace period: {first:#}");
    assert_eq!(repo_bytes(&env, "packs"), before);

    // A backup of version 0 again reuses the condemned chunks of the forgotten first snapshot.
    std::fs::write(src.join("blob"), noise(2 << 20, 1)).unwrap();
    let again = json(&env.radd_push(&["--json", "backup", "fs", path]));
    assert_eq!(again["new_bytes"], 0, "the chunks were still there to reuse: {again:#}");

    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let second = json(&env.radd(&["--json", "prune", "--now", &later]));
    assert!(second["packs_reprieved"].as_u64().unwrap() >= 1, "the reused pack is reprieved: {second:#}");
    assert!(second["packs_deleted"].as_u64().unwrap() >= 1, "{second:#}");
    assert!(second["bytes_reclaimed"].as_u64().unwrap() > 1 << 20, "{second:#}");
    assert!(repo_bytes(&env, "packs") < before);

    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    for (snapshot, seed) in [(ids[2].as_str(), 3), (again["snapshot_id"].as_str().unwrap(), 1)] {
        let target = env.path().join(format!("r-{seed}"));
        let out = env.radd(&["restore", snapshot, "--target", target.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            std::fs::read(target.join(src.strip_prefix("/").unwrap()).join("blob")).unwrap(),
            noise(2 << 20, seed)
        );
    }
}

/// PITR still works from the oldest retained base backup after prune; older WAL is gone.
#[test]
fn prune_keeps_the_pitr_window_of_the_oldest_retained_backup() {
    use crate::common::env::{sql, switch_and_wait_archived};
    let env = TestEnv::new(Backend::Local);
    let source = env.source_with_ids(1000);
    assert!(env.radd_push(&["backup", "pg"]).status.success());
    sql(&source, "INSERT INTO t SELECT g FROM generate_series(1001, 2000) g");
    switch_and_wait_archived(&source);
    let kept = env.backup_pg();
    sql(&source, "INSERT INTO t SELECT g FROM generate_series(2001, 3000) g");
    switch_and_wait_archived(&source);
    let wal_before = std::fs::read_dir(env.local_object("wal/00000001")).unwrap().count();

    assert_eq!(json(&env.radd_push(&["--json", "forget", "--keep-last", "1"]))["forgotten"], 1);
    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    // WAL needs no grace period: nothing new ever needs WAL older than the oldest retained backup.
    let report = json(&env.radd(&["--json", "prune"]));
    assert!(report["wal_deleted"].as_u64().unwrap() >= 1, "{report:#}");
    json(&env.radd(&["--json", "prune", "--now", &later]));
    let start: radd::pg::Lsn = kept["start_lsn"].as_str().unwrap().parse().unwrap();
    let first_kept = radd::pg::WalFileName::segment_for(radd::pg::Timeline(1), start, radd::pg::SegmentSize::DEFAULT)
        .to_name(radd::pg::SegmentSize::DEFAULT);
    assert_eq!(report["wal_kept_from"]["00000001"], first_kept.as_str());
    let remaining: Vec<String> = std::fs::read_dir(env.local_object("wal/00000001"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(remaining.len() < wal_before);
    assert!(
        remaining.iter().filter(|n| n.len() == 24).all(|n| *n >= first_kept),
        "WAL older than the oldest retained backup is gone: {remaining:?}"
    );

    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let restored = env.restore_and_start("latest", "after-prune", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), "3000");
}

/// A second prune is refused with the holder named; a dead holder's stale lock is removed by
/// `radd unlock --stale`, a live one is not.
#[test]
fn prune_lock_names_its_holder_and_stale_locks_can_be_removed() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("d");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    assert!(env.radd_push(&["backup", "fs", src.to_str().unwrap()]).status.success());
    let locks = env.local_object("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let write_lock = |id: &str, beat: chrono::DateTime<chrono::Utc>| {
        let lock = serde_json::json!({"id": id, "host": "db-7", "pid": 4242, "command": "prune", "created": beat, "heartbeat": beat});
        std::fs::write(locks.join(id), lock.to_string()).unwrap();
    };
    write_lock("20200101T000000000Z-4242", chrono::Utc::now() - chrono::Duration::hours(2));

    let out = env.radd(&["prune"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("db-7") && err.contains("4242") && err.contains("prune") && err.contains("unlock --stale"),
        "{err}"
    );

    write_lock("29990101T000000000Z-1", chrono::Utc::now());
    let removed = json(&env.radd(&["--json", "unlock", "--stale"]));
    assert_eq!(removed.as_array().unwrap().len(), 1, "only the stale lock goes: {removed:#}");
    std::fs::remove_file(locks.join("29990101T000000000Z-1")).unwrap();
    let out = env.radd(&["prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0, "prune releases its lock");
}

/// Key rotation: after `key add B`, `key remove A` and `key rewrap`, A decrypts nothing and B
/// restores and drills everything.
#[test]
fn key_rotation_locks_out_the_removed_identity() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("keys-data");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), noise(300_000, 5)).unwrap();
    let first = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]));

    let b_key = env.path().join("b.key");
    let out = crate::common::env::run(
        std::process::Command::new(crate::common::env::radd_binary()).args(["keygen", "--identity"]).arg(&b_key),
        &[],
    );
    let b = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let a = json(&env.radd_push(&["--json", "key", "list"]))[0].as_str().unwrap().to_owned();
    assert_eq!(json(&env.radd_push(&["--json", "key", "add", &b]))["recipients"].as_array().unwrap().len(), 2);
    std::fs::write(src.join("b"), noise(300_000, 6)).unwrap();
    let second = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]));
    let removed = json(&env.radd_push(&["--json", "key", "remove", &a]));
    assert_eq!(removed["recipients"], serde_json::json!([b]));
    // Interrupted after its first object, a rewrap resumes where it stopped.
    let mut cmd = std::process::Command::new(crate::common::env::radd_binary());
    cmd.arg("--config").arg(&env.config).args(["key", "rewrap"]);
    let out = crate::common::env::run(&mut cmd, &[("RADD_CRASH_AT".into(), "rewrap:object".into())]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    // The crashed rewrap left its lock behind, as a killed process would.
    let blocked = env.radd(&["key", "rewrap"]);
    assert_eq!(blocked.status.code(), Some(1), "{}", stderr(&blocked));
    assert!(stderr(&blocked).contains("key rewrap"), "{}", stderr(&blocked));
    assert!(env.radd(&["unlock", "--all"]).status.success());
    let rewrap = json(&env.radd(&["--json", "key", "rewrap"]));
    assert_eq!(rewrap["resumed_past"], 1, "{rewrap:#}");
    assert!(rewrap["rewrapped"].as_u64().unwrap() >= 3, "{rewrap:#}");

    // A config holding only B (and no id key file: it comes from the key set, encrypted to B).
    let b_config = env.path().join("b.toml");
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("identity.key", "b.key")
        .replace("id_key_file", "# id_key_file");
    std::fs::write(&b_config, text).unwrap();
    for (snap, name) in [(&first, "b1"), (&second, "b2")] {
        let target = env.path().join(name);
        let out = env.radd_with(
            &b_config,
            &["restore", snap["snapshot_id"].as_str().unwrap(), "--target", target.to_str().unwrap()],
        );
        assert!(out.status.success(), "B must restore everything: {}", stderr(&out));
    }
    let verify = env.radd_with(&b_config, &["verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    std::fs::write(env.path().join("drills/fs.toml"), "name = \"fs\"\nkind = \"fs\"\n").unwrap();
    let drill = json(&env.radd_with(&b_config, &["--json", "drill", "run", "fs"]));
    assert_eq!(drill["passed"], true, "{drill:#}");

    // A can decrypt nothing: every pack, manifest and WAL object fails.
    let verify = env.radd(&["--json", "verify", "--read-data"]);
    assert_eq!(verify.status.code(), Some(3), "{}", stderr(&verify));
    let target = env.path().join("a1");
    let out = env.radd(&["restore", first["snapshot_id"].as_str().unwrap(), "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let a_no_id_key = env.path().join("a.toml");
    std::fs::write(&a_no_id_key, std::fs::read_to_string(&env.config).unwrap().replace("id_key_file", "# id_key_file"))
        .unwrap();
    let out = env.radd_with(&a_no_id_key, &["snapshots"]);
    assert_ne!(out.status.code(), Some(0), "A cannot even recover the id key: {}", stderr(&out));
}

/// Issue 7: prune killed at six points in turn never breaks a retained snapshot: after each
/// crash the repository verifies, and at the end the retained backup restores with PITR.
#[test]
fn prune_killed_at_any_point_leaves_a_repository_that_verifies_and_restores() {
    use crate::common::env::{radd_binary, run, sql, switch_and_wait_archived};
    let env = TestEnv::new(Backend::Local);
    let config = std::fs::read_to_string(&env.push_config).unwrap().replacen(
        "[backup]\n",
        "[backup]\npack_size = \"1MiB\"\n",
        1,
    );
    std::fs::write(&env.push_config, config).unwrap();
    let source = env.source_cluster();
    // One table per round; the first two are dropped before the last backup, so the packs
    // holding only their blocks end up unreferenced once the first two backups are forgotten.
    for round in 0..3 {
        if round == 2 {
            sql(&source, "DROP TABLE r0");
            sql(&source, "DROP TABLE r1");
        }
        sql(
            &source,
            &format!(
                "CREATE TABLE r{round} AS SELECT g AS id, decode(repeat(md5(random()::text), 32), 'hex') AS b FROM generate_series(1, 4000) g"
            ),
        );
        sql(&source, "CHECKPOINT");
        switch_and_wait_archived(&source);
        assert!(env.radd_push(&["backup", "pg"]).status.success());
    }
    sql(&source, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 12100) g");
    switch_and_wait_archived(&source);
    assert_eq!(json(&env.radd_push(&["--json", "forget", "--keep-last", "1"]))["forgotten"], 2);

    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let crash = |point: &str, now: Option<&str>| {
        let mut cmd = std::process::Command::new(radd_binary());
        cmd.arg("--config").arg(&env.config).arg("prune");
        if let Some(now) = now {
            cmd.args(["--now", now]);
        }
        let mut vars = env.env.clone();
        vars.push(("RADD_CRASH_AT".into(), point.into()));
        let out = run(&mut cmd, &vars);
        assert_eq!(out.status.code(), Some(137), "prune should have crashed at {point}: {}", stderr(&out));
        // What a crash leaves behind: a stale lock (removed as an operator would), and a
        // repository that verifies in full.
        assert!(env.radd(&["unlock", "--all"]).status.success());
        let verify = env.radd(&["verify", "--read-data"]);
        assert!(verify.status.success(), "after a crash at {point}: {}", stderr(&verify));
    };
    crash("prune:condemned", None);
    crash("prune:wal", None);
    for point in ["prune:new-index", "prune:old-index", "prune:pack", "prune:packs-done"] {
        crash(point, Some(&later));
    }
    let done = json(&env.radd(&["--json", "prune", "--now", &later]));
    assert!(env.radd(&["verify", "--read-data"]).status.success());
    eprintln!("prune after six crashes: {done}");
    let restored = env.restore_and_start("latest", "after-crashes", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), "12100");
}
