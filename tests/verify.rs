//! `radd verify`: a good repository passes on every backend; a flipped byte in a pack passes the
//! structure check but fails `--read-data` naming the pack; a deleted WAL segment is a gap named
//! in the output. Problems exit 3 so cron notices.

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};

/// A repository with one snapshot and several archived WAL segments after it.
fn env_with_backup(backend: Backend) -> TestEnv {
    let env = TestEnv::new(backend);
    let source = env.source_with_rows(20000);
    env.backup_pg();
    for _ in 0..3 {
        sql(&source, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g");
        switch_and_wait_archived(&source);
    }
    env
}

/// stdout parsed as JSON whatever the exit status (a failing verify still prints its report).
fn report(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}): {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), stderr(out))
    })
}

fn good_repository_verifies(backend: Backend) {
    let env = env_with_backup(backend);
    let out = env.radd(&["--json", "verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["read_data"], true, "{r}");
    assert!(r["problems"].as_array().expect("problems").is_empty(), "{r}");
    assert_eq!(r["snapshots"], 1, "{r}");
    assert!(r["packs"].as_u64().unwrap() > 0, "{r}");
    assert!(r["wal_segments"].as_u64().unwrap() >= 4, "{r}");
    // Every pack and WAL object was read on top of record, index and manifest.
    let objects = r["objects_checked"].as_u64().unwrap();
    assert!(objects >= 3 + r["packs"].as_u64().unwrap() + r["wal_segments"].as_u64().unwrap(), "{r}");
    assert!(r["bytes_read"].as_u64().unwrap() > 0, "{r}");
    let timelines = r["timelines"].as_array().expect("timelines");
    assert_eq!(timelines.len(), 1, "{r}");
    assert!(timelines[0]["gaps"].as_array().unwrap().is_empty(), "{r}");

    let out = env.radd(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("verify ok"), "{text}");

    // Manifests are encrypted: the archiving side (no identity) cannot verify.
    let out = env.radd_push(&["verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("identity"), "{}", stderr(&out));
}

crate::backend_matrix! {
    /// A good repository passes `verify --read-data` and `verify`; the archiving side cannot verify.
    fn verify_good_repository(backend) {
        good_repository_verifies(backend);
    }
}

#[test]
fn verify_read_data_finds_a_flipped_byte_in_a_pack() {
    let env = env_with_backup(Backend::Local);
    let key = env.corrupt_a_pack();

    // Structure only: records, indexes, manifests and the pack listing are intact.
    let out = env.radd(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "structure check must not read packs: {}", stderr(&out));

    let out = env.radd(&["--json", "verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&key), "error must name {key}: {}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["ok"], false, "{r}");
    let problems = r["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "only the damaged pack is a problem: {r}");
    assert_eq!(problems[0]["object"], key.as_str(), "{r}");
    assert!(["corrupt", "decrypt"].contains(&problems[0]["kind"].as_str().unwrap()), "{r}");
    // The run did not stop at the damaged pack: WAL was read too.
    assert!(r["objects_checked"].as_u64().unwrap() > r["packs"].as_u64().unwrap() + 3, "{r}");
}

#[test]
fn verify_reports_a_missing_wal_segment_as_a_gap() {
    let env = env_with_backup(Backend::Local);
    let victim = env.delete_wal_before_last();

    let out = env.radd(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&victim), "output must name {victim}: {text}");
    assert!(stderr(&out).contains(&victim) && stderr(&out).contains("1 problem"), "{}", stderr(&out));

    let out = env.radd(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r = report(&out);
    let problems = r["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{r}");
    assert_eq!(problems[0]["kind"], "gap", "{r}");
    assert_eq!(problems[0]["object"], format!("wal/00000001/{victim}"), "{r}");
    let gaps = r["timelines"][0]["gaps"].as_array().expect("gaps");
    assert_eq!(
        (gaps.len(), &gaps[0]["first"], &gaps[0]["missing"]),
        (1, &serde_json::json!(victim), &serde_json::json!(1)),
        "{r}"
    );

    // A known, accepted loss: recorded once (a change event), then no longer re-reported;
    // naming an archived segment is a usage error.
    let archived = r["timelines"][0]["first"].as_str().unwrap().to_owned();
    let out = env.radd(&["verify", "--accept-gap", &archived]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = env.radd(&["verify", "--accept-gap", &victim, "--reason", "lost in the 2026-11 storage incident"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.radd(&["--json", "verify"]);
    assert!(out.status.success(), "an accepted gap is not a problem: {}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["accepted_gaps"], serde_json::json!([victim]), "{r}");
    let events = crate::common::env::json(&env.radd(&["--json", "events"]));
    let accepted =
        events.as_array().unwrap().iter().find(|e| e["source"] == "verify.accept-gap").expect("an acceptance event");
    assert_eq!(accepted["kind"], "change", "{accepted:#}");
    assert!(accepted["details"]["reason"].as_str().unwrap().contains("storage incident"), "{accepted:#}");
}

/// Issue 7: daily `verify --read-data-due` over 30 simulated days reads every data object
/// exactly once, and a corrupted object is found within the period (exit 3, S1 incident).
#[test]
fn daily_verification_reads_each_object_once_per_period_and_finds_corruption() {
    let env = TestEnv::new(Backend::Local);
    let config = std::fs::read_to_string(&env.push_config).unwrap().replacen(
        "[backup]\n",
        "[backup]\npack_size = \"1MiB\"\n",
        1,
    );
    std::fs::write(&env.push_config, config).unwrap();
    let src = env.path().join("files");
    std::fs::create_dir(&src).unwrap();
    for i in 0..12u64 {
        std::fs::write(src.join(format!("f{i}")), crate::common::env::noise(700_000, i)).unwrap();
    }
    assert!(env.radd_push(&["backup", "fs", src.to_str().unwrap()]).status.success());
    let packs = std::fs::read_dir(env.local_object("packs")).unwrap().count();
    assert!(packs >= 6, "want several packs, have {packs}");

    let start = chrono::Utc::now();
    let mut reads: std::collections::BTreeMap<String, u32> = Default::default();
    for day in 0..30 {
        let now = (start + chrono::Duration::days(day)).to_rfc3339();
        let report = json(&env.radd(&["--json", "verify", "--read-data-due", "--now", &now]));
        for key in report["data_objects_read"].as_array().map(Vec::as_slice).unwrap_or_default() {
            *reads.entry(key.as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    let pack_reads: Vec<_> = reads.iter().filter(|(k, _)| k.starts_with("packs/")).collect();
    assert_eq!(pack_reads.len(), packs, "every pack read within the period: {reads:?}");
    assert!(reads.values().all(|&n| n == 1), "each object exactly once: {reads:?}");

    let damaged = env.corrupt_a_pack();
    let mut found = None;
    for day in 30..60 {
        let now = (start + chrono::Duration::days(day)).to_rfc3339();
        let out = env.radd(&["--json", "verify", "--read-data-due", "--now", &now]);
        if out.status.code() == Some(3) {
            found = Some((day, stderr(&out)));
            break;
        }
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (day, err) = found.expect("the corrupted pack is found within the next period");
    assert!(err.contains(&damaged), "day {day}: {err}");
    let events = json(&env.radd(&["--json", "events"]));
    let last = events.as_array().unwrap().last().unwrap();
    assert_eq!((last["source"].as_str(), last["severity"].as_str()), (Some("verify"), Some("S1")), "{last:#}");
}
