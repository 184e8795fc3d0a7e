//! `radd restore … --scratch`, `radd scratch list` and `radd scratch stop`.

use clap::{Args as ClapArgs, Subcommand};
use radd::config::Config;
use radd::jobs;
use radd::repository::Repository;
use radd::restore::RecoveryTarget;
use radd::scratch::{self, CreateOptions, Host, Instance, Mode, Selection};

use super::restore::RestoreArgs;
use super::{Args, human_bytes, load_config, print_json, usage};

/// `radd scratch …`.
#[derive(Debug, Subcommand)]
pub enum ScratchCommand {
    /// List the scratch instances: id, snapshot, target, port, DSN, owner, created, expires,
    /// size, state.
    List,
    /// Stop scratch instances and remove their directories (no process, data or socket left).
    Stop(StopArgs),
}

/// Which instances `radd scratch stop` stops.
#[derive(Debug, ClapArgs)]
#[group(required = true, multiple = false)]
pub struct StopArgs {
    /// The instance's id (or a unique prefix of it).
    pub id: Option<String>,
    /// Those whose TTL ran out (what the daemon does), and creations that were interrupted.
    #[arg(long)]
    pub expired: bool,
    /// Every instance.
    #[arg(long)]
    pub all: bool,
}

/// Runs `radd scratch list|stop`.
pub fn run(args: &Args, command: &ScratchCommand) -> anyhow::Result<()> {
    let config = load_config(args)?;
    match command {
        ScratchCommand::List => list(args, &config),
        ScratchCommand::Stop(a) => stop(args, &config, a),
    }
}

/// `radd restore <snapshot> --scratch …`: creates the instance, prints how to reach it.
pub async fn restore(
    args: &Args,
    a: &RestoreArgs,
    config: &Config,
    repo: &Repository,
    recovery: RecoveryTarget,
) -> anyhow::Result<()> {
    let ttl = match &a.ttl {
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            _ => return Err(usage(format!("--ttl {text:?} is not a duration such as 30m, 4h or 2d"))),
        },
        None => config.scratch.default_ttl(),
    };
    let bar = super::progress::Bar::start(args, "restore", super::progress::Unit::Bytes);
    let options = CreateOptions {
        snapshot: a.snapshot.clone(),
        recovery,
        timeline: a.timeline.map(radd::pg::Timeline),
        allow_gap: a.allow_gap,
        ttl,
        port: a.port,
        promote: a.promote,
        tablespaces: a.tablespace_map.clone(),
        restore_command: jobs::restore_command(&config.source)?,
        progress: bar.progress(),
    };
    let log = jobs::event_log(config)?;
    let instance = jobs::scratch_restore(config, &log, repo, &options).await;
    bar.end(instance.is_ok());
    let instance = instance?;
    if args.json {
        return print_json(&instance);
    }
    print_ready(&instance);
    Ok(())
}

fn print_ready(i: &Instance) {
    let mode = match i.mode {
        Mode::Paused => "read-only, replay paused at the target",
        Mode::Standby => "read-only hot standby: replayed the whole archive and keeps replaying WAL as it is archived",
        Mode::Promoted => "promoted at the target: writable, archiving off",
    };
    outln!("scratch instance {} ready: snapshot {} at {} ({mode})", i.id, i.snapshot_id, i.target);
    outln!("  connect:  {}   (the restored roles' passwords)", i.dsn);
    outln!("            {}   (no password: as the PostgreSQL OS user or root)", i.dsn_socket);
    let lsn = i.reached_lsn.map_or_else(|| "unknown".to_owned(), |l| l.to_string());
    let time =
        i.reached_time.as_deref().map_or_else(String::new, |t| format!(", last replayed transaction committed at {t}"));
    outln!("  reached:  LSN {lsn}{time}");
    if let Some(rto) = i.rto_seconds {
        outln!("  RTO:      {rto:.1}s");
    }
    outln!("  expires:  {} (stop it sooner with: radd scratch stop {})", i.expires, i.id);
}

fn list(args: &Args, config: &Config) -> anyhow::Result<()> {
    let host = Host::from_config(config);
    let (statuses, errors) = scratch::list(&host, chrono::Utc::now()).map_err(radd::Error::from)?;
    for error in &errors {
        tracing::warn!(error = %error, "unreadable scratch instance");
    }
    if args.json {
        return print_json(&statuses);
    }
    if statuses.is_empty() {
        outln!("no scratch instances in {}", host.dir.display());
        return Ok(());
    }
    outln!(
        "{:<8}  {:<9}  {:<30}  {:<38}  {:>5}  {:<8}  {:<10}  {:<20}  {:>9}  DSN",
        "ID",
        "STATE",
        "SNAPSHOT",
        "TARGET",
        "PORT",
        "OWNER",
        "CREATED",
        "EXPIRES",
        "SIZE"
    );
    for s in &statuses {
        let i = &s.instance;
        let state = match (s.state, s.expired) {
            (scratch::State::Running, false) => "running",
            (scratch::State::Running, true) => "expired",
            (scratch::State::Creating, _) => "creating",
            (scratch::State::Stopped, _) => "stopped",
        };
        outln!(
            "{:<8}  {:<9}  {:<30}  {:<38}  {:>5}  {:<8}  {:<10}  {:<20}  {:>9}  {}",
            i.id,
            state,
            i.snapshot_id,
            i.target,
            i.port,
            i.owner,
            i.created.get(..10).unwrap_or(&i.created),
            i.expires,
            human_bytes(s.disk_bytes),
            i.dsn
        );
    }
    Ok(())
}

fn stop(args: &Args, config: &Config, a: &StopArgs) -> anyhow::Result<()> {
    let selection = match (&a.id, a.expired, a.all) {
        (Some(id), _, _) => Selection::Id(id.clone()),
        (_, true, _) => Selection::Expired,
        _ => Selection::All,
    };
    let log = jobs::event_log(config)?;
    let (reports, errors) = jobs::scratch_stop(config, &log, &selection)?;
    if args.json {
        let out: Vec<_> = reports
            .iter()
            .map(|r| serde_json::json!({ "id": r.instance.id, "reason": r.reason, "was_running": r.was_running, "killed": r.killed, "dir": r.instance.dir() }))
            .collect();
        print_json(&out)?;
    } else {
        for r in &reports {
            let how = if r.killed {
                "killed"
            } else if r.was_running {
                "stopped"
            } else {
                "was not running"
            };
            outln!("scratch instance {} {how}; {} removed", r.instance.id, r.instance.dir().display());
        }
        if reports.is_empty() && errors.is_empty() {
            outln!("no scratch instance to stop");
        }
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        Some(first) => {
            for other in errors {
                tracing::error!(error = %other, "cannot stop a scratch instance");
            }
            Err(radd::Error::from(first).into())
        }
        None => Ok(()),
    }
}
