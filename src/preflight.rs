//! `radd check` (as `pgbackrest check`, `barman check`): proves the wiring before the first
//! backup finds it broken — configuration, repository, keys and this host's capabilities,
//! PostgreSQL connectivity and the role's grants, `archive_mode`/`archive_command`, and a live
//! round trip (a WAL switch whose segment must reach the repository). Each check is one line;
//! a failed one says what to fix. Composes the layers below it; holds no domain logic.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::pg;
use crate::repository::Repository;

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name (`repository`, `postgres`, `grants`, `archive_command`, `round_trip`, …).
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, or what is wrong and what to do.
    pub detail: String,
}

/// Every check run, in order.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The checks.
    pub checks: Vec<Check>,
    /// Whether all passed.
    pub ok: bool,
}

impl CheckReport {
    fn push(&mut self, check: &str, result: Result<String, String>) -> bool {
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        self.checks.push(Check { check: check.to_owned(), ok, detail });
        ok
    }
}

/// What to do about radd's heartbeat table on the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatCheck {
    /// Not checked (a daemon with `heartbeat_interval = ""`: drills report RPO as skipped).
    Skip,
    /// It must exist: without it a drill cannot measure the RPO.
    Require,
    /// Create it if needed and write a beat (`radd check --fix`, the daemon at start).
    Create,
}

/// Which checks run and how.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Bound on the wait for the switched segment; zero skips the round trip (no WAL switch).
    pub round_trip_wait: Duration,
    /// The heartbeat table.
    pub heartbeat: HeartbeatCheck,
}

/// Runs every check against `config`.
pub async fn run(config: &Config, options: CheckOptions) -> CheckReport {
    let round_trip_wait = options.round_trip_wait;
    let mut report = CheckReport { checks: Vec::new(), ok: false };
    let repo = match Repository::open(config, false).await {
        Ok(repo) => {
            report.push(
                "repository",
                Ok(format!("{} (format {}, id {})", repo.location(), repo.meta.format, repo.meta.id)),
            );
            Some(repo)
        }
        Err(e) => {
            report.push("repository", Err(e.to_string()));
            None
        }
    };
    report.push("keys", keys(config));

    let client = match pg::connect(&config.postgres).await {
        Ok(client) => client,
        Err(e) => {
            report.push("postgres", Err(e.to_string()));
            return finish(report);
        }
    };
    match client.query_one("SELECT current_setting('server_version'), current_user", &[]).await {
        Ok(row) => report.push(
            "postgres",
            Ok(format!(
                "PostgreSQL {} at {}:{} as {}",
                row.get::<_, String>(0),
                config.postgres.host,
                config.postgres.port,
                row.get::<_, String>(1)
            )),
        ),
        Err(e) => report.push("postgres", Err(pg::describe(&e))),
    };
    report.push("grants", grants(&client).await);
    if options.heartbeat != HeartbeatCheck::Skip {
        report.push("heartbeat", heartbeat(config, &client, options.heartbeat == HeartbeatCheck::Create).await);
    }
    let wired = report.push("archive_command", archive_settings(&client).await);
    if round_trip_wait > Duration::ZERO {
        match &repo {
            Some(repo) if wired => {
                report.push("round_trip", round_trip(&client, repo, round_trip_wait).await);
            }
            Some(_) => {
                report
                    .push("round_trip", Err("not tried: archiving is not wired to radd (see archive_command)".into()));
            }
            None => {
                report.push("round_trip", Err("not tried: the repository cannot be opened".into()));
            }
        }
    }
    finish(report)
}

fn finish(mut report: CheckReport) -> CheckReport {
    report.ok = report.checks.iter().all(|c| c.ok);
    report
}

/// Key files load (which refuses modes readable by others) and what this host can do.
fn keys(config: &Config) -> Result<String, String> {
    if let Some(path) = &config.keys.id_key_file
        && path.exists()
    {
        // Only whether it loads: which keyed hash it will serve is the repository's business.
        crate::crypto::IdKey::load(path, crate::crypto::KeyedHash::Blake3PerPurpose).map_err(|e| e.to_string())?;
    }
    match &config.keys.identity_file {
        Some(path) if path.exists() => {
            crate::crypto::Identity::load(path).map_err(|e| e.to_string())?;
            Ok(format!("identity {} readable: this host can archive, back up and restore", path.display()))
        }
        Some(path) => Ok(format!(
            "no identity at {}: this host can archive and back up, not restore or verify data",
            path.display()
        )),
        None => Ok("recipients only: this host can archive and back up, not restore or verify data".into()),
    }
}

