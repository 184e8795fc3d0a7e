//! The CLI at its edges (issue 14 item 8): a closed pipe, error chains, an unset password
//! variable, five-field cron, every unknown key, the backup host's state files' modes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;

use crate::common::env::{Backend, TestEnv, stderr};
use crate::common::pause::background;

/// `radd ls latest | head -1`: the reader goes away after one line; radd ends quietly with 0.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    let env = TestEnv::new(Backend::Local);
    let tree = env.path().join("many");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..3000 {
        std::fs::write(tree.join(format!("file-{i:05}")), i.to_string()).unwrap();
    }
    assert!(env.radd_push(&["backup", "fs", tree.to_str().unwrap()]).status.success());
    let mut child = background(&env, &env.config, &["ls", "latest"]).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "a first line of the listing");
    // The read end is dropped here, as `head` does.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// An OS error is printed once, not once per layer that quotes it.
#[test]
fn an_os_error_is_printed_once() {
    let env = TestEnv::new(Backend::Local);
    let out = env.radd(&["backup", "fs", "/nonexistent/radd-test-path"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    let line = err.lines().find(|l| l.starts_with("radd: ")).expect("the error line");
    assert_eq!(line.matches("os error 2").count(), 1, "the OS error appears once: {line}");
    assert!(!err.contains('\x1b'), "no colour codes when stderr is not a terminal: {err}");
}

/// `--log-format json`: one JSON object per log line, no escape codes.
#[test]
fn json_logs_are_one_object_per_line() {
    let env = TestEnv::new(Backend::Local);
    let tree = env.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let out = env.radd_push(&["--log-format", "json", "backup", "fs", tree.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty(), "the backup logs something");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("level").is_some() && value.get("fields").is_some(), "{line}");
        assert!(!line.contains('\x1b'), "{line}");
    }
}

/// `password_env` naming an unset variable says which, without trying to log in.
#[test]
fn an_unset_password_variable_is_named() {
    let env = TestEnv::new(Backend::Local);
    let _source = env.source_cluster();
    let text = std::fs::read_to_string(&env.push_config).unwrap().replacen(
        "[postgres]\n",
        "[postgres]\npassword_env = \"RADD_TEST_UNSET_PW\"\n",
        1,
    );
    std::fs::write(&env.push_config, text).unwrap();
    let out = env.radd_push(&["backup", "pg"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("RADD_TEST_UNSET_PW") && stderr(&out).contains("not set"), "{}", stderr(&out));
}

/// Standard five-field cron is accepted; every unknown key is reported at once.
#[test]
fn config_accepts_five_field_cron_and_reports_every_unknown_key() {
    let env = TestEnv::new(Backend::Local);
    let good = std::fs::read_to_string(&env.config).unwrap() + "\n[daemon]\nbackup_schedule = \"30 1 * * *\"\n";
    std::fs::write(&env.config, &good).unwrap();
    let out = env.radd(&["snapshots"]);
    assert!(out.status.success(), "five-field cron accepted: {}", stderr(&out));
    let bad = good.replace("[daemon]\n", "[daemon]\nbackup_shedule = \"x\"\nverify_scedule = \"y\"\n");
    std::fs::write(&env.config, bad).unwrap();
    let out = env.radd(&["snapshots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("daemon.backup_shedule") && stderr(&out).contains("daemon.verify_scedule"),
        "{}",
        stderr(&out)
    );
}

/// The parent record holds every file's path and digest: 0600 in a 0700 directory.
#[test]
fn the_parent_record_is_private() {
    let env = TestEnv::new(Backend::Local);
    let tree = env.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    assert!(env.radd_push(&["backup", "fs", tree.to_str().unwrap()]).status.success());
    let state = env.path().join("state");
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    let records: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().collect();
    assert!(!records.is_empty());
    for record in records {
        assert_eq!(record.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{}", record.path().display());
    }
}

/// A restore that fails (here: the target's file system is full) names the target the operator
/// gave, not the hidden staging directory it has already removed.
#[test]
fn a_failed_restore_names_the_target_not_the_staging_directory() {
    let env = TestEnv::new(Backend::Local);
    let tree = env.path().join("big");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("data"), crate::common::env::noise(12 << 20, 7)).unwrap();
    assert!(env.radd_push(&["backup", "fs", tree.to_str().unwrap()]).status.success());
    let disk = crate::common::faults::SmallDisk::mount("4m");
    let target = disk.path().join("restored");
    let out = env.radd(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "12 MiB cannot fit in 4 MiB");
    let err = stderr(&out);
    assert!(err.contains(target.to_str().unwrap()), "names the target: {err}");
    assert!(!err.contains("radd-restore-"), "not the staging directory: {err}");
    assert!(err.contains("No space left") || err.contains("no space left"), "{err}");
}
