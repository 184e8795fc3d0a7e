//! Storage faults (issue 13, items 1, 3 and 9): a repository file system that fills up, and an S3
//! server behind a proxy that answers 503 SlowDown, resets connections, loses the replies of
//! stored PUTs, or is down for a while. radd never hangs: it either commits a snapshot that
//! verifies and restores, or fails within its retry budget with the storage error and an
//! incident.

use std::time::{Duration, Instant};

use crate::common::env::{Backend, RepoOptions, TestEnv, json, sql, stderr, switch_and_wait_archived};
use crate::common::faults::{FaultProxy, Plan, SmallDisk, Trigger};

/// Generous bound for a command that must fail, not hang (the reported hangs ran for 180-600 s).
const NO_HANG: Duration = Duration::from_secs(120);

fn last_event(env: &TestEnv) -> serde_json::Value {
    let events = json(&env.radd(&["--json", "events"]));
    events.as_array().and_then(|e| e.last()).cloned().expect("an event was recorded")
}

fn assert_backup_incident(env: &TestEnv, needle: &str) {
    let event = last_event(env);
    assert_eq!((event["kind"].as_str(), event["source"].as_str()), (Some("incident"), Some("backup.pg")), "{event:#}");
    assert!(event.to_string().contains(needle), "the incident names the cause ({needle}): {event:#}");
}

fn snapshot_count(env: &TestEnv) -> usize {
    json(&env.radd(&["--json", "snapshots"])).as_array().expect("array").len()
}

fn local_on(disk: &SmallDisk) -> TestEnv {
    TestEnv::with_repository(
        Backend::Local,
        &RepoOptions { local_path: Some(disk.path().join("repo")), ..RepoOptions::default() },
    )
}

#[test]
fn a_backup_into_a_filling_repository_fails_fast_naming_the_full_disk() {
    let disk = SmallDisk::mount("512m");
    let env = local_on(&disk);
    let source = env.source_cluster();
    // ~75 MB of hex text (compresses to about half): far more than the room left below.
    sql(
        &source,
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 700000) g",
    );
    switch_and_wait_archived(&source);
    disk.resize(disk.used() + (12 << 20));

    let started = Instant::now();
    let out = env.radd_push(&["backup", "pg"]);
    let took = started.elapsed();
    assert!(took < NO_HANG, "backup into a full repository took {took:?}");
    assert_eq!(out.status.code(), Some(1), "a storage failure exits 1: {}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("no space left on device writing ") && text.contains("free space or grow the filesystem"),
        "{text}"
    );
    assert!(!text.contains("ended early") && !text.contains("stopped"), "the cause, not a consequence: {text}");
    assert_backup_incident(&env, "no space left on device");
    eprintln!("full repository: backup failed with exit 1 in {:.1} s", took.as_secs_f64());

    // Room again: nothing half-written was committed and the repository verifies.
    disk.resize(512 << 20);
    assert_eq!(snapshot_count(&env), 0, "no snapshot recorded");
    let verify = env.radd(&["verify"]);
    assert!(verify.status.success(), "verify after the failed backup: {}", stderr(&verify));
}

#[test]
fn wal_push_into_a_full_repository_says_no_space_left() {
    let disk = SmallDisk::mount("64m");
    let env = local_on(&disk);
    let source = env.source_with_rows(20000);
    switch_and_wait_archived(&source);
    // The current segment is not archived yet: push a copy of it by hand into the full disk.
    // (Written to first: at a segment boundary pg_walfile_name names the previous segment.)
    sql(&source, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g");
    let name = sql(&source, "SELECT pg_walfile_name(pg_current_wal_lsn())");
    let copies = env.path().join("wal-copy");
    std::fs::create_dir(&copies).expect("create copy dir");
    std::fs::copy(source.data_dir().join("pg_wal").join(&name), copies.join(&name)).expect("copy segment");
    disk.fill();

    let started = Instant::now();
    let out = env.radd_push(&["wal-push", copies.join(&name).to_str().expect("utf8 path")]);
    assert!(started.elapsed() < NO_HANG, "wal-push into a full repository took {:?}", started.elapsed());
    assert!(
        !out.status.success(),
        "wal-push into a full repository must fail: {}; used {} of the disk",
        stderr(&out),
        disk.used()
    );
    let text = stderr(&out);
    assert!(text.contains(&format!("no space left on device writing wal/00000001/{name}")), "{text}");
    assert!(!text.contains("ended early"), "{text}");
    eprintln!(
        "full repository: wal-push failed with exit {:?} in {:.1} s",
        out.status.code(),
        started.elapsed().as_secs_f64()
    );
}

/// An S3 repository reached through a fresh fault proxy (pass-through until a plan is set).
fn s3_through(proxy: &FaultProxy, budget: &str) -> TestEnv {
    let extra = format!("retry_budget = \"{budget}\"\nrequest_timeout = \"20s\"\nconnect_timeout = \"2s\"\n");
    TestEnv::with_repository(
        Backend::S3,
        &RepoOptions { endpoint: Some(proxy.endpoint.clone()), extra, ..RepoOptions::default() },
    )
}

#[test]
fn backup_wal_and_restore_succeed_through_slow_downs_and_resets() {
    let proxy = FaultProxy::start();
    let env = s3_through(&proxy, "60s");
    let source = env.source_with_rows(30000);
    // 10 % of requests answered 503 SlowDown, ~7.7 % of connections reset.
    proxy.set(Plan { slow_down_every: 10, reset_every: 13, ..Plan::default() });

    let started = Instant::now();
    let backup = env.radd_push(&["--json", "backup", "pg"]);
    assert!(backup.status.success(), "backup through 503s and resets: {}", stderr(&backup));
    let took = started.elapsed();
    sql(&source, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(30001, 40000) g");
    switch_and_wait_archived(&source);

    let restored = env.restore_and_start("latest", "restored", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), "40000");
    let stats = proxy.stats();
    assert!(stats.slow_downs > 0 && stats.resets > 0, "faults were injected: {stats:?}");
    eprintln!("503 + resets: backup committed in {:.1} s, restored with every row; {stats:?}", took.as_secs_f64());
}

#[test]
fn lost_put_replies_still_commit_a_snapshot_that_verifies() {
    let proxy = FaultProxy::start();
    let env = s3_through(&proxy, "60s");
    let source = env.source_with_rows(20000);
    // Every third PUT is stored but its reply replaced by a reset.
    proxy.set(Plan { lose_put_reply_every: 3, ..Plan::default() });

    let backup = env.radd_push(&["--json", "backup", "pg"]);
    assert!(backup.status.success(), "backup with lost PUT replies: {}", stderr(&backup));
    switch_and_wait_archived(&source);
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "verify after lost PUT replies: {}", stderr(&verify));
    assert_eq!(snapshot_count(&env), 1);
    let stats = proxy.stats();
    assert!(stats.lost_replies > 0, "replies were lost: {stats:?}");
    eprintln!("lost PUT replies: snapshot committed and verified; {stats:?}");
}

