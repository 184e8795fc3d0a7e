//! `radd events` (list) and `radd events budget`.

use clap::{Args as ClapArgs, Subcommand};
use radd::events::{EventKind, budget};
use radd::jobs;

use super::{Args, load_config, print_json};

/// Arguments of `radd events`.
#[derive(Debug, ClapArgs)]
pub struct EventsArgs {
    /// Only events newer than this (a duration such as "7d", or an RFC 3339 time).
    #[arg(long)]
    pub since: Option<String>,
    /// Sub-command; without one, lists events.
    #[command(subcommand)]
    pub command: Option<EventsCommand>,
}

/// `radd events …` sub-commands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Error budget: drill success ratio and backup-freshness SLO over a window.
    Budget {
        /// Window ("30d").
        #[arg(long, default_value = "30d")]
        window: String,
        /// A backup older than this counts as stale ("26h").
        #[arg(long, default_value = "26h")]
        freshness: String,
    },
}

fn parse_since(value: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = humantime::parse_duration(value) {
        return Ok(chrono::Utc::now() - chrono::Duration::from_std(d)?);
    }
    Ok(chrono::DateTime::parse_from_rfc3339(value)
        .map_err(|e| anyhow::anyhow!("--since {value:?}: expected a duration (7d) or an RFC 3339 time ({e})"))?
        .with_timezone(&chrono::Utc))
}

/// Runs an events command.
pub async fn run(args: &Args, a: &EventsArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let log = jobs::event_log(&config)?;
    match &a.command {
        None => {
            let events = match &a.since {
                Some(since) => log.read_since(parse_since(since)?).map_err(radd::Error::from)?,
                None => log.read_all().map_err(radd::Error::from)?,
            };
            if args.json {
                return print_json(&events);
            }
            outln!("{:<24} {:<8} {:<4} {:<22} TITLE", "TIME", "KIND", "SEV", "SOURCE");
            for e in events {
                let kind = if e.kind == EventKind::Incident { "incident" } else { "change" };
                let sev = e.severity.map_or("-", |s| s.as_str());
                outln!("{:<24} {:<8} {:<4} {:<22} {}", e.time, kind, sev, e.source, e.title);
            }
            Ok(())
        }
        Some(EventsCommand::Budget { window, freshness }) => {
            let window = chrono::Duration::from_std(humantime::parse_duration(window)?)?;
            let freshness = chrono::Duration::from_std(humantime::parse_duration(freshness)?)?;
            let events = log.read_all().map_err(radd::Error::from)?;
            let report = budget(&events, chrono::Utc::now(), window, freshness);
            if args.json {
                return print_json(&report);
            }
            let pct = |v: f64| format!("{:.2}%", v * 100.0);
            let d = &report.drills;
            let days = |secs: i64| format!("{:.1} days", secs as f64 / 86_400.0);
            outln!(
                "error budget {} … {} ({} of history; window {})",
                report.window_start,
                report.window_end,
                days(report.history_seconds),
                days(report.window_requested_seconds)
            );
            outln!(
                "  drills     {} passed, {} failed; success {} (objective {}), budget remaining {}",
                d.passed,
                d.failed,
                d.success_ratio.map_or("n/a (no drill ran)".into(), pct),
                pct(d.objective),
                d.budget_remaining.map_or("n/a".into(), pct)
            );
            let f = &report.freshness;
            outln!(
                "  freshness  backups younger than {}s for {} of the window (objective {}), budget remaining {}; newest backup {}",
                f.max_age_seconds,
                pct(f.fresh_ratio),
                pct(f.objective),
                pct(f.budget_remaining),
                f.newest_backup.as_deref().unwrap_or("none")
            );
            let i = &report.incidents;
            outln!("  incidents  S1 {}  S2 {}  S3 {}  S4 {}  unrated {}", i.s1, i.s2, i.s3, i.s4, i.unrated);
            Ok(())
        }
    }
}
