//! `radd backup pg` and `radd snapshots`.

use clap::Subcommand;
use radd::{jobs, snapshot};

use super::progress::{Bar, Unit};
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
    /// Snapshot of plain file trees (same deduplicated, encrypted repository).
    Fs(FsArgs),
}

/// Arguments of `radd backup fs`.
#[derive(Debug, clap::Args)]
pub struct FsArgs {
    /// Root paths (or use --job).
    pub paths: Vec<std::path::PathBuf>,
    /// A configured `[[fs]]` job (paths, excludes, tags and pre/post hooks).
    #[arg(long)]
    pub job: Option<String>,
    /// Glob to leave out (matched against the full path and the file name); repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Stay on each root's file system.
    #[arg(long)]
    pub one_file_system: bool,
    /// Tag for the snapshot; repeatable.
    #[arg(long)]
    pub tag: Vec<String>,
    /// Read every file even if size, mtime, ctime and inode are unchanged since the last snapshot.
    #[arg(long)]
    pub full_read: bool,
}

async fn backup_fs(args: &Args, a: &FsArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let (name, mut options) = match &a.job {
        Some(job) => {
            let job = config
                .fs
                .iter()
                .find(|j| &j.name == job)
                .ok_or_else(|| anyhow::anyhow!("no [[fs]] job named {job:?} in {}", config.source.display()))?;
            (job.name.clone(), jobs::fs_job_options(&config, job))
        }
        None if a.paths.is_empty() => anyhow::bail!("give paths to back up, or --job NAME"),
        None => (
            "adhoc".to_owned(),
            radd::snapshot::FsBackupOptions { backup: config.backup.clone(), ..Default::default() },
        ),
    };
    options.tree.roots.extend(a.paths.iter().cloned());
    options.tree.excludes.extend(a.exclude.iter().cloned());
    options.tree.one_file_system |= a.one_file_system;
    options.tags.extend(a.tag.iter().cloned());
    options.full_read = a.full_read;
    let log = jobs::event_log(&config)?;
    let bar = Bar::start(args, "backup fs", Unit::Bytes);
    options.progress = bar.progress();
    let report = jobs::backup_fs(&config, &log, &name, options, radd::daemon::wait_for_signal()).await;
    bar.end(report.is_ok());
    let report = report?;
    if args.json {
        return print_json(&report);
    }
    outln!(
        "snapshot {} of {}: {} files ({} unchanged), {} total, {} read, {} new, {} uploaded, {:.1}s{}",
        report.snapshot_id,
        report.paths.join(" "),
        report.files,
        report.files_unchanged,
        human_bytes(report.total_bytes),
        human_bytes(report.read_bytes),
        human_bytes(report.new_bytes),
        human_bytes(report.uploaded_bytes),
        report.duration_seconds,
        if report.partial { " — PARTIAL" } else { "" }
    );
    for problem in &report.unreadable {
        outln!("  unreadable: {problem}");
    }
    Ok(())
}

/// Runs a backup command and prints its report.
pub async fn run(args: &Args, command: &BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Fs(a) => backup_fs(args, a).await,
        BackupCommand::Pg { full_read } => {
            let config = load_config(args)?;
            let log = jobs::event_log(&config)?;
            let bar = Bar::start(args, "backup pg", Unit::Bytes);
            let report = jobs::backup_pg_with_progress(&config, &log, *full_read, bar.progress()).await;
            bar.end(report.is_ok());
            let report = report?;
            if args.json {
                return print_json(&report);
            }
            outln!(
                "snapshot {}: {} files ({} unchanged since {}), {} total, {} read, {} new, {} reused, {} uploaded, LSN {}..{} on timeline {}{}, {:.1}s",
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
                if report.from_standby { " (from a standby)" } else { "" },
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
    outln!("{:<26} {:<4} {:<21} {:<14} {:>10} {:>10}  PATHS / TAGS", "ID", "KIND", "FINISHED", "HOST", "SIZE", "NEW");
    for s in &list {
        let kind = match s.kind {
            snapshot::SnapshotKind::Pg => "pg",
            snapshot::SnapshotKind::Fs => "fs",
        };
        let mut what = s.paths.join(" ");
        if let Some(pg) = s.pg.as_ref().filter(|pg| !pg.tablespaces.is_empty()) {
            let names: Vec<String> = pg.tablespaces.iter().map(|t| format!("{}={}", t.name, t.location)).collect();
            what.push_str(&format!("tablespaces {}", names.join(" ")));
        }
        if !s.tags.is_empty() {
            what.push_str(&format!(" [{}]", s.tags.join(",")));
        }
        if s.partial {
            what.push_str(" PARTIAL");
        }
        outln!(
            "{:<26} {:<4} {:<21} {:<14} {:>10} {:>10}  {}",
            s.id,
            kind,
            s.finished,
            s.hostname,
            human_bytes(s.total_bytes),
            human_bytes(s.new_bytes),
            what
        );
    }
    Ok(())
}
