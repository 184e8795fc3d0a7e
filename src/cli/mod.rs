//! Command-line interface: clap structs, one file per command group, text and `--json`
//! rendering. Handlers build options from config + arguments, call the library, render.

/// `println!` for results on stdout that ends the process quietly (exit 0) when the reader has
/// gone (`radd ls latest | head`): a closed pipe is the reader's choice, not a failure.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

mod backup;
mod browse;
mod check;
mod daemon;
mod demo;
mod drill;
mod events;
mod info;
mod keys;
mod progress;
mod restore;
mod restore_point;
mod retention;
mod scratch;
mod verify;
mod wal;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use radd::config::Config;
use radd::repository::Repository;

/// radd: encrypted PostgreSQL backups and WAL archiving that are proven by restoring them.
#[derive(Debug, Parser)]
#[command(name = "radd", version, about)]
pub struct Args {
    /// Configuration file.
    #[arg(long, global = true, env = "RADD_CONFIG", default_value = "/etc/radd/radd.toml")]
    pub config: PathBuf,
    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr: `text` (colour only on a terminal, never with NO_COLOR) or `json`
    /// (one object per line, for journald/Loki).
    #[arg(long, global = true, env = "RADD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an age identity file (mode 0600) and print its recipient (public key).
    Keygen(keys::KeygenArgs),
    /// Repository administration.
    #[command(subcommand)]
    Repo(keys::RepoCommand),
    /// Key rotation: add or remove recipients, rewrap stored objects.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Archive one WAL file (archive_command = 'radd wal-push %p').
    WalPush(wal::PushArgs),
    /// Fetch one WAL file (restore_command = 'radd wal-fetch %f %p'). Exit 1: not in the archive.
    WalFetch(wal::FetchArgs),
    /// Take a backup.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Pre-flight checks: config, repository, keys, PostgreSQL and grants, archive_command, and a
    /// live WAL round trip. Exit 4 when one fails.
    Check(check::CheckArgs),
    /// List snapshots.
    Snapshots,
    /// What can be restored: per timeline the window (oldest backup to newest WAL), backups
    /// with sizes and durations, each drill's last result.
    Info,
    /// Restore a snapshot into a new directory (PostgreSQL: ready to recover to a target).
    Restore(restore::RestoreArgs),
    /// Create a named restore point on the source and record it (take one before a risky
    /// migration); `restore --name` targets it later.
    RestorePoint(restore_point::RestorePointArgs),
    /// Managed scratch instances (`radd restore … --scratch`): list them, stop them.
    #[command(subcommand)]
    Scratch(scratch::ScratchCommand),
    /// Apply the retention policy: keep what a rule keeps, forget the rest (--dry-run shows it).
    Forget(retention::ForgetArgs),
    /// Delete chunks no snapshot references (after a grace period) and WAL no retained backup needs.
    Prune(retention::PruneArgs),
    /// List repository locks; --stale removes those of dead processes.
    Unlock(retention::UnlockArgs),
    /// Keep a snapshot whatever the retention policy says.
    Pin(retention::PinArgs),
    /// Remove a pin.
    Unpin(retention::PinArgs),
    /// List a snapshot's contents.
    Ls(browse::LsArgs),
    /// Compare two snapshots path by path.
    Diff(browse::DiffArgs),
    /// Check the repository: structure, WAL chain and (with --read-data) every object.
    Verify(verify::VerifyArgs),
    /// Restore drills (R.A.D.): prove backups restore.
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    /// Production events (changes and incidents) and the error budget.
    Events(events::EventsArgs),
    /// Run schedules, heartbeat, archive-lag watch and /metrics until SIGTERM.
    Daemon,
    /// Write radd's heartbeat row on the source once (the daemon does it continuously).
    Heartbeat,
    /// Run a backup and a verified restore against a throwaway cluster and a local repository.
    Demo(demo::DemoArgs),
}

/// A drill or check ran and failed: exit code 4 (distinct from errors that stopped it running).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// A long command stopped by SIGTERM or SIGINT after cleaning up: exit code 130.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// A command-line usage mistake the library cannot see (a flag's value refused by the CLI
/// itself): exit code 2, never an incident.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A [`UsageError`] as the CLI's error type.
pub fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(message))
}

