//! Retention on real snapshots: the plan (--dry-run), pins, forgetting, and that what is kept
//! still restores and verifies. Calendar rules are unit-tested with chosen times in
//! src/retention; here "now" is injected with --now instead of waiting.

use crate::common::env::{Backend, TestEnv, json, stderr};

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
    let forgotten: Vec<&str> = plan["decisions"].as_array().unwrap().iter().filter(|d| d["keep"] == false).map(|d| d["snapshot_id"].as_str().unwrap()).collect();
    assert_eq!(forgotten, [ids[1].as_str()]);
    let pinned = plan["decisions"].as_array().unwrap().iter().find(|d| d["snapshot_id"] == ids[0].as_str()).unwrap();
    assert!(pinned["reasons"].as_array().unwrap().iter().any(|r| r == "pinned"), "{pinned:#}");
    assert_eq!(json(&env.radd_push(&["--json", "snapshots"])).as_array().unwrap().len(), 4, "a dry run deletes nothing");

    let done = json(&env.radd_push(&["--json", "forget", "--keep-last", "2"]));
    assert_eq!(done["forgotten"], 1);
    let left: Vec<String> = json(&env.radd_push(&["--json", "snapshots"])).as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
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