/// The role may run a base backup (pg_backup_start/stop), switch WAL and read the settings
/// radd reads (config file locations).
async fn grants(client: &tokio_postgres::Client) -> Result<String, String> {
    let query = "SELECT r.rolsuper, \
                 has_function_privilege('pg_backup_start(text, boolean)', 'execute'), \
                 has_function_privilege('pg_backup_stop(boolean)', 'execute'), \
                 has_function_privilege('pg_switch_wal()', 'execute'), \
                 pg_has_role(current_user, 'pg_read_all_settings', 'member') \
                 FROM pg_roles r WHERE r.rolname = current_user";
    let row = client.query_one(query, &[]).await.map_err(|e| pg::describe(&e))?;
    let (superuser, start, stop, switch, settings): (bool, bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if superuser {
        return Ok("superuser".into());
    }
    let mut missing = Vec::new();
    for (granted, what) in [
        (start, "GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO <role>"),
        (stop, "GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO <role>"),
        (switch, "GRANT EXECUTE ON FUNCTION pg_switch_wal() TO <role>"),
        (settings, "GRANT pg_read_all_settings TO <role>"),
    ] {
        if !granted {
            missing.push(what);
        }
    }
    if missing.is_empty() {
        Ok("backup functions, pg_switch_wal, pg_read_all_settings".into())
    } else {
        Err(format!("the role lacks grants radd needs: {}", missing.join("; ")))
    }
}

/// radd's heartbeat table exists on the source (created with `create`, on the primary when
/// the source is a standby).
async fn heartbeat(config: &Config, client: &tokio_postgres::Client, create: bool) -> Result<String, String> {
    if create {
        let primary = config.postgres.primary_connection();
        let connected;
        let target = match &primary {
            None => client,
            Some(p) => {
                connected = pg::connect(p).await.map_err(|e| {
                    format!("cannot reach the primary {}:{} to create radd.heartbeat: {e}", p.host, p.port)
                })?;
                &connected
            }
        };
        let dbname = primary.as_ref().map_or(&config.postgres.dbname, |p| &p.dbname);
        let at = pg::heartbeat::beat(target).await.map_err(|e| {
            format!("cannot create radd.heartbeat: {e}; GRANT CREATE ON DATABASE {dbname} TO <role> (or create schema radd once as a superuser)")
        })?;
        return Ok(format!("radd.heartbeat written at {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    match pg::heartbeat::read(client).await.map_err(|e| e.to_string())? {
        Some(at) => Ok(format!("radd.heartbeat last written {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))),
        None => Err("radd.heartbeat does not exist, so drills cannot measure the RPO: run `radd check --fix` (or start the daemon with daemon.heartbeat_interval set) to create it".into()),
    }
}

/// `archive_mode` is on and `archive_command` hands segments to `radd … wal-push`.
async fn archive_settings(client: &tokio_postgres::Client) -> Result<String, String> {
    let row = client
        .query_one("SELECT current_setting('archive_mode'), current_setting('archive_command')", &[])
        .await
        .map_err(|e| pg::describe(&e))?;
    let (mode, command): (String, String) = (row.get(0), row.get(1));
    if mode == "off" {
        return Err("archive_mode = off: set archive_mode = on (needs a restart) and archive_command = 'radd --config … wal-push %p'".into());
    }
    if !(command.contains("radd") && command.contains("wal-push") && command.contains("%p")) {
        return Err(format!(
            "archive_command = {command:?} does not hand segments to radd: set archive_command = 'radd --config /etc/radd/radd.toml wal-push %p' and reload"
        ));
    }
    Ok(format!("archive_mode = {mode}, archive_command runs radd wal-push"))
}

/// Switches WAL and waits until that segment is in the repository.
async fn round_trip(client: &tokio_postgres::Client, repo: &Repository, wait: Duration) -> Result<String, String> {
    let clock = Instant::now();
    // A switch with nothing written since the last one archives nothing: write a record first.
    client
        .simple_query("SELECT pg_logical_emit_message(false, 'radd-check', 'switch')")
        .await
        .map_err(|e| pg::describe(&e))?;
    let row = client.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await.map_err(|e| pg::describe(&e))?;
    let name: String = row.get(0);
    // A segment name starts with its timeline (8 hex digits).
    let timeline = name
        .get(..8)
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .map(pg::Timeline)
        .ok_or_else(|| format!("pg_walfile_name() returned {name:?}, not a segment name"))?;
    match crate::archive::wait_archived(repo, timeline, &name, wait).await {
        Ok(true) => Ok(format!("segment {name} archived {:.1}s after pg_switch_wal()", clock.elapsed().as_secs_f64())),
        Ok(false) => Err(format!(
            "segment {name} did not reach the repository within {}s of pg_switch_wal(): see the PostgreSQL log for archive_command errors and pg_stat_archiver",
            wait.as_secs()
        )),
        Err(e) => Err(e.to_string()),
    }
}
