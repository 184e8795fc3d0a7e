//! `radd check`: the pre-flight checks, one line each, exit 4 on any failure.

use clap::Args as ClapArgs;
use radd::preflight::{CheckOptions, HeartbeatCheck};

use super::{Args, CheckFailed, load_config, print_json};

/// Arguments of `radd check`.
#[derive(Debug, ClapArgs)]
pub struct CheckArgs {
    /// How long the round trip waits for the switched segment to reach the repository
    /// (`0s` skips it: no WAL switch on the source).
    #[arg(long, default_value = "60s")]
    pub wait: String,
    /// Repair what radd can repair itself: create the heartbeat table (radd.heartbeat) that
    /// drills read to measure the RPO.
    #[arg(long)]
    pub fix: bool,
}

/// Runs the checks and prints them.
pub async fn run(args: &Args, a: &CheckArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let wait = humantime::parse_duration(&a.wait).map_err(|e| super::usage(format!("--wait {:?}: {e}", a.wait)))?;
    let heartbeat = if a.fix { HeartbeatCheck::Create } else { HeartbeatCheck::Require };
    let report = radd::preflight::run(&config, CheckOptions { round_trip_wait: wait, heartbeat }).await;
    if args.json {
        print_json(&report)?;
    } else {
        for c in &report.checks {
            outln!("{} {:<16} {}", if c.ok { "ok  " } else { "FAIL" }, c.check, c.detail);
        }
    }
    if report.ok {
        Ok(())
    } else {
        let failed: Vec<&str> = report.checks.iter().filter(|c| !c.ok).map(|c| c.check.as_str()).collect();
        Err(CheckFailed(format!("check failed: {}", failed.join(", "))).into())
    }
}
