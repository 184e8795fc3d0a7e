//! `radd wal-push` and `radd wal-fetch`: silent on success, as archive/restore commands must be.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use radd::archive;

use super::{Args, open_repo};

/// Arguments of `radd wal-push`.
#[derive(Debug, ClapArgs)]
pub struct PushArgs {
    /// Path of the WAL file (%p).
    pub path: PathBuf,
    /// Run as the backlog drainer that a `wal-push` starts (`archive.push_async`): archive the
    /// `.ready` files after PATH, which is archived already, then exit.
    #[arg(long, hide = true)]
    pub drain: bool,
}

/// Arguments of `radd wal-fetch`.
#[derive(Debug, ClapArgs)]
pub struct FetchArgs {
    /// WAL file name (%f).
    pub name: String,
    /// Destination path (%p).
    pub dest: PathBuf,
    /// Answer "not in the archive" for this segment and every later one of its timeline:
    /// written by `radd restore --allow-gap`, so recovery ends before the accepted gap.
    #[arg(long, value_name = "SEGMENT")]
    pub end_before: Option<String>,
}

/// Archives one WAL file; needs only the recipients and id key.
pub async fn push(args: &Args, a: &PushArgs) -> anyhow::Result<()> {
    let (config, repo) = open_repo(args, false).await?;
    let archive = &config.archive;
    let options = archive::PushOptions {
        parallel: archive.push_parallel.max(1),
        ahead: if archive.push_parallel > 1 { archive.push_ahead } else { 0 },
        level: repo.compression_level,
        compress_workers: archive.compress_workers,
        direct_read: false,
    };
    if a.drain {
        archive::drain(&repo, &a.path, options).await.map_err(radd::Error::from)?;
        return Ok(());
    }
    let in_background = archive.push_async && options.ahead > 0;
    let inline = if in_background { archive::PushOptions { ahead: 0, ..options } } else { options };
    let (outcome, ahead) = archive::push_with_backlog(&repo, &a.path, inline).await.map_err(radd::Error::from)?;
    tracing::info!(path = %a.path.display(), ?outcome, backlog_archived = ahead, "WAL file archived");
    if in_background
        && archive::backlog_waiting(&a.path)
        && !archive::drainer_running(&a.path)
        && let Err(error) = start_drainer(&a.path)
    {
        // PostgreSQL's calls archive the backlog one by one: slower, never wrong.
        tracing::warn!(error = %error, "cannot start the backlog drainer");
    }
    Ok(())
}

/// Starts `radd … wal-push PATH --drain` detached (own process group, no terminal, output in
/// `<pg_wal>/radd-archived/.drain.log`), with this process's arguments and environment, and
/// does not wait for it: PostgreSQL gets its answer for PATH now.
fn start_drainer(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let log_path = archive::drain_log_path(path).ok_or_else(|| std::io::Error::other("no pg_wal directory"))?;
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::File::create(&log_path)?;
    std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .arg("--drain")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map(drop)
}

/// Fetches one WAL file; needs the identity.
pub async fn fetch(args: &Args, a: &FetchArgs) -> anyhow::Result<()> {
    let (config, repo) = open_repo(args, true).await?;
    if let Some(end) = a.end_before.as_deref().filter(|end| archive::is_past_end(&a.name, end)) {
        archive::drop_spool(&a.dest);
        tracing::info!(name = %a.name, end_before = end, "past the accepted gap: reported as not in the archive");
        return Err(radd::Error::from(archive::Error::NotInArchive { name: a.name.clone() }).into());
    }
    match archive::fetch_with_prefetch(&repo, &a.name, &a.dest, config.archive.fetch_prefetch).await {
        Ok(()) => Ok(()),
        Err(e @ archive::Error::NotInArchive { .. }) => {
            tracing::info!(name = %a.name, "not in the archive");
            Err(radd::Error::from(e).into())
        }
        Err(e) => {
            tracing::error!(name = %a.name, error = %e, "wal-fetch failed; recovery must abort");
            Err(radd::Error::from(e).into())
        }
    }
}
