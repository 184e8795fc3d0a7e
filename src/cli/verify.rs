//! `radd verify`: prints the report (a summary and every problem, or `--json`), then fails with
//! an integrity error (exit 3) if any problem was found, so cron and scripts need not parse it.

use clap::Args as ClapArgs;
use radd::jobs::{self, VerifyScope};
use radd::verify::VerifyReport;

use super::progress::{Bar, Unit};
use super::{Args, human_bytes, load_config, print_json};

/// Arguments of `radd verify`.
#[derive(Debug, ClapArgs)]
pub struct VerifyArgs {
    /// Also download, decrypt and check every pack and WAL object (reads the whole repository).
    #[arg(long)]
    pub read_data: bool,
    /// Read only the N-th of M deterministic slices of the packs and WAL objects ("3/10").
    #[arg(long, value_name = "N/M", conflicts_with = "read_data_due")]
    pub read_data_subset: Option<String>,
    /// Read today's share: a daily slice of the objects plus any not read within --period,
    /// recorded in backup.state_dir; run daily, every object is read once per period.
    #[arg(long)]
    pub read_data_due: bool,
    /// The period within which every object is read (with --read-data-due).
    #[arg(long, default_value = "30d")]
    pub period: String,
    /// Accept the WAL gap starting at this (missing) segment as a known loss: verify stops
    /// reporting it (restores still need --allow-gap). Recorded as a change event.
    #[arg(long, value_name = "SEGMENT")]
    pub accept_gap: Option<String>,
    /// Why the gap is accepted (with --accept-gap), kept in the record and the event.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Evaluate as of this time (RFC 3339) instead of now.
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

fn parse_slice(value: &str) -> anyhow::Result<(u64, u64)> {
    let (n, m) = value
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--read-data-subset {value:?}: expected N/M, e.g. 3/10"))?;
    let (n, m): (u64, u64) = (n.trim().parse()?, m.trim().parse()?);
    anyhow::ensure!(m >= 1 && (1..=m).contains(&n), "--read-data-subset {value:?}: need 1 <= N <= M");
    Ok((n, m))
}

/// Verifies the repository, prints the report, and turns problems into exit code 3.
pub async fn run(args: &Args, a: &VerifyArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    if let Some(segment) = &a.accept_gap {
        return accept_gap(args, &config, segment, &a.reason).await;
    }
    let now = match &a.now {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)?.with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let scope = match (&a.read_data_subset, a.read_data_due, a.read_data) {
        (Some(slice), _, _) => {
            let (n, m) = parse_slice(slice)?;
            VerifyScope::Slice(n, m)
        }
        (None, true, _) => VerifyScope::Due { period_days: humantime::parse_duration(&a.period)?.as_secs() / 86_400 },
        (None, false, true) => VerifyScope::All,
        (None, false, false) => VerifyScope::Structure,
    };
    // Only a read of the data objects takes long enough for a bar.
    let bar =
        if matches!(scope, VerifyScope::Structure) { Bar::off() } else { Bar::start(args, "verify", Unit::Bytes) };
    let report = jobs::verify_with_progress(&config, &jobs::event_log(&config)?, scope, now, bar.progress()).await;
    bar.end(report.is_ok());
    let report = report?;
    if args.json {
        print_json(&report)?;
    } else {
        print_text(&report);
    }
    let location = radd::repo::Repo::open(&config.repository).map(|r| r.location().to_owned()).unwrap_or_default();
    report.into_result(&location).map_err(radd::Error::from)?;
    Ok(())
}

fn print_text(report: &VerifyReport) {
    let scope = if report.read_data {
        "data objects read"
    } else {
        "structure only; --read-data also reads every pack and WAL object"
    };
    outln!(
        "{}: {} snapshots, {} packs ({} unreferenced), {} WAL segments on {} timeline(s); {} objects checked, {} read, {:.1}s ({scope})",
        if report.ok { "verify ok" } else { "verify FAILED" },
        report.snapshots,
        report.packs,
        report.unreferenced_packs,
        report.wal_segments,
        report.timelines.len(),
        report.objects_checked,
        human_bytes(report.bytes_read),
        report.duration_seconds,
    );
    for timeline in &report.timelines {
        outln!(
            "  timeline {}: {} segments, {} .. {}, {} gap(s)",
            timeline.timeline,
            timeline.segments,
            timeline.first,
            timeline.last,
            timeline.gaps.len()
        );
    }
    if !report.problems.is_empty() {
        outln!("{} problem(s):", report.problems.len());
        for problem in &report.problems {
            outln!("  {problem}");
        }
    }
}

/// `radd verify --accept-gap SEGMENT`: records the acceptance and a change event.
async fn accept_gap(args: &Args, config: &radd::config::Config, segment: &str, reason: &str) -> anyhow::Result<()> {
    let repo = radd::repository::Repository::open(config, false).await.map_err(radd::Error::from)?;
    let record = radd::verify::accept_gap(&repo, segment, super::operator(), reason.to_owned())
        .await
        .map_err(radd::Error::from)?;
    let event = radd::events::Event::change(
        "verify.accept-gap",
        format!("WAL gap at {segment} accepted as a known loss by {}", record.by),
    )
    .details(serde_json::to_value(&record).unwrap_or_default());
    jobs::record(&jobs::event_log(config)?, &event)?;
    if args.json {
        return print_json(&record);
    }
    outln!(
        "gap at {segment} accepted by {}; verify no longer reports it (restores through it still need --allow-gap)",
        record.by
    );
    Ok(())
}
