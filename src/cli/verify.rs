//! `radd verify`: prints the report (a summary and every problem, or `--json`), then fails with
//! an integrity error (exit 3) if any problem was found, so cron and scripts need not parse it.

use clap::Args as ClapArgs;
use radd::verify::{self, VerifyOptions, VerifyReport};

use super::{Args, human_bytes, open_repo, print_json};

/// Arguments of `radd verify`.
#[derive(Debug, ClapArgs)]
pub struct VerifyArgs {
    /// Also download, decrypt and check every pack and WAL object (reads the whole repository).
    #[arg(long)]
    pub read_data: bool,
}

/// Verifies the repository, prints the report, and turns problems into exit code 3.
pub async fn run(args: &Args, a: &VerifyArgs) -> anyhow::Result<()> {
    let (_, repo) = open_repo(args, true).await?;
    let options = VerifyOptions { read_data: a.read_data };
    let report = verify::run(&repo, &options).await.map_err(radd::Error::from)?;
    if args.json {
        print_json(&report)?;
    } else {
        print_text(&report);
    }
    report.into_result(repo.store.location()).map_err(radd::Error::from)?;
    Ok(())
}

fn print_text(report: &VerifyReport) {
    let scope = if report.read_data {
        "every object read"
    } else {
        "structure only; --read-data also reads every pack and WAL object"
    };
    println!(
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
        println!(
            "  timeline {}: {} segments, {} .. {}, {} gap(s)",
            timeline.timeline,
            timeline.segments,
            timeline.first,
            timeline.last,
            timeline.gaps.len()
        );
    }
    if !report.problems.is_empty() {
        println!("{} problem(s):", report.problems.len());
        for problem in &report.problems {
            println!("  {problem}");
        }
    }
}
