//! `radd daemon` and `radd heartbeat`.

use radd::{daemon, jobs, pg};

use radd::preflight::{CheckOptions, HeartbeatCheck};

use super::{Args, CheckFailed, load_config};

/// Runs the daemon until SIGTERM, after `radd check`'s checks (without the WAL round trip)
/// pass: a daemon that starts on a broken setup would only be found out by the first failed
/// backup. SIGHUP reloads the same configuration file.
pub async fn run(args: &Args) -> anyhow::Result<()> {
    let config = load_config(args)?;
    if config.daemon.start_checks {
        start_checks(&config).await?;
    }
    let restore_command = jobs::restore_command(&config.source)?;
    let path = args.config.clone();
    let reload: daemon::ConfigLoader = Box::new(move || radd::config::Config::load(&path).map_err(|e| e.to_string()));
    daemon::run(config, restore_command, reload).await?;
    Ok(())
}

/// The checks of `radd check` minus the round trip; the heartbeat table is created when the
/// daemon will write heartbeats. Every failure is logged; any failure refuses the start.
async fn start_checks(config: &radd::config::Config) -> anyhow::Result<()> {
    let heartbeat =
        if config.daemon.heartbeat_interval.is_none() { HeartbeatCheck::Skip } else { HeartbeatCheck::Create };
    let report =
        radd::preflight::run(config, CheckOptions { round_trip_wait: std::time::Duration::ZERO, heartbeat }).await;
    for c in &report.checks {
        if c.ok {
            tracing::info!(check = %c.check, detail = %c.detail, "start check passed");
        } else {
            tracing::error!(check = %c.check, detail = %c.detail, "start check failed");
        }
    }
    if report.ok {
        return Ok(());
    }
    let failed: Vec<&str> = report.checks.iter().filter(|c| !c.ok).map(|c| c.check.as_str()).collect();
    Err(CheckFailed(format!(
        "the daemon refuses to start: check failed: {} (details above; `radd check` shows them too). Set daemon.start_checks = false only on a host without PostgreSQL",
        failed.join(", ")
    ))
    .into())
}

/// Writes the heartbeat once.
pub async fn heartbeat(args: &Args) -> anyhow::Result<()> {
    let config = load_config(args)?;
    // A standby is read-only: with [postgres.primary] the heartbeat goes to the primary.
    let client = pg::connect(&config.postgres.writable()).await.map_err(radd::Error::from)?;
    let at = pg::heartbeat::beat(&client).await.map_err(radd::Error::from)?;
    if args.json {
        return super::print_json(&serde_json::json!({ "heartbeat": at.to_rfc3339() }));
    }
    outln!("heartbeat written: {}", at.to_rfc3339());
    Ok(())
}
