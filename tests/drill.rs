//! Restore drills end to end: a real source cluster, a base backup, more writes, then
//! `radd drill run` on a scratch instance — passing on a good repository, failing the right
//! check (non-zero exit, incident, no scratch left behind) after damage.

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};

const DRILL: &str = r#"
name = "test-rad"
snapshot = "latest"
[target]
recovery = "latest"
[scratch]
timeout = "3m"
[checks]
rpo = { max = "10m" }
[[checks.sql]]
name = "rows"
query = "SELECT count(*) FROM t"
expect_min = 30000
[[checks.sql]]
name = "same as source"
query = "SELECT sum(id) FROM t"
expect_source = true
[[checks.sql]]
name = "heartbeat fresh"
query = "SELECT at FROM radd.heartbeat"
max_age = "10m"
"#;

/// A source with data, heartbeat, a backup and archived WAL after it, plus the drill file.
fn prepared(backend: Backend) -> (TestEnv, radd::pg::ScratchCluster) {
    prepared_on(TestEnv::new(backend))
}

fn prepared_on(env: TestEnv) -> (TestEnv, radd::pg::ScratchCluster) {
    let source = env.source_with_rows(20000);
    let beat = env.radd_push(&["heartbeat"]);
    assert!(beat.status.success(), "heartbeat: {}", stderr(&beat));
    let backup = env.radd_push(&["backup", "pg"]);
    assert!(backup.status.success(), "backup: {}", stderr(&backup));
    sql(&source, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(20001, 30000) g");
    assert!(env.radd_push(&["heartbeat"]).status.success());
    switch_and_wait_archived(&source);
    std::fs::write(env.path().join("drills/test-rad.toml"), DRILL).expect("write drill");
    (env, source)
}

fn scratch_is_clean(env: &TestEnv) {
    let scratch = env.path().join("scratch");
    let left: Vec<_> =
        std::fs::read_dir(&scratch).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "scratch directories left behind: {left:?}");
    let ps = std::process::Command::new("pgrep").args(["-f", &scratch.display().to_string()]).output().expect("pgrep");
    assert!(ps.stdout.is_empty(), "scratch postgres still running: {}", String::from_utf8_lossy(&ps.stdout));
}

fn events(env: &TestEnv) -> Vec<serde_json::Value> {
    json(&env.radd(&["--json", "events"])).as_array().expect("array").clone()
}

fn drill_passes(env: &TestEnv) {
    let out = env.radd(&["--json", "drill", "run", "test-rad"]);
    let report = json(&out);
    assert_eq!(report["passed"], true, "{report:#}");
    let checks: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    for expected in [
        "wal_chain",
        "checksums",
        "pg_verifybackup",
        "starts",
        "sql:rows",
        "sql:same as source",
        "sql:heartbeat fresh",
        "rpo",
        "page_integrity",
    ] {
        assert!(checks.contains(&expected), "check {expected} missing: {checks:?}");
    }
    assert!(report["rto_seconds"].as_f64().unwrap() > 0.0);
    assert!(report["rpo_seconds"].as_f64().unwrap() < 600.0);
    let last = events(env).last().cloned().expect("an event");
    assert_eq!(last["kind"], "change", "{last:#}");
    assert_eq!(last["source"], "drill.test-rad");
    scratch_is_clean(env);
}

fn drill_fails(env: &TestEnv, check: &str) -> serde_json::Value {
    let out = env.radd(&["--json", "drill", "run", "test-rad"]);
    assert_eq!(out.status.code(), Some(4), "a failed drill exits 4: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["passed"], false);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert!(failed.contains(&check), "expected {check} to fail, failed: {failed:?}\n{report:#}");
    let last = events(env).last().cloned().expect("an event");
    assert_eq!(last["kind"], "incident", "{last:#}");
    assert!(last["severity"].as_str().is_some_and(|s| s == "S1" || s == "S2"), "{last:#}");
    scratch_is_clean(env);
    report
}

crate::pg_matrix! {
    /// Every check passes on a good repository, on every PostgreSQL version; a flipped bit in a
    /// pack fails `checksums`.
    fn drill_local_passes_then_fails_on_a_corrupt_chunk(pg) {
        let (env, _source) = prepared_on(TestEnv::with_pg(Backend::Local, pg));
        drill_passes(&env);
        env.corrupt_a_pack();
        drill_fails(&env, "checksums");
    }
}

#[test]
fn drill_s3_passes_then_fails_on_a_missing_segment() {
    let (env, _source) = prepared(Backend::S3);
    drill_passes(&env);
    // Delete the newest archived segment but one, straight from the bucket (explicit test
    // credentials: never let the SDK go looking for instance metadata).
    let config = radd::config::Config::load(&env.config).expect("config");
    let server = crate::common::s3::shared();
    crate::common::env::block_on(async {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_bucket_name(&server.bucket)
            .with_region(&server.region)
            .with_access_key_id(&server.access_key)
            .with_secret_access_key(&server.secret_key)
            .with_allow_http(true)
            .build()
            .expect("s3 client");
        let prefix = object_store::path::Path::from(format!("{}/wal/00000001", config.repository.prefix));
        let mut segments: Vec<object_store::path::Path> = store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect::<Vec<_>>()
            .await
            .expect("list")
            .into_iter()
            .filter(|p| p.filename().is_some_and(|n| n.len() == 24))
            .collect();
        segments.sort();
        assert!(segments.len() >= 3, "{segments:?}");
        store.delete(&segments[segments.len() - 2]).await.expect("delete");
    });
    drill_fails(&env, "wal_chain");
}

#[test]
fn drill_list_shows_definitions() {
    let env = TestEnv::new(Backend::Local);
    std::fs::write(env.path().join("drills/test-rad.toml"), DRILL).unwrap();
    let list = json(&env.radd(&["--json", "drill", "list"]));
    assert_eq!(list[0]["name"], "test-rad");
    assert_eq!(list[0]["schedule"], "0 0 2 2 * *", "default: 02:00 UTC on the 2nd");
    std::fs::write(env.path().join("drills/broken.toml"), "name = 1\n").unwrap();
    let out = env.radd(&["drill", "list"]);
    assert_eq!(out.status.code(), Some(2), "an invalid drill file is a config error: {}", stderr(&out));
    assert!(stderr(&out).contains("broken.toml"), "{}", stderr(&out));
}