#[test]
fn an_outage_shorter_than_the_retry_budget_is_ridden_out() {
    let proxy = FaultProxy::start();
    let env = s3_through(&proxy, "30s");
    let _source = env.source_with_rows(20000);
    proxy.set(Plan { down_at: Some(Trigger::first("PUT", "/packs/", Duration::from_secs(5))), ..Plan::default() });

    let started = Instant::now();
    let backup = env.radd_push(&["--json", "backup", "pg"]);
    assert!(backup.status.success(), "backup across a 5 s outage with a 30 s budget: {}", stderr(&backup));
    let took = started.elapsed();
    let stats = proxy.stats();
    assert!(stats.outages == 1 && stats.refused_while_down > 0, "the outage happened: {stats:?}");
    let verify = env.radd(&["verify"]);
    assert!(verify.status.success(), "verify after the outage: {}", stderr(&verify));
    eprintln!("5 s outage, 30 s budget: backup committed in {:.1} s; {stats:?}", took.as_secs_f64());
}

#[test]
fn an_outage_longer_than_the_retry_budget_fails_within_it() {
    let proxy = FaultProxy::start();
    let env = s3_through(&proxy, "5s");
    let _source = env.source_with_rows(20000);
    proxy.set(Plan { down_at: Some(Trigger::first("PUT", "/packs/", Duration::from_secs(120))), ..Plan::default() });

    let started = Instant::now();
    let backup = env.radd_push(&["backup", "pg"]);
    let took = started.elapsed();
    // 5 s of retries for the failing put, a few more for what runs beside it and for releasing
    // the lock: well below the 120 s outage, so it did not wait the outage out.
    assert!(took < Duration::from_secs(60), "backup with a 5 s budget took {took:?}");
    assert_eq!(backup.status.code(), Some(1), "{}", stderr(&backup));
    let text = stderr(&backup);
    assert!(
        text.contains("retry_budget = 5s") && text.contains(" of packs/"),
        "names the object and the budget: {text}"
    );
    assert_backup_incident(&env, "retry_budget");
    eprintln!("120 s outage, 5 s budget: backup failed with exit 1 in {:.1} s", took.as_secs_f64());
}

#[test]
fn a_restore_cut_off_by_an_outage_fails_within_the_budget_and_leaves_no_target() {
    let proxy = FaultProxy::start();
    let env = s3_through(&proxy, "5s");
    let source = env.source_with_rows(20000);
    let backup = env.radd_push(&["backup", "pg"]);
    assert!(backup.status.success(), "backup: {}", stderr(&backup));
    switch_and_wait_archived(&source);
    // Down from the restore's third pack download on (the first holds the manifest's entries:
    // the outage hits the writing stages), far longer than the budget.
    let trigger = Trigger { nth: 3, ..Trigger::first("GET", "/packs/", Duration::from_secs(120)) };
    proxy.set(Plan { down_at: Some(trigger), ..Plan::default() });

    let target = env.path().join("restored");
    let started = Instant::now();
    let out = env.radd(&["restore", "latest", "--target", target.to_str().expect("utf8 path")]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "restore with a 5 s budget took {took:?}");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("retry_budget = 5s") && text.contains("packs/"), "names the pack and the budget: {text}");
    assert!(!target.exists(), "a failed restore leaves no target that looks restored");
    assert_eq!(proxy.stats().outages, 1);
    eprintln!("120 s outage during a restore, 5 s budget: failed with exit 1 in {:.1} s", took.as_secs_f64());
}

#[test]
fn a_stalled_reply_times_out_instead_of_hanging() {
    let proxy = FaultProxy::start();
    let extra = "retry_budget = \"6s\"\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"\n".to_owned();
    let env = TestEnv::with_repository(
        Backend::S3,
        &RepoOptions { endpoint: Some(proxy.endpoint.clone()), extra, ..RepoOptions::default() },
    );
    // Every reply held back for a minute: each attempt times out after 2 s.
    proxy.set(Plan { delay: Duration::from_secs(60), ..Plan::default() });

    let started = Instant::now();
    let out = env.radd(&["snapshots"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "a stalled storage request must time out: took {took:?}");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("retry_budget = 6s"), "{}", stderr(&out));
    assert!(proxy.stats().forwarded >= 2, "the request was retried: {:?}", proxy.stats());
    eprintln!(
        "stalled replies (60 s), 2 s request timeout, 6 s budget: failed with exit 1 in {:.1} s",
        took.as_secs_f64()
    );
}