/// Logs go to stderr (lifting a progress bar, if one is up, for each line); wal-push/wal-fetch
/// stay silent on success (PostgreSQL logs their stderr).
pub fn init_logging(args: &Args) {
    // A backlog drainer logs to its own file: what it did is worth a line there.
    let quiet =
        matches!(&args.command, Command::WalPush(a) if !a.drain) || matches!(args.command, Command::WalFetch(_));
    let default = match (args.verbose, quiet) {
        (0, true) => "warn",
        (0, false) | (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},tokio_postgres=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(progress::LogWriter).with_target(false);
    if args.log_format == "json" {
        builder.json().with_ansi(false).init();
    } else {
        use std::io::IsTerminal;
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        builder.with_ansi(colour).init();
    }
}

/// Runs the parsed command.
pub async fn run(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Keygen(a) => keys::keygen(a),
        Command::Repo(c) => keys::repo(args, c).await,
        Command::Key(c) => keys::key(args, c).await,
        Command::WalPush(a) => wal::push(args, a).await,
        Command::WalFetch(a) => wal::fetch(args, a).await,
        Command::Backup(c) => backup::run(args, c).await,
        Command::Check(a) => check::run(args, a).await,
        Command::Snapshots => backup::snapshots(args).await,
        Command::Info => info::run(args).await,
        Command::Restore(a) => restore::run(args, a).await,
        Command::RestorePoint(a) => restore_point::run(args, a).await,
        Command::Scratch(c) => scratch::run(args, c),
        Command::Forget(a) => retention::forget(args, a).await,
        Command::Prune(a) => retention::prune(args, a).await,
        Command::Unlock(a) => retention::unlock(args, a).await,
        Command::Pin(a) => retention::pin(args, a, true).await,
        Command::Unpin(a) => retention::pin(args, a, false).await,
        Command::Ls(a) => browse::ls(args, a).await,
        Command::Diff(a) => browse::diff(args, a).await,
        Command::Verify(a) => verify::run(args, a).await,
        Command::Drill(c) => drill::run(args, c).await,
        Command::Events(a) => events::run(args, a).await,
        Command::Daemon => daemon::run(args).await,
        Command::Heartbeat => daemon::heartbeat(args).await,
        Command::Demo(a) => demo::run(args, a).await,
    }
}

/// Exit code for a failed command: the error kind's code; for wal-fetch, 1 only for "not in
/// the archive" and 255 otherwise, so PostgreSQL aborts recovery instead of ending it early.
pub fn exit_code(args: &Args, error: &anyhow::Error) -> u8 {
    let kind = error.downcast_ref::<radd::Error>().map(radd::Error::kind);
    if let Command::WalFetch(_) = args.command {
        return match error.downcast_ref::<radd::Error>() {
            Some(radd::Error::Archive(radd::archive::Error::NotInArchive { .. })) => 1,
            _ => 255,
        };
    }
    if error.downcast_ref::<CheckFailed>().is_some() {
        return 4;
    }
    if error.downcast_ref::<UsageError>().is_some() {
        return 2;
    }
    if error.downcast_ref::<Interrupted>().is_some() {
        return 130;
    }
    kind.map_or(1, radd::ErrorKind::exit_code)
}

/// Who is acting, for records and events: the OS user and host (`alice@db1`).
pub fn operator() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "unknown".to_owned(), |u| u.name);
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{user}@{host}")
}

/// Loads the configuration named on the command line.
pub fn load_config(args: &Args) -> Result<Config, radd::Error> {
    Ok(Config::load(&args.config)?)
}

/// Opens the configured repository.
pub async fn open_repo(args: &Args, need_identity: bool) -> Result<(Config, Repository), radd::Error> {
    let config = load_config(args)?;
    let repo = Repository::open(&config, need_identity).await?;
    Ok((config, repo))
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// holds (library errors often quote their source, so `{:#}` printed an OS error twice).
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// Writes one line of results to stdout; a closed pipe ends the process with exit 0, any other
/// write error with exit 1 (there is no one left to tell but stderr).
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("radd: cannot write the results to stdout: {error}");
        std::process::exit(1);
    }
}

/// Prints a result as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Formats a byte count for humans.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
