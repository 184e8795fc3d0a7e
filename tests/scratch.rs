//! Ad-hoc scratch restores (issue 15 items 1, 3, 4, 6): `radd restore latest --scratch --time T`
//! serves exactly the rows committed before T on a DSN, read-only; `radd scratch list|stop`
//! manage it and leave nothing behind; the daemon stops an instance whose TTL ran out; limits,
//! the production port and the restorable window are enforced before anything is kept.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use radd::config::PostgresConfig;

use crate::common::env::{
    Backend, TestEnv, block_on, json, radd_binary, sql, sql_at, stderr, switch_and_wait_archived,
};
use crate::common::setup::insert_phase;

const PASSWORD: &str = "scratch-secret";

/// Stops every scratch instance of the test when dropped, so a failing test leaves no server.
struct StopAll<'a>(&'a TestEnv);

impl Drop for StopAll<'_> {
    fn drop(&mut self) {
        let _ = self.0.radd(&["scratch", "stop", "--all"]);
    }
}

/// The private socket of an instance, as its `dsn_socket` names it.
fn socket(instance: &serde_json::Value) -> PostgresConfig {
    PostgresConfig {
        host: instance["socket_dir"].as_str().expect("socket_dir").to_owned(),
        port: u16::try_from(instance["port"].as_u64().expect("port")).expect("port"),
        ..PostgresConfig::default()
    }
}

/// Runs `query` over the instance's TCP DSN with the source's password; the error's SQLSTATE.
fn over_dsn(instance: &serde_json::Value, query: &str) -> Result<String, String> {
    let dsn = instance["dsn"].as_str().expect("dsn");
    let mut config: tokio_postgres::Config = dsn.parse().expect("the DSN parses");
    config.password(PASSWORD);
    block_on(async {
        let (client, connection) =
            config.connect(tokio_postgres::NoTls).await.map_err(|e| format!("connect {dsn}: {e}"))?;
        tokio::spawn(connection);
        let rows = client
            .simple_query(query)
            .await
            .map_err(|e| e.code().map_or_else(|| e.to_string(), |c| c.code().to_owned()))?;
        Ok(rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
                _ => None,
            })
            .unwrap_or_default())
    })
}

fn scratch_dirs(env: &TestEnv) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(env.path().join("scratch")) else { return Vec::new() };
    entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

/// PostgreSQL processes running as `pid` or with `data_dir` on their command line (zombies,
/// already exited, do not count).
fn postgres_processes(pid: Option<i64>, data_dir: &Path) -> Vec<String> {
    let needle = data_dir.display().to_string();
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
    };
    let mut found: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let cmdline = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
            (cmdline.contains(&needle) && alive(&name)).then(|| format!("{name}: {cmdline}"))
        })
        .collect();
    if let Some(pid) = pid
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        && alive(&pid.to_string())
    {
        found.push(format!("{pid} (the recorded postmaster)"));
    }
    found
}

/// Asserts that nothing of an instance is left: no process, no directory, no socket.
fn assert_gone(instance: &serde_json::Value) {
    let data_dir = PathBuf::from(instance["data_dir"].as_str().expect("data_dir"));
    let socket = PathBuf::from(instance["socket_dir"].as_str().expect("socket_dir"))
        .join(format!(".s.PGSQL.{}", instance["port"]));
    let running = postgres_processes(instance["pid"].as_i64(), &data_dir);
    assert!(running.is_empty(), "postgres processes of {} still running: {running:#?}", data_dir.display());
    assert!(!data_dir.parent().expect("instance dir").exists(), "instance directory left: {}", data_dir.display());
    assert!(!socket.exists(), "socket left: {}", socket.display());
}

fn events_from(env: &TestEnv, source: &str) -> Vec<serde_json::Value> {
    let events = json(&env.radd(&["--json", "events"]));
    events.as_array().expect("events").iter().filter(|e| e["source"] == source).cloned().collect()
}

