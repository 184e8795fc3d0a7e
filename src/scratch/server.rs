//! Starting a managed instance and waiting until it answers queries at its target.
//!
//! The instance keeps the restored server's own settings (memory, `max_connections`, which a
//! hot standby must not lower, extensions), included from the restored postgresql.conf, and
//! overrides on the command line everything that ties it to a place or a role: its data
//! directory, its own pg_hba.conf (trust on its private socket, password authentication on
//! 127.0.0.1 — a copy of production data is not open to every local user), no pid file, TLS or
//! log collector of production's, no streaming from production's primary, and how recovery
//! ends (pause at the target, stay a standby, or promote).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::pg::ScratchCluster;

use super::{Error, Host, Instance, Mode};
use crate::config::PostgresConfig;
use crate::pg::{self, Lsn};

/// The instance's own configuration (see [`pg::instance`]) with how its recovery ends: a
/// hot standby that pauses at the target, stays a standby, or promotes.
fn own_settings(
    run_dir: &Path,
    data_dir: &Path,
    id: &str,
    mode: Mode,
    has_target: bool,
) -> std::io::Result<Vec<(&'static str, String)>> {
    let mut settings = pg::instance::own_config(
        run_dir,
        data_dir,
        &format!("radd scratch instance {id}"),
        pg::instance::Access::LoopbackPassword,
    )?;
    settings.push(("cluster_name", format!("radd-scratch-{id}")));
    settings.push(("hot_standby", "on".into()));
    if has_target {
        let action = if mode == Mode::Promoted { "promote" } else { "pause" };
        settings.push(("recovery_target_action", action.into()));
    }
    Ok(settings)
}

/// Connection settings for radd's own queries: the private socket, no password.
fn socket_connection(socket_dir: &Path, port: u16, user: &str, dbname: &str) -> PostgresConfig {
    PostgresConfig {
        host: socket_dir.display().to_string(),
        port,
        user: user.to_owned(),
        dbname: dbname.to_owned(),
        ..PostgresConfig::default()
    }
}

/// What the instance must show before it is ready.
#[derive(Debug, Clone, Copy)]
pub enum Ready {
    /// Replay paused at the target.
    Paused,
    /// Replayed at least up to this LSN (the start of the newest archived segment).
    ReplayedTo(Lsn),
    /// Recovery ended and it accepts writes.
    Promoted,
}

/// Polls until the instance is ready, its postmaster dies, or `timeout` passes.
async fn wait_ready(
    connection: &PostgresConfig,
    data_dir: &Path,
    ready: Ready,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not yet accepting connections");
    while Instant::now() < deadline {
        if super::instance::postmaster_pid(data_dir).is_none_or(|pid| !super::instance::is_postgres(pid)) {
            return Err(format!("the server exited during recovery ({last})"));
        }
        match pg::connect(connection).await {
            Ok(client) => match check(&client, ready).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = e,
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("not ready within {} ({last})", humantime::format_duration(timeout)))
}

async fn check(client: &tokio_postgres::Client, ready: Ready) -> Result<bool, String> {
    let query = match ready {
        // pg_get_wal_replay_pause_state() exists from PostgreSQL 14 on; before, a requested
        // pause is the only kind there is.
        Ready::Paused => "SELECT CASE WHEN current_setting('server_version_num')::int >= 140000 \
             THEN (SELECT pg_get_wal_replay_pause_state()::text = 'paused') ELSE pg_is_wal_replay_paused() END"
            .to_owned(),
        Ready::ReplayedTo(lsn) => format!("SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, false)"),
        Ready::Promoted => "SELECT NOT pg_is_in_recovery()".to_owned(),
    };
    let row = client.query_one(query.as_str(), &[]).await.map_err(|e| pg::describe(&e))?;
    Ok(row.get::<_, bool>(0))
}

/// The recovery point the instance reached: the last replayed WAL position and the commit
/// time of the last replayed transaction (both stay fixed after promotion).
async fn reached(connection: &PostgresConfig) -> Result<(Option<Lsn>, Option<String>), String> {
    let client = pg::connect(connection).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT pg_last_wal_replay_lsn()::text, to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .map_err(|e| pg::describe(&e))?;
    let lsn: Option<String> = row.get(0);
    Ok((lsn.and_then(|l| l.parse().ok()), row.get(1)))
}

/// Writes the instance's own configuration into its run directory, starts the server detached
/// and waits until it is `ready`; records the pid, the point reached and the RTO (seconds since
/// `clock`) in `inst`. The server is stopped again when anything fails.
pub async fn start(
    host: &Host,
    inst: &mut Instance,
    ready: Ready,
    has_target: bool,
    clock: Instant,
) -> Result<(), Error> {
    let run_dir = inst.socket_dir.clone();
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { what, path, source }
    };
    std::fs::create_dir(&run_dir).map_err(io("create", &run_dir))?;
    let settings = own_settings(&run_dir, &inst.data_dir, &inst.id, inst.mode, has_target)
        .map_err(io("write the configuration into", &run_dir))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("make private", &run_dir))?;
    }
    let mut cluster = ScratchCluster::new(&host.bin_dir, &run_dir)
        .map_err(|source| Error::Start { id: inst.id.clone(), source })?
        .with_data_dir(&inst.data_dir)
        .with_port(inst.port);
    tracing::info!(scratch_id = %inst.id, port = inst.port, target = %inst.target, "starting the scratch instance");
    if let Err(source) = cluster.start(&settings, &[]) {
        return Err(beyond_archive(inst, &cluster.log_file()).unwrap_or(Error::Start { id: inst.id.clone(), source }));
    }
    inst.pid = super::instance::postmaster_pid(&inst.data_dir);
    inst.save()?;
    let connection = socket_connection(&run_dir, inst.port, &host.user, &host.dbname);
    if let Err(detail) = wait_ready(&connection, &inst.data_dir, ready, host.start_timeout).await {
        if let Some(error) = beyond_archive(inst, &cluster.log_file()) {
            return Err(error);
        }
        let log = log_tail(&cluster.log_file(), 20);
        return Err(Error::NotReady { id: inst.id.clone(), target: inst.target.clone(), detail, log });
    }
    inst.rto_seconds = Some(clock.elapsed().as_secs_f64());
    match reached(&connection).await {
        Ok((lsn, time)) => (inst.reached_lsn, inst.reached_time) = (lsn, time),
        Err(error) => tracing::warn!(scratch_id = %inst.id, error = %error, "cannot read the recovery point reached"),
    }
    inst.pid = super::instance::postmaster_pid(&inst.data_dir);
    inst.ready = true;
    inst.save()?;
    cluster.detach();
    Ok(())
}

/// [`Error::BeyondArchive`] when the server log says recovery ran out of WAL before the target.
fn beyond_archive(inst: &Instance, log: &Path) -> Option<Error> {
    let text = std::fs::read_to_string(log).ok()?;
    text.contains("recovery ended before configured recovery target was reached")
        .then(|| Error::BeyondArchive { id: inst.id.clone(), target: inst.target.clone() })
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}
