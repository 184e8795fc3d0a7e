//! Drills against production-like sources (issue 13 item 7): a source whose pg_hba.conf requires
//! passwords on TCP, and a drill stopped by SIGTERM or SIGINT. The scratch instance has its own
//! pg_hba.conf (trust on its private socket, nothing on TCP), so the drill never waits on a
//! password; a signal stops and removes it before radd exits.

use std::time::Duration;

use radd::config::PostgresConfig;

use crate::common::env::{Backend, TestEnv, block_on, find_file, json, sql_at, stderr};
use crate::common::pause::{finish_within, spawn_paused, wait_reached};

const DRILL: &str = r#"
name = "prod-like"
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
expect_min = 5000
[[checks.sql]]
name = "same as source"
query = "SELECT sum(id) FROM t"
expect_source = true
"#;

const PASSWORD_VAR: &str = "RADD_TEST_SOURCE_PASSWORD";

/// SQL on the source through its Unix socket (the only way in without the password).
fn sql_socket(env: &TestEnv, port: u16, query: &str) -> String {
    sql_at(
        &PostgresConfig { host: env.path().join("source").display().to_string(), port, ..PostgresConfig::default() },
        query,
    )
}

/// The usual production setting: scram-sha-256 on 127.0.0.1. radd's own configs get the
/// password through `password_env`; the drill still never needs it.
#[test]
fn a_drill_of_a_source_that_requires_passwords_passes_without_one() {
    let mut env = TestEnv::new(Backend::Local);
    env.env.push((PASSWORD_VAR.into(), "s3cret-pw".into()));
    let source = env.source_cluster();
    let port = source.port();
    sql_socket(&env, port, "ALTER USER postgres PASSWORD 's3cret-pw'");
    std::fs::write(
        source.data_dir().join("pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    sql_socket(&env, port, "SELECT pg_reload_conf()");
    for config in [&env.push_config, &env.config] {
        let text = std::fs::read_to_string(config).unwrap().replacen(
            "[postgres]\n",
            &format!("[postgres]\npassword_env = \"{PASSWORD_VAR}\"\n"),
            1,
        );
        std::fs::write(config, text).unwrap();
    }
    // The source really refuses TCP logins without the password.
    let refused = block_on(radd::pg::connect(&source.connection()));
    assert!(refused.is_err(), "the source must require a password on 127.0.0.1");

    sql_socket(&env, port, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5000) g");
    let backup = env.radd_push(&["backup", "pg"]);
    assert!(backup.status.success(), "backup with the password: {}", stderr(&backup));
    sql_socket(&env, port, "SELECT pg_logical_emit_message(false, 'radd-test', 'switch')");
    sql_socket(&env, port, "SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(env.path().join("drills/prod-like.toml"), DRILL).unwrap();

    let started = std::time::Instant::now();
    let out = env.radd(&["--json", "drill", "run", "prod-like"]);
    let report = json(&out);
    assert_eq!(report["passed"], true, "{report:#}");
    assert!(started.elapsed() < Duration::from_secs(150), "the drill never waits for an authentication timeout");
    let starts =
        report["checks"].as_array().unwrap().iter().find(|c| c["check"] == "starts").expect("starts check").clone();
    assert!(starts["detail"].as_str().unwrap().contains("socket"), "{starts:#}");
    // A fresh install: the source has no heartbeat yet, so the RPO is skipped with the reason.
    let rpo = report["checks"].as_array().unwrap().iter().find(|c| c["check"] == "rpo").expect("rpo check").clone();
    assert_eq!(rpo["status"], "skipped", "{rpo:#}");
    assert!(rpo["detail"].as_str().unwrap().contains("radd heartbeat"), "{rpo:#}");
    drop(source);
}

/// While a drill's scratch instance runs it listens on no TCP port; SIGTERM and SIGINT to
/// `radd drill run` stop it and remove its directory before radd exits (code 130).
#[test]
fn a_signal_stops_and_removes_the_drill_instance() {
    let env = TestEnv::new(Backend::Local);
    let _source = env.source_with_backup(5000);
    std::fs::write(env.path().join("drills/prod-like.toml"), DRILL).unwrap();
    let scratch = env.path().join("scratch");

    for signal in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT] {
        let point = "drill:started";
        let _ = std::fs::remove_file(env.path().join("drill-started.reached"));
        let mut drill = spawn_paused(&env, &env.config, &["drill", "run", "prod-like"], point);
        wait_reached(&env, &mut drill, point);

        // The running instance: postmaster.pid's lines are pid, data dir, start, port, socket
        // directory, listen address (empty: no TCP).
        let pid_file = find_file(&scratch, "postmaster.pid").expect("a running scratch instance");
        let text = std::fs::read_to_string(&pid_file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.get(5).copied(), Some(""), "the scratch instance listens on no TCP address: {text}");
        let port: u16 = lines[3].trim().parse().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens on TCP port {port}");

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(drill.id()).unwrap()), signal).unwrap();
        let out = finish_within(drill, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(130), "{signal}: {}", stderr(&out));
        assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
        let left: Vec<_> = std::fs::read_dir(&scratch)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{signal}: scratch directories left behind: {left:?}");
        let ps =
            std::process::Command::new("pgrep").args(["-f", &scratch.display().to_string()]).output().expect("pgrep");
        assert!(
            ps.stdout.is_empty(),
            "{signal}: scratch postgres still running: {}",
            String::from_utf8_lossy(&ps.stdout)
        );
    }
    let events = json(&env.radd(&["--json", "events"]));
    assert!(
        events.as_array().unwrap().iter().all(|e| e["kind"] != "incident"),
        "an operator's signal is not an incident: {events:#}"
    );
}