#[test]
fn scratch_restore_at_a_time_serves_the_rows_before_it_until_stopped() {
    let env = TestEnv::new(Backend::Local);
    let _cleanup = StopAll(&env);
    let source = env.source_cluster();
    sql(&source, &format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'"));
    sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, phase int)");
    insert_phase(&source, 1, 3000);
    env.backup_pg_id();
    insert_phase(&source, 2, 2000);
    let time = sql(&source, "SELECT clock_timestamp()");
    insert_phase(&source, 3, 1000);
    switch_and_wait_archived(&source);

    let started = Instant::now();
    let instance = json(&env.radd(&["--json", "restore", "latest", "--scratch", "--time", &time]));
    assert!(started.elapsed() < Duration::from_secs(300), "the scratch restore took {:?}", started.elapsed());
    let id = instance["id"].as_str().expect("id").to_owned();
    assert_eq!(instance["ready"], true, "{instance:#}");
    assert_eq!(instance["mode"], "paused", "{instance:#}");
    assert_eq!(instance["owner"], "root", "{instance:#}");
    let asked = radd::restore::parse_time(&time).expect("T");
    assert_eq!(
        instance["target_time"].as_str(),
        Some(asked.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).as_str()),
        "{instance:#}"
    );
    let reached_lsn: radd::pg::Lsn = instance["reached_lsn"].as_str().expect("reached_lsn").parse().expect("an LSN");
    assert!(reached_lsn.0 > 0);
    let reached_time =
        chrono::DateTime::parse_from_rfc3339(instance["reached_time"].as_str().expect("reached_time")).expect("a time");
    assert!(reached_time <= asked, "the last replayed commit ({reached_time}) is before T ({asked})");
    assert!(instance["rto_seconds"].as_f64().expect("rto") > 0.0, "{instance:#}");
    let expires = chrono::DateTime::parse_from_rfc3339(instance["expires"].as_str().expect("expires")).expect("a time");
    let ttl = expires.signed_duration_since(chrono::Utc::now());
    assert!(ttl > chrono::Duration::hours(3) && ttl <= chrono::Duration::hours(4), "default TTL 4h, got {ttl}");
    let dsn = instance["dsn"].as_str().expect("dsn");
    assert!(dsn.starts_with("postgresql://postgres@127.0.0.1:"), "{dsn}");

    // Exactly the rows committed before T, over the DSN (password) and the private socket.
    let counts = "SELECT string_agg(phase || ':' || n, ',' ORDER BY phase) FROM (SELECT phase, count(*) n FROM t GROUP BY phase) c";
    assert_eq!(over_dsn(&instance, counts).as_deref(), Ok("1:3000,2:2000"));
    assert_eq!(sql_at(&socket(&instance), counts), "1:3000,2:2000");
    assert_eq!(
        over_dsn(&instance, "INSERT INTO t (phase) VALUES (9)"),
        Err("25006".to_owned()),
        "read-only by default"
    );
    // The radd process that created it has exited: the server runs on, detached.
    let listed = json(&env.radd(&["--json", "scratch", "list"]));
    let listed = listed.as_array().expect("list");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["state"], "running", "{:#}", listed[0]);
    assert_eq!(listed[0]["dsn"], dsn);
    assert!(listed[0]["disk_bytes"].as_u64().expect("size") > 0);

    let out = env.radd(&["scratch", "stop", &id]);
    assert!(out.status.success(), "stop: {}", stderr(&out));
    assert_gone(&instance);
    assert_eq!(json(&env.radd(&["--json", "scratch", "list"])), serde_json::json!([]));

    let events = events_from(&env, "scratch");
    assert_eq!(events.len(), 2, "one change for the restore, one for the teardown: {events:#?}");
    assert!(events.iter().all(|e| e["kind"] == "change"), "{events:#?}");
    assert_eq!(events[0]["labels"]["owner"], "root", "{:#}", events[0]);
    assert!(
        events[0]["details"]["rto_seconds"].as_f64().is_some() && events[0]["details"]["expires"].is_string(),
        "{:#}",
        events[0]
    );
    assert!(events[0]["title"].as_str().is_some_and(|t| t.contains(&id) && t.contains("time ")), "{:#}", events[0]);
    assert_eq!(events[1]["details"]["reason"], "manual", "{:#}", events[1]);
}

