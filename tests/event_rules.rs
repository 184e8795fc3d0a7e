//! Which outcomes become incidents (issue 14 item 2): a wrong request is an exit code, a job
//! that could not run is an incident, and the error budget counts only time radd was there.

use crate::common::env::{Backend, TestEnv, json, stderr};

fn incidents(env: &TestEnv) -> Vec<serde_json::Value> {
    json(&env.radd(&["--json", "events"]))
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "incident")
        .cloned()
        .collect()
}

#[test]
fn wrong_restore_requests_are_exit_codes_not_incidents() {
    let env = TestEnv::new(Backend::Local);
    let tree = env.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    assert!(env.radd_push(&["backup", "fs", tree.to_str().unwrap()]).status.success());

    let target = env.path().join("out");
    let out = env.radd(&["restore", "ffffffffffff", "--target", target.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "an unknown snapshot fails");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("precious"), b"do not touch").unwrap();
    let out = env.radd(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "a non-empty target is refused: {}", stderr(&out));
    assert!(incidents(&env).is_empty(), "usage errors record no incident: {:#?}", incidents(&env));
}

#[test]
fn a_verify_that_cannot_run_is_an_incident() {
    let env = TestEnv::new(Backend::Local);
    let repo = env.path().join("repo");
    std::fs::rename(&repo, env.path().join("repo-moved")).unwrap();
    let out = env.radd(&["verify"]);
    assert_ne!(out.status.code(), Some(0));
    let found = incidents(&env);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["source"], "verify");
    assert_eq!(found[0]["severity"], "S2");
}

#[test]
fn the_budget_window_starts_with_the_first_event() {
    let env = TestEnv::new(Backend::Local);
    let tree = env.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    assert!(env.radd_push(&["backup", "fs", tree.to_str().unwrap()]).status.success());
    let report = json(&env.radd(&["--json", "events", "budget"]));
    assert!(report["history_seconds"].as_i64().unwrap() < 300, "{report:#}");
    assert_eq!(report["window_requested_seconds"], 30 * 86_400);
    assert_eq!(report["freshness"]["budget_remaining"], 1.0, "day one keeps its whole budget: {report:#}");
    let text = env.radd(&["events", "budget"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("of history"), "{}", String::from_utf8_lossy(&text.stdout));
}

/// A wrong identity during `verify --read-data` is one key incident naming the identity's
/// recipient, not one "this object was modified" problem per object.
#[test]
fn a_wrong_identity_is_one_key_incident() {
    let env = TestEnv::new(Backend::Local);
    let tree = env.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..5 {
        std::fs::write(tree.join(format!("f{i}")), crate::common::env::noise(200_000, i)).unwrap();
    }
    assert!(env.radd_push(&["backup", "fs", tree.to_str().unwrap()]).status.success());
    let other = env.path().join("other.key");
    let out = crate::common::env::run(
        std::process::Command::new(crate::common::env::radd_binary()).args(["keygen", "--identity"]).arg(&other),
        &[],
    );
    assert!(out.status.success());
    let wrong = env.path().join("wrong.toml");
    std::fs::write(&wrong, std::fs::read_to_string(&env.config).unwrap().replace("identity.key", "other.key")).unwrap();
    let out = env.radd_with(&wrong, &["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not one of the recipients"), "{}", stderr(&out));
    let found = incidents(&env);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["labels"]["error_type"], "crypto", "{:#}", found[0]);
}
