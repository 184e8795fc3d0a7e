//! Progress bars (issue 14 item 5): drawn on stderr only when it is a terminal, with the total,
//! a rate and an ETA; nothing of them when stderr is a file or a pipe. The terminal is a real
//! pseudo-terminal from util-linux `script`, around the real binary, against a real cluster.

use std::path::Path;
use std::process::Command;

use crate::common::env::{Backend, TestEnv, radd_binary, run, sql, stderr, switch_and_wait_archived};

/// What a bar leaves in the output: carriage returns, escape sequences, the bar's own characters.
fn assert_no_bar(what: &str, text: &str) {
    for mark in ["\r", "\x1b", "ETA", "=>", "[==", "/s "] {
        assert!(!text.contains(mark), "{what}: stderr is not a terminal but shows {mark:?}:\n{text}");
    }
}

/// Runs radd under a pseudo-terminal (`script -qec CMD /dev/null`): stdout and stderr are both
/// the terminal, whose output (merged) is returned with whether radd exited 0.
fn radd_on_terminal(env: &TestEnv, config: &Path, args: &[&str]) -> (bool, String) {
    let which = Command::new("sh").args(["-c", "command -v script"]).output().expect("run sh");
    assert!(which.status.success(), "util-linux `script` is needed for the terminal tests: apt-get install bsdutils");
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line =
        format!("{} --config {}", quote(&radd_binary().display().to_string()), quote(&config.display().to_string()));
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).env("TERM", "xterm").env_remove("NO_COLOR");
    let out = run(&mut cmd, &env.env);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)))
}

/// The text between `before` and `after` on the first line holding both.
fn between<'a>(text: &'a str, before: &str, after: &str) -> &'a str {
    let start = text.find(before).unwrap_or_else(|| panic!("no {before:?} in:\n{text}")) + before.len();
    let rest = &text[start..];
    &rest[..rest.find(after).unwrap_or_else(|| panic!("no {after:?} after {before:?} in:\n{text}"))]
}

#[test]
fn no_progress_output_when_stderr_is_not_a_terminal() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g");
    let backup = env.radd_push(&["-v", "backup", "pg"]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    assert!(String::from_utf8_lossy(&backup.stdout).starts_with("snapshot "));
    assert_no_bar("backup pg", &stderr(&backup));
    switch_and_wait_archived(&source);

    let target = env.path().join("restored");
    let restore = env.radd(&["-v", "restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(restore.status.success(), "{}", stderr(&restore));
    assert!(String::from_utf8_lossy(&restore.stdout).contains("verified against the manifest"));
    assert_no_bar("restore", &stderr(&restore));

    let verify = env.radd(&["-v", "verify", "--read-data"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("verify ok"));
    assert_no_bar("verify --read-data", &stderr(&verify));
}

#[test]
fn a_terminal_shows_bars_with_total_rate_and_eta() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g");

    let (ok, out) = radd_on_terminal(&env, &env.push_config, &["backup", "pg"]);
    assert!(ok, "backup pg on a terminal failed:\n{out}");
    assert!(out.contains("backup pg [") && out.contains("/s") && out.contains("ETA"), "no backup bar:\n{out}");
    let total = between(&out, "unchanged since -), ", " total");
    assert!(out.contains(&format!("/{total} ")), "the bar does not show the data directory's {total}:\n{out}");
    switch_and_wait_archived(&source);

    // A failure clears its bar and prints the error alone.
    let occupied = env.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("x"), b"x").unwrap();
    let (ok, out) = radd_on_terminal(&env, &env.config, &["restore", "latest", "--target", occupied.to_str().unwrap()]);
    assert!(!ok, "a restore into a non-empty directory succeeded:\n{out}");
    assert!(out.contains("radd: restore target") && out.contains("is not empty"), "the error is missing:\n{out}");

    let target = env.path().join("restored");
    let (ok, out) = radd_on_terminal(&env, &env.config, &["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(ok, "restore on a terminal failed:\n{out}");
    assert!(out.contains("start it with: pg_ctl -D"), "the restore's own output is missing:\n{out}");
    let total = between(&out, " files, ", " verified against the manifest");
    assert!(
        out.contains("restore [") && out.contains(&format!("/{total} ")) && out.contains("/s") && out.contains("ETA"),
        "no restore bar with {total}:\n{out}"
    );

    let (ok, out) = radd_on_terminal(&env, &env.config, &["verify", "--read-data"]);
    assert!(ok, "verify on a terminal failed:\n{out}");
    assert!(out.contains("verify ok: "), "the verify's own output is missing:\n{out}");
    assert!(out.contains("verify [") && out.contains("/s") && out.contains("ETA"), "no verify bar:\n{out}");

    let (ok, out) = radd_on_terminal(&env, &env.config, &["key", "rewrap"]);
    assert!(ok, "key rewrap on a terminal failed:\n{out}");
    let rewrapped = between(&out, "rewrapped ", " objects to key set");
    assert!(
        out.contains(&format!("/{rewrapped} objects")) && out.contains("/s"),
        "no rewrap bar counting {rewrapped} objects:\n{out}"
    );

    let tree = env.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), crate::common::env::noise(4 << 20, 7)).unwrap();
    let (ok, out) = radd_on_terminal(&env, &env.push_config, &["backup", "fs", tree.to_str().unwrap()]);
    assert!(
        ok && out.contains("snapshot ") && out.contains("backup fs") && out.contains("/s"),
        "no backup fs spinner:\n{out}"
    );

    // --json keeps the terminal free of bars: one JSON document.
    let (ok, out) = radd_on_terminal(&env, &env.config, &["--json", "verify", "--read-data"]);
    assert!(ok, "{out}");
    assert!(
        !out.contains("ETA")
            && !out.contains("verify [")
            && !out.contains("\x1b[2K")
            && out.contains("\"read_data\": true"),
        "a bar with --json:\n{out}"
    );
}
