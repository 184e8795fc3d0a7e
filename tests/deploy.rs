//! The shipped deployment files (issue 14 item 7): the systemd unit is hardened
//! (`systemd-analyze security` below 3.0) and valid (`systemd-analyze verify`).

use std::path::Path;
use std::process::Command;

fn unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/radd.service")
}

#[test]
fn the_systemd_unit_is_hardened() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit())
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for radd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(level < 3.0, "exposure {level} must stay below 3.0:\n{text}");
}

#[test]
fn the_systemd_unit_verifies() {
    // verify checks that ExecStart= exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit()).unwrap().replace("/usr/local/bin/radd", env!("CARGO_BIN_EXE_radd"));
    let copy = dir.path().join("radd.service");
    std::fs::write(&copy, text).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("radd.service")).collect();
    assert!(out.status.success() && complaints.is_empty(), "systemd-analyze verify: {stderr}");
}
