//! The daemon: /metrics over HTTP with backup and drill series (checked by promtool), heartbeat
//! on the source, clean exit on SIGTERM.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::env::{Backend, TestEnv, http_get, json, radd_binary, stderr, switch_and_wait_archived};
use crate::common::pause::{background, finish_within, resume, wait_reached};

#[test]
fn daemon_serves_metrics_and_stops_on_sigterm() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_with_ids(1000);
    assert!(env.radd_push(&["heartbeat"]).status.success());
    let backup = env.radd(&["backup", "pg"]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    switch_and_wait_archived(&source);
    std::fs::write(
        env.path().join("drills/quick.toml"),
        "name = \"quick\"\n[checks]\npage_integrity = false\n[[checks.sql]]\nname = \"rows\"\nquery = \"SELECT count(*) FROM t\"\nexpect = \"1000\"\n",
    )
    .unwrap();
    let drill = json(&env.radd(&["--json", "drill", "run", "quick"]));
    assert_eq!(drill["passed"], true, "{drill:#}");

    let port = radd::pg::free_port().expect("port");
    let config = std::fs::read_to_string(&env.config).unwrap()
        + &format!(
            "\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nbackup_schedule = \"\"\nverify_schedule = \"* * * * * *\"\nheartbeat_interval = \"1s\"\nwatch_interval = \"1s\"\nshutdown_grace = \"5s\"\n"
        );
    let daemon_config = env.path().join("daemon.toml");
    std::fs::write(&daemon_config, config).unwrap();
    let mut cmd = std::process::Command::new(radd_binary());
    cmd.arg("--config").arg(&daemon_config).arg("daemon");
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start daemon");

    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Some(body) = http_get(port, "/metrics")
            .filter(|b| b.contains("radd_heartbeat_timestamp_seconds ") && b.contains("radd_source_up 1"))
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not serve /metrics with a heartbeat and a source probe within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(http_get(port, "/healthz").as_deref(), Some("ok\n"));
    for series in [
        "radd_last_success_timestamp_seconds{task=\"backup.pg\"}",
        "radd_last_success_timestamp_seconds{task=\"drill.quick\"}",
        "radd_drill_passed{drill=\"quick\"} 1",
        "radd_drill_check_passed{check=\"checksums\",drill=\"quick\"} 1",
        "radd_drill_rto_seconds{drill=\"quick\"}",
        "radd_backup_bytes{kind=\"new\",task=\"backup.pg\"}",
        "radd_archive_pending_segments ",
        "radd_archive_lag_seconds ",
        "radd_archive_failures_total 0",
        "radd_source_up 1",
        "radd_task_configured{task=\"drill.quick\"} 1",
    ] {
        assert!(metrics.contains(series), "missing {series} in:\n{metrics}");
    }
    promtool_check(&metrics);
    // The verify scheduled every second has finished at least once by now.
    std::thread::sleep(Duration::from_secs(3));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "daemon did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(status.success(), "daemon exit {status}: {log}");
    assert!(log.contains("daemon stopped"), "{log}");
    // One line per scheduled run: task, outcome, duration, what it did.
    let line = log
        .lines()
        .find(|l| l.contains("task finished") && l.contains("task=verify"))
        .unwrap_or_else(|| panic!("no task line: {log}"));
    assert!(line.contains("outcome=\"ok\"") || line.contains("outcome=ok"), "{line}");
    assert!(line.contains("seconds=") && line.contains("objects"), "{line}");
}

/// `promtool check metrics` when promtool is installed; under CI it must be (.ci/run installs it).
fn promtool_check(metrics: &str) {
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match promtool {
        Ok(child) => child,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "promtool is required under CI: {e}");
            eprintln!("promtool not installed here: metrics lint not run (CI installs it)");
            return;
        }
    };
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A source that goes away while the daemon runs: archive lag is not measured, so it is left
/// out (never 0), and `radd_source_up` is 0 with the reason logged once (not every probe).
#[test]
fn unreachable_source_is_not_reported_as_zero_lag() {
    let env = TestEnv::new(Backend::Local);
    let mut source = env.source_cluster();
    let port = radd::pg::free_port().expect("port");
    let config = std::fs::read_to_string(&env.config).unwrap()
        + &format!(
            "\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nbackup_schedule = \"\"\nretention_schedule = \"\"\nverify_schedule = \"\"\nheartbeat_interval = \"\"\nwatch_interval = \"200ms\"\nshutdown_grace = \"5s\"\n"
        );
    let daemon_config = env.path().join("daemon.toml");
    std::fs::write(&daemon_config, config).unwrap();
    let log_path = env.path().join("daemon.log");
    let mut cmd = background(&env, &daemon_config, &["daemon"]);
    cmd.stderr(std::fs::File::create(&log_path).unwrap());
    let child = cmd.spawn().expect("start daemon");
    wait_for_metrics(port, "radd_source_up 1", &log_path);
    let source_port = source.port();
    source.stop().expect("stop the source");
    let metrics = wait_for_metrics(port, "radd_source_up 0", &log_path);
    assert!(
        !metrics.contains("radd_archive_lag_seconds ") && !metrics.contains("radd_archive_pending_segments "),
        "unmeasured lag exported:\n{metrics}"
    );
    assert!(metrics.contains("radd_build_info{version=\""), "{metrics}");
    // Several more probes fail (every 200 ms); the warning stays one line.
    std::thread::sleep(Duration::from_secs(1));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let out = finish_within(child, Duration::from_secs(30));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(out.status.success(), "daemon exit {}: {log}", out.status);
    let warnings = log.lines().filter(|l| l.contains("cannot measure WAL archiving on the source")).count();
    assert_eq!(warnings, 1, "the reason is logged once per change:\n{log}");
    assert!(log.contains(&format!("127.0.0.1:{source_port}")), "the reason names the source:\n{log}");
}

