//! `radd check` (issue 14 item 3) on a good setup and on each miswiring an SRE makes: an
//! archive_command that is not radd, a key file readable by others, PostgreSQL down, a role
//! without the grants a backup needs.

use crate::common::env::{Backend, TestEnv, sql};

fn check(env: &TestEnv) -> (Option<i32>, serde_json::Value) {
    check_with(env, &[])
}

fn check_with(env: &TestEnv, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = env.radd_push(&[&["--json", "check", "--wait", "30s"], extra].concat());
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", crate::common::env::stderr(&out)));
    (out.status.code(), report)
}

fn line<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report:#}"))
}

#[test]
fn check_passes_on_a_good_setup_with_a_live_round_trip() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    // A fresh cluster has no heartbeat table: drills could not measure the RPO. --fix creates it.
    let (code, report) = check(&env);
    assert_eq!(code, Some(4), "{report:#}");
    assert_eq!(line(&report, "heartbeat")["ok"], false, "{report:#}");
    assert!(line(&report, "heartbeat")["detail"].as_str().unwrap().contains("--fix"), "{report:#}");
    let (code, report) = check_with(&env, &["--fix"]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(sql(&source, "SELECT count(*) FROM radd.heartbeat"), "1");
    let (code, report) = check(&env);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    for name in ["repository", "keys", "postgres", "grants", "heartbeat", "archive_command", "round_trip"] {
        assert_eq!(line(&report, name)["ok"], true, "{name}: {report:#}");
    }
    assert!(line(&report, "round_trip")["detail"].as_str().unwrap().contains("archived"), "{report:#}");
    assert!(
        line(&report, "keys")["detail"].as_str().unwrap().contains("not restore"),
        "the archiving host holds no identity: {report:#}"
    );
}

#[test]
fn check_names_each_miswiring() {
    // archive_command that is not radd: caught before any backup, the round trip not tried.
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster_with(&[], &[("archive_command", "/bin/true".into())]);
    let (code, report) = check(&env);
    assert_eq!(code, Some(4), "{report:#}");
    assert_eq!(line(&report, "archive_command")["ok"], false, "{report:#}");
    assert!(line(&report, "archive_command")["detail"].as_str().unwrap().contains("/bin/true"), "{report:#}");
    assert_eq!(line(&report, "round_trip")["ok"], false);

    // A role without the backup grants.
    sql(&source, "CREATE ROLE radd_limited LOGIN");
    let config = std::fs::read_to_string(&env.push_config).unwrap();
    std::fs::write(&env.push_config, config.replacen("[postgres]\n", "[postgres]\nuser = \"radd_limited\"\n", 1))
        .unwrap();
    let (code, report) = check(&env);
    assert_eq!(code, Some(4));
    let grants = line(&report, "grants");
    assert_eq!(grants["ok"], false, "{report:#}");
    assert!(grants["detail"].as_str().unwrap().contains("pg_backup_start"), "{report:#}");
    std::fs::write(&env.push_config, config).unwrap();

    // A key file readable by others.
    let id_key = env.path().join("id.key");
    std::fs::set_permissions(&id_key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, report) = check(&env);
    assert_eq!(code, Some(4));
    assert_eq!(line(&report, "keys")["ok"], false, "{report:#}");
    assert!(line(&report, "keys")["detail"].as_str().unwrap().contains("chmod 600"), "{report:#}");
    std::fs::set_permissions(&id_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // PostgreSQL down.
    drop(source);
    let (code, report) = check(&env);
    assert_eq!(code, Some(4));
    assert_eq!(line(&report, "postgres")["ok"], false, "{report:#}");
    assert_eq!(line(&report, "repository")["ok"], true, "the rest is still checked: {report:#}");
}
