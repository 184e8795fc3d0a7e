//! `radd daemon` and `radd heartbeat`.

use radd::{daemon, jobs, pg};

use super::{Args, load_config};

/// Runs the daemon until SIGTERM.
pub async fn run(args: &Args) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let restore_command = jobs::restore_command(&config.source)?;
    daemon::run(config, restore_command).await?;
    Ok(())
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