/// Polls /metrics until it contains `wanted` (30 s), failing with the daemon's log.
fn wait_for_metrics(port: u16, wanted: &str, log: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(body) = http_get(port, "/metrics").filter(|b| b.contains(wanted)) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics did not show {wanted} within 30 s; daemon log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon runs `radd check`'s checks at start and refuses to start on a failure, naming
/// it: PostgreSQL down, and archive_command not wired to radd.
#[test]
fn daemon_refuses_to_start_when_a_check_fails() {
    let env = TestEnv::new(Backend::Local);
    let closed = radd::pg::free_port().expect("port");
    let daemon_section = |port: u16| {
        format!("\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nbackup_schedule = \"\"\nshutdown_grace = \"5s\"\n")
    };
    let down = std::fs::read_to_string(&env.config).unwrap()
        + &format!("\n[postgres]\nhost = \"127.0.0.1\"\nport = {closed}\n")
        + &daemon_section(radd::pg::free_port().unwrap());
    let config = env.path().join("down.toml");
    std::fs::write(&config, down).unwrap();
    let out = finish_within(background(&env, &config, &["daemon"]).spawn().unwrap(), Duration::from_secs(60));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert!(
        log.contains("start check failed") && log.contains(&format!("127.0.0.1:{closed}")),
        "names the unreachable source: {log}"
    );
    assert!(log.contains("refuses to start") && log.contains("postgres"), "{log}");

    let _source = env.source_cluster_with(&[], &[("archive_command", "/bin/true".into())]);
    let miswired = std::fs::read_to_string(&env.config).unwrap() + &daemon_section(radd::pg::free_port().unwrap());
    let config = env.path().join("miswired.toml");
    std::fs::write(&config, miswired).unwrap();
    let out = finish_within(background(&env, &config, &["daemon"]).spawn().unwrap(), Duration::from_secs(60));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert!(log.contains("archive_command") && log.contains("/bin/true"), "names the miswiring: {log}");
    assert!(!log.contains("serving /metrics"), "it did not start: {log}");
}

/// SIGHUP reloads the configuration and the schedules: a backup running at the reload still
/// commits, the schedule it came from stops, a new task is scheduled, and a broken file keeps
/// the previous configuration (radd_config_last_reload_successful 0) instead of stopping.
#[test]
fn sighup_reloads_schedules_without_dropping_a_running_backup() {
    let env = TestEnv::new(Backend::Local);
    let _source = env.source_with_ids(1000);
    let port = radd::pg::free_port().expect("port");
    let base = std::fs::read_to_string(&env.config).unwrap();
    let daemon = |schedules: &str| {
        format!(
            "{base}\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n{schedules}\nverify_schedule = \"\"\nheartbeat_interval = \"1s\"\nwatch_interval = \"500ms\"\nshutdown_grace = \"30s\"\n"
        )
    };
    let daemon_config = env.path().join("daemon.toml");
    std::fs::write(&daemon_config, daemon("backup_schedule = \"* * * * * *\"\nretention_schedule = \"\"")).unwrap();
    let log_path = env.path().join("daemon.log");
    let mut cmd = background(&env, &daemon_config, &["daemon"]);
    cmd.env("RADD_PAUSE_AT", "backup:before-commit").env("RADD_PAUSE_DIR", env.path());
    cmd.stderr(std::fs::File::create(&log_path).unwrap());
    let mut child = cmd.spawn().expect("start daemon");
    wait_reached(&env, &mut child, "backup:before-commit");

    // Reload while the backup waits before its commit: no backup schedule, a retention one.
    std::fs::write(&daemon_config, daemon("backup_schedule = \"\"\nretention_schedule = \"0 0 3 * * *\"")).unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let metrics = wait_for_metrics(port, "radd_task_configured{task=\"retention.prune\"} 1", &log_path);
    assert!(
        !metrics.contains("radd_task_configured{task=\"backup.pg\"}"),
        "the removed schedule is no longer configured:\n{metrics}"
    );
    assert!(metrics.contains("radd_config_last_reload_successful 1"), "{metrics}");
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP must not stop the daemon");

    resume(&env, "backup:before-commit");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log_path).unwrap().contains("outcome=\"ok\"")
        && !std::fs::read_to_string(&log_path).unwrap().contains("outcome=ok")
    {
        assert!(
            Instant::now() < deadline,
            "the running backup did not finish after the reload:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // No new backup starts: the schedule is gone.
    std::thread::sleep(Duration::from_secs(3));
    let snapshots = json(&env.radd(&["--json", "snapshots"]));
    assert_eq!(
        snapshots.as_array().map(Vec::len),
        Some(1),
        "exactly the backup that ran across the reload: {snapshots:#}"
    );

    // A broken file: logged, the previous configuration kept, still serving.
    std::fs::write(&daemon_config, "this is not toml = [").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    wait_for_metrics(port, "radd_config_last_reload_successful 0", &log_path);
    assert!(child.try_wait().unwrap().is_none(), "a bad reload must not stop the daemon");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let out = finish_within(child, Duration::from_secs(30));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(out.status.success(), "daemon exit {}: {log}", out.status);
    assert!(log.contains("configuration not reloaded"), "{log}");
}
