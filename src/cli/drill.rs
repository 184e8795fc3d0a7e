//! `radd drill run` and `radd drill list`.

use clap::{Args as ClapArgs, Subcommand};
use radd::drill::{self, CheckStatus, DrillReport};
use radd::jobs;

use super::{Args, CheckFailed, Interrupted, load_config, print_json};

/// `radd drill …` commands.
#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Run a drill now: restore into a scratch instance, check, measure RPO/RTO, tear down.
    Run(RunArgs),
    /// List the drills in the drills directory with their schedules.
    List,
}

/// Arguments of `radd drill run`.
#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    /// Drill name (from the drills directory) or path to a drill file.
    pub drill: String,
    /// Keep the (stopped) scratch instance's directory for debugging.
    #[arg(long)]
    pub keep: bool,
}

/// Runs a drill command.
pub async fn run(args: &Args, command: &DrillCommand) -> anyhow::Result<()> {
    let config = load_config(args)?;
    match command {
        DrillCommand::List => {
            let drills = drill::list(&config.drills.dir).map_err(radd::Error::from)?;
            if args.json {
                let list: Vec<_> = drills.iter().map(|(path, d)| serde_json::json!({ "name": d.name, "schedule": d.schedule, "snapshot": d.snapshot, "file": path })).collect();
                return print_json(&list);
            }
            outln!("{:<24} {:<20} {:<10} FILE", "NAME", "SCHEDULE (UTC)", "SNAPSHOT");
            for (path, d) in drills {
                outln!("{:<24} {:<20} {:<10} {}", d.name, d.schedule, d.snapshot, path.display());
            }
            Ok(())
        }
        DrillCommand::Run(a) => {
            let (_, definition) = drill::find(&config.drills.dir, &a.drill).map_err(radd::Error::from)?;
            let log = jobs::event_log(&config)?;
            let restore_command = jobs::restore_command(&config.source)?;
            // SIGTERM/SIGINT drops the drill: its scratch instance is stopped and its directory
            // removed before radd exits (no event: the operator stopped it, nothing failed).
            let name = definition.name.clone();
            let report = tokio::select! {
                report = jobs::run_drill(&config, &log, definition, a.keep, restore_command) => report?,
                () = radd::daemon::wait_for_signal() => {
                    return Err(Interrupted(format!("drill {name} interrupted by a signal: its scratch instance was stopped and removed")).into());
                }
            };
            if args.json {
                print_json(&report)?;
            } else {
                print_report(&report);
            }
            if report.passed {
                Ok(())
            } else {
                Err(CheckFailed(format!("drill {} failed: {}", report.drill, report.failed_checks().join(", "))).into())
            }
        }
    }
}

fn print_report(report: &DrillReport) {
    outln!(
        "drill {} on snapshot {}: {}",
        report.drill,
        report.snapshot_id.as_deref().unwrap_or("-"),
        if report.passed { "PASSED" } else { "FAILED" }
    );
    for c in &report.checks {
        let mark = match c.status {
            CheckStatus::Passed => "ok  ",
            CheckStatus::Failed => "FAIL",
            CheckStatus::Skipped => "skip",
        };
        outln!("  {mark} {:<22} {:>6.1}s  {}", c.check, c.seconds, c.detail);
    }
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{s:.1}s"));
    outln!(
        "  RPO {}  RTO {}  total {:.1}s",
        secs(report.rpo_seconds),
        secs(report.rto_seconds),
        report.duration_seconds
    );
    if let Some(dir) = &report.kept_dir {
        outln!("  scratch directory kept: {}", dir.display());
    }
}
