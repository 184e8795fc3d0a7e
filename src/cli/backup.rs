//! `radd backup pg` and `radd snapshots`.

use clap::Subcommand;
use radd::{jobs, snapshot};

use super::{Args, human_bytes, load_config, open_repo, print_json};

/// `radd backup …` commands.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Base backup of the configured PostgreSQL cluster (non-exclusive backup API).
    Pg {
        /// Read every file even if size, mtime and inode say it is unchanged since the last backup.
        #[arg(long)]
        full_read: bool,
    },
}

/// Runs a backup command and prints its report.
pub async fn run(args: &Args, command: &BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Pg { full_read } => {
            let config = load_config(args)?;
            let log = jobs::event_log(&config)?;
            let report = jobs::backup_pg(&config, &log, *full_read).await?;
            if args.json {
                return print_json(&report);
            }
            println!(
                "snapshot {}: {} files ({} unchanged since {}), {} total, {} read, {} new, {} reused, {} uploaded, LSN {}..{} on timeline {}, {:.1}s",
                report.snapshot_id,
                report.files,
                report.files_unchanged,
                report.parent.as_deref().unwrap_or("-"),
                human_bytes(report.total_bytes),
                human_bytes(report.read_bytes),
                human_bytes(report.new_bytes),
                human_bytes(report.reused_bytes),
                human_bytes(report.uploaded_bytes),
                report.start_lsn,
                report.stop_lsn,
                report.timeline,
                report.duration_seconds
            );
            Ok(())
        }
    }
}

/// Lists snapshots as a table or JSON.
pub async fn snapshots(args: &Args) -> anyhow::Result<()> {
    let (_, repo) = open_repo(args, false).await?;
    let list = snapshot::list(&repo).await.map_err(radd::Error::from)?;
    if args.json {
        return print_json(&list);
    }
    println!("{:<26} {:<4} {:<21} {:<14} {:>10} {:>10}", "ID", "KIND", "FINISHED", "HOST", "SIZE", "NEW");
    for s in &list {
        println!(
            "{:<26} {:<4} {:<21} {:<14} {:>10} {:>10}",
            s.id,
            "pg",
            s.finished,
            s.hostname,
            human_bytes(s.total_bytes),
            human_bytes(s.new_bytes)
        );
    }
    Ok(())
}