#[test]
fn scratch_limits_window_and_production_port_are_refused_and_promote_is_writable() {
    let env = TestEnv::new(Backend::Local);
    let _cleanup = StopAll(&env);
    // No autovacuum: no transaction may commit after `last_commit` below.
    let source = env.source_cluster_with(&[], &[("autovacuum", "off".into())]);
    std::fs::write(
        &env.config,
        std::fs::read_to_string(&env.config).expect("config") + "\n[scratch]\nmax_instances = 1\n",
    )
    .expect("config");
    sql(&source, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
    env.backup_pg_id();
    // A time after the last commit but before the newest segment was archived: inside the
    // window as far as the archive's listing tells, yet no WAL after it to stop at.
    let last_commit = sql(&source, "SELECT clock_timestamp()");
    switch_and_wait_archived(&source);

    let small = env.path().join("small.toml");
    std::fs::write(
        &small,
        std::fs::read_to_string(&env.config)
            .expect("config")
            .replace("max_instances = 1", "max_instances = 1\nmax_bytes = \"1MiB\""),
    )
    .expect("config");
    let out = env.radd_with(&small, &["restore", "latest", "--scratch"]);
    assert_eq!(out.status.code(), Some(2), "max_bytes: {}", stderr(&out));
    assert!(stderr(&out).contains("[scratch] max_bytes"), "{}", stderr(&out));
    for (time, needle) in [
        ("2001-01-01 00:00:00+00", "before the oldest backup"),
        ("2999-01-01T00:00:00Z", "past the end of the archive"),
        (last_commit.as_str(), "archived WAL ends before"),
    ] {
        let out = env.radd(&["restore", "latest", "--scratch", "--time", time]);
        assert_eq!(out.status.code(), Some(2), "{time}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{time}: expected {needle:?} in {}", stderr(&out));
        assert_eq!(scratch_dirs(&env), Vec::<PathBuf>::new(), "{time}: nothing is kept");
    }
    let port = source.port().to_string();
    let out = env.radd(&["restore", "latest", "--scratch", "--port", &port]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("production cluster's port"), "{}", stderr(&out));
    let out = env.radd(&["restore", "latest", "--scratch", "--archive"]);
    assert_eq!(out.status.code(), Some(2), "--archive conflicts with --scratch: {}", stderr(&out));
    assert_eq!(scratch_dirs(&env), Vec::<PathBuf>::new());

    let first =
        json(&env.radd(&["--json", "restore", "latest", "--scratch", "--immediate", "--promote", "--ttl", "1h"]));
    assert_eq!(first["mode"], "promoted", "{first:#}");
    let here = socket(&first);
    sql_at(&here, "CREATE TABLE scratch_only AS SELECT 1 AS x");
    assert_eq!(sql_at(&here, "SELECT count(*) FROM t"), "1000");
    assert_eq!(sql_at(&here, "SELECT count(*) FROM scratch_only"), "1");

    let out = env.radd(&["restore", "latest", "--scratch"]);
    assert_eq!(out.status.code(), Some(2), "max_instances = 1: {}", stderr(&out));
    let id = first["id"].as_str().expect("id");
    assert!(stderr(&out).contains(&format!("radd scratch stop {id}")), "names the instance to stop: {}", stderr(&out));
    assert_eq!(scratch_dirs(&env).len(), 1);
    assert!(events_from(&env, "scratch").iter().all(|e| e["kind"] == "change"), "refusals are no incidents");

    let out = env.radd(&["scratch", "stop", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_gone(&first);
    // The source's own port and data are untouched.
    assert_eq!(sql(&source, "SELECT count(*) FROM t"), "1000");
}

#[test]
fn the_daemon_stops_an_instance_whose_ttl_ran_out() {
    let env = TestEnv::new(Backend::Local);
    let _cleanup = StopAll(&env);
    let source = env.source_with_ids(1000);
    env.backup_pg_id();
    sql(&source, "INSERT INTO t SELECT g FROM generate_series(1001, 1500) g");
    switch_and_wait_archived(&source);

    // `latest` without --promote: a hot standby that replayed the whole archive.
    let out = env.radd(&["restore", "latest", "--scratch", "--ttl", "3s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(" ready: ")
            && text.contains("postgresql://postgres@127.0.0.1:")
            && text.contains("RTO:")
            && text.contains("radd scratch stop "),
        "{text}"
    );
    let listed = json(&env.radd(&["--json", "scratch", "list"]));
    let instance = listed.as_array().and_then(|l| l.first()).cloned().expect("one instance");
    assert_eq!(instance["mode"], "standby", "{instance:#}");
    let table = String::from_utf8_lossy(&env.radd(&["scratch", "list"]).stdout).into_owned();
    assert!(
        table.contains(instance["id"].as_str().expect("id"))
            && (table.contains("running") || table.contains("expired")),
        "{table}"
    );
    assert_eq!(sql_at(&socket(&instance), "SELECT count(*) FROM t"), "1500");
    assert_eq!(sql_at(&socket(&instance), "SELECT pg_is_in_recovery()"), "t");

    let http = radd::pg::free_port().expect("port");
    let config = std::fs::read_to_string(&env.config).expect("config")
        + &format!(
            "\n[daemon]\nlisten = \"127.0.0.1:{http}\"\nbackup_schedule = \"\"\nretention_schedule = \"\"\nverify_schedule = \"\"\nheartbeat_interval = \"\"\nwatch_interval = \"1s\"\nshutdown_grace = \"5s\"\n"
        );
    let daemon_config = env.path().join("daemon.toml");
    std::fs::write(&daemon_config, config).expect("daemon config");
    let mut daemon = std::process::Command::new(radd_binary())
        .arg("--config")
        .arg(&daemon_config)
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start daemon");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !scratch_dirs(&env).is_empty() {
        if Instant::now() > deadline {
            let _ = daemon.kill();
            panic!("the daemon did not remove the expired instance within 60 s: {:?}", scratch_dirs(&env));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = daemon.wait().expect("daemon exit");
    assert!(status.success(), "daemon exit {status}");
    assert_gone(&instance);
    let events = events_from(&env, "scratch");
    let teardown = events.last().expect("a teardown event");
    assert_eq!(teardown["details"]["reason"], "expired", "{teardown:#}");
    assert_eq!(teardown["kind"], "change", "{teardown:#}");
}

/// `radd restore-point` before a "migration", then `restore latest --scratch --name`: the copy
/// holds exactly the state at the point (issue 15 acceptance), even with a later backup.
#[test]
fn scratch_restore_by_name_reaches_exactly_the_restore_point() {
    let env = TestEnv::new(Backend::Local);
    let _cleanup = StopAll(&env);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, phase int)");
    insert_phase(&source, 1, 2000);
    env.backup_pg_id();
    insert_phase(&source, 2, 500);
    let out = env.radd(&["--json", "restore-point", "before-migration"]);
    assert!(out.status.success(), "restore-point: {}", stderr(&out));
    sql(&source, "ALTER TABLE t ADD COLUMN migrated bool DEFAULT true");
    insert_phase(&source, 3, 700);
    env.backup_pg_id();
    switch_and_wait_archived(&source);

    let out = env.radd(&["--json", "restore", "latest", "--scratch", "--name", "before-migration"]);
    assert!(out.status.success(), "scratch --name: {}", stderr(&out));
    let instance = json(&out);
    let counts = "SELECT string_agg(phase || ':' || n, ',' ORDER BY phase) FROM (SELECT phase, count(*) n FROM t GROUP BY phase) c";
    assert_eq!(sql_at(&socket(&instance), counts), "1:2000,2:500", "{instance:#}");
    let columns = sql_at(
        &socket(&instance),
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'migrated'",
    );
    assert_eq!(columns, "0", "the migration came after the point");
    assert!(env.radd(&["scratch", "stop", instance["id"].as_str().expect("id")]).status.success());
    assert_gone(&instance);
}
