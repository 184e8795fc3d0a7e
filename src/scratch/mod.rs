//! Managed scratch instances: `radd restore … --scratch` restores a snapshot to a recovery
//! target into `<scratch dir>/<id>/`, starts PostgreSQL there on a free loopback port with its
//! own socket directory and archiving off, waits until it answers queries at the target, and
//! leaves it running (detached) until `radd scratch stop` or its TTL.
//!
//! State lives on disk, never in memory: each instance's `instance.json` (see [`instance`]) is
//! what `radd scratch list|stop` and the daemon's reaper read, so instances survive daemon
//! restarts. Limits (`[scratch] max_instances`, `max_bytes`) and the production cluster's port
//! and data directory are checked before anything is written. Sits above `restore` (it runs
//! one) and below `drill`; files no events itself (its callers do, see `jobs`).

pub mod instance;
mod server;
mod stop;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub use instance::{Instance, Mode, State, Status};
pub use stop::{Reason, Selection, StopReport, stop};

use crate::config::Config;
use crate::error::ErrorKind;
use crate::pg::{self, Lsn, Timeline, WalFileName};
use crate::repository::Repository;
use crate::restore::{self, RecoveryTarget, RestoreOptions, TablespaceMapping};

/// Errors creating, listing or stopping scratch instances.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The restore into the instance failed (its error names the snapshot and the cause).
    #[error(transparent)]
    Restore(Box<restore::Error>),
    /// The snapshot is a file tree, not a PostgreSQL base backup.
    #[error("snapshot {0} is not a PostgreSQL base backup; --scratch starts a PostgreSQL server and needs one")]
    NotPg(String),
    /// The port cannot be used.
    #[error(
        "cannot use port {port} for a scratch instance: {reason}; choose another --port, or omit it for a free one"
    )]
    Port {
        /// The port asked for.
        port: u16,
        /// Why not.
        reason: String,
    },
    /// A path of the instance would lie in the production cluster's.
    #[error("{what} {path} is inside the production data directory {data_dir} ([postgres] data_dir); set [scratch] dir (or --tablespace-map) to a directory of its own", path = .path.display(), data_dir = .data_dir.display())]
    Production {
        /// Which path.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Production's data directory.
        data_dir: PathBuf,
    },
    /// `[scratch] max_instances` would be exceeded.
    #[error("{count} scratch instance(s) exist and [scratch] max_instances is {max}; stop one first: {stop}")]
    TooMany {
        /// Instances now.
        count: usize,
        /// The limit.
        max: usize,
        /// `radd scratch stop <id>` commands naming each instance.
        stop: String,
    },
    /// `[scratch] max_bytes` would be exceeded.
    #[error(
        "snapshot {snapshot} needs {needed} bytes and the scratch instances hold {used}, more than [scratch] max_bytes ({max} bytes) allows; stop one first: {stop}"
    )]
    TooLarge {
        /// Snapshot to restore.
        snapshot: String,
        /// Its size.
        needed: u64,
        /// What existing instances occupy.
        used: u64,
        /// The limit.
        max: u64,
        /// `radd scratch stop <id>` commands naming each instance.
        stop: String,
    },
    /// Local file-system work failed.
    #[error("cannot {what} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An instance's record is missing or unreadable.
    #[error("cannot read the scratch instance record {path}: {message}; remove its directory by hand if it is not a scratch instance being created", path = .path.display())]
    Record {
        /// instance.json.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// No instance has this id.
    #[error("no scratch instance {0}; `radd scratch list` shows them")]
    NotFound(String),
    /// The id prefix matches several instances.
    #[error("scratch instance id {wanted:?} matches {matches}; give more of the id")]
    Ambiguous {
        /// The prefix.
        wanted: String,
        /// The ids it matches.
        matches: String,
    },
    /// PostgreSQL could not be started in the instance.
    #[error("scratch instance {id}: {source}")]
    Start {
        /// Instance id.
        id: String,
        /// pg_ctl's failure (with the server log's last lines).
        source: pg::Error,
    },
    /// The instance did not reach its target.
    #[error("scratch instance {id} did not reach {target}: {detail}\nserver log (last lines):\n{log}")]
    NotReady {
        /// Instance id.
        id: String,
        /// The target.
        target: String,
        /// What was seen last.
        detail: String,
        /// Last lines of the server log (the directory is removed).
        log: String,
    },
    /// The archived WAL ends before the target (no transaction after a time target has been
    /// archived yet): PostgreSQL stopped rather than pretend it got there.
    #[error(
        "scratch instance {id}: the archived WAL ends before {target} (PostgreSQL: recovery ended before the target was reached); wait until the WAL after it is archived, or choose an earlier target"
    )]
    BeyondArchive {
        /// Instance id.
        id: String,
        /// The target.
        target: String,
    },
    /// The postmaster survived pg_ctl stop, SIGQUIT and SIGKILL.
    #[error("scratch instance {id}: postmaster {pid} is still running after SIGKILL; its directory was kept")]
    StillRunning {
        /// Instance id.
        id: String,
        /// The postmaster.
        pid: i32,
    },
}

impl From<restore::Error> for Error {
    fn from(error: restore::Error) -> Self {
        Error::Restore(Box::new(error))
    }
}

impl Error {
    /// Category for exit codes.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Restore(e) => e.kind(),
            Error::NotPg(_)
            | Error::Port { .. }
            | Error::Production { .. }
            | Error::TooMany { .. }
            | Error::TooLarge { .. }
            | Error::Ambiguous { .. }
            | Error::BeyondArchive { .. } => ErrorKind::Config,
            Error::Io { .. } => ErrorKind::Io,
            Error::Record { .. } => ErrorKind::Conflict,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Start { .. } | Error::NotReady { .. } | Error::StillRunning { .. } => ErrorKind::Postgres,
        }
    }

    /// Whether the request was wrong (a bad target, port or id, a limit reached): the
    /// operator's to fix, not an incident — the repository is not at fault.
    #[must_use]
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Restore(e) => e.is_usage(),
            Error::NotPg(_)
            | Error::Port { .. }
            | Error::Production { .. }
            | Error::TooMany { .. }
            | Error::TooLarge { .. }
            | Error::NotFound(_)
            | Error::Ambiguous { .. }
            | Error::BeyondArchive { .. } => true,
            _ => false,
        }
    }
}

/// Host-wide settings of scratch instances, from `[scratch]`, `[drills]` and `[postgres]`.
#[derive(Debug, Clone)]
pub struct Host {
    /// Parent of the instance directories.
    pub dir: PathBuf,
    /// initdb/pg_ctl/postgres.
    pub bin_dir: PathBuf,
    /// `[scratch] max_instances`.
    pub max_instances: usize,
    /// `[scratch] max_bytes`.
    pub max_bytes: u64,
    /// Production's port, never used by an instance.
    pub production_port: u16,
    /// Production's data directory, which no instance path may be inside.
    pub production_data_dir: Option<PathBuf>,
    /// Role the connection strings name and radd's own checks use.
    pub user: String,
    /// Database they name.
    pub dbname: String,
    /// How long WAL replay to the target may take.
    pub start_timeout: Duration,
}

impl Host {
    /// The settings in `config`: `[scratch] dir`, else `[drills] scratch_dir`.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let dir = config.scratch.dir.clone().unwrap_or_else(|| config.drills.scratch_dir.clone());
        Host {
            dir: std::path::absolute(&dir).unwrap_or(dir),
            bin_dir: config.postgres.bin_dir.clone(),
            max_instances: config.scratch.max_instances,
            max_bytes: config.scratch.max_bytes.0,
            production_port: config.postgres.port,
            production_data_dir: config.postgres.data_dir.clone(),
            user: config.postgres.user.clone(),
            dbname: config.postgres.dbname.clone(),
            start_timeout: config.scratch.start_timeout(),
        }
    }
}

/// One scratch restore.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// `latest`, a snapshot id or a unique prefix (with `latest` and a time or LSN target, the
    /// newest snapshot consistent before it).
    pub snapshot: String,
    /// Where recovery stops.
    pub recovery: RecoveryTarget,
    /// Timeline to recover along (`None`: restore's default).
    pub timeline: Option<Timeline>,
    /// Accept a WAL gap after the consistency point.
    pub allow_gap: bool,
    /// Lifetime; the daemon stops the instance after it.
    pub ttl: Duration,
    /// Port on 127.0.0.1 (`None`: a free one).
    pub port: Option<u16>,
    /// Promote at the target (writable) instead of pausing there (read-only).
    pub promote: bool,
    /// Tablespaces given a place of their own; the rest go into `<instance>/tablespaces`.
    pub tablespaces: Vec<(String, PathBuf)>,
    /// `restore_command` for the instance (`radd … wal-fetch %f %p`).
    pub restore_command: String,
    /// Progress of the restore (a bar on a terminal).
    pub progress: crate::progress::Progress,
}

/// Restores, starts and waits; returns the ready instance (also written to its
/// `instance.json`). On any failure nothing is left: the server is stopped and the directory
/// removed.
pub async fn create(repo: &Repository, host: &Host, options: &CreateOptions) -> Result<Instance, Error> {
    let clock = Instant::now();
    check_production(host, options)?;
    let port = pick_port(host, options.port)?;
    let record = restore::choose_snapshot(repo, &options.snapshot, &options.recovery).await?;
    let Some(pg_info) = record.pg.clone() else { return Err(Error::NotPg(record.id)) };
    let lock = instance::lock(&host.dir)?;
    check_limits(host, &record.id, record.total_bytes)?;
    let (id, dir) = instance::create_dir(&host.dir)?;
    let mut inst = new_record(host, options, &id, &dir, &record.id, port);
    let prepared = inst.save().and_then(|()| {
        pg::hand_over(&dir).map_err(|e| Error::Io {
            what: "hand over",
            path: dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    });
    drop(lock);
    let result = match prepared {
        Ok(()) => build(repo, host, options, &mut inst, &pg_info, clock).await,
        Err(e) => Err(e),
    };
    if let Err(error) = result {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the directory of a failed scratch restore");
        }
        return Err(error);
    }
    Ok(inst)
}

fn new_record(host: &Host, options: &CreateOptions, id: &str, dir: &Path, snapshot_id: &str, port: u16) -> Instance {
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(options.ttl).unwrap_or(chrono::Duration::hours(4));
    let socket_dir = dir.join("run");
    let mode = if options.promote {
        Mode::Promoted
    } else if options.recovery == RecoveryTarget::Latest {
        Mode::Standby
    } else {
        Mode::Paused
    };
    Instance {
        id: id.to_owned(),
        snapshot_id: snapshot_id.to_owned(),
        target: options.recovery.to_string(),
        target_time: match &options.recovery {
            RecoveryTarget::Time(t) => Some(rfc3339(*t)),
            _ => None,
        },
        mode,
        port,
        dsn: format!("postgresql://{}@127.0.0.1:{port}/{}", url_encode(&host.user), url_encode(&host.dbname)),
        dsn_socket: format!(
            "host={} port={port} user={} dbname={}",
            socket_dir.display(),
            conninfo_quote(&host.user),
            conninfo_quote(&host.dbname)
        ),
        socket_dir,
        data_dir: dir.join("data"),
        user: host.user.clone(),
        dbname: host.dbname.clone(),
        owner: instance::os_user(),
        sudo_user: std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()),
        creator_pid: std::process::id(),
        pid: None,
        created: rfc3339(now),
        expires: rfc3339(now + ttl),
        size_bytes: 0,
        ready: false,
        reached_lsn: None,
        reached_time: None,
        rto_seconds: None,
    }
}

/// Restore, configure, start, wait; fills in `inst` and saves it.
async fn build(
    repo: &Repository,
    host: &Host,
    options: &CreateOptions,
    inst: &mut Instance,
    pg_info: &crate::snapshot::PgInfo,
    clock: Instant,
) -> Result<(), Error> {
    let dir = inst.dir();
    let mut map = Vec::new();
    for (key, path) in &options.tablespaces {
        map.push((
            key.clone(),
            std::path::absolute(path).map_err(|source| Error::Io { what: "resolve", path: path.clone(), source })?,
        ));
    }
    let report = restore::run(
        repo,
        &RestoreOptions {
            snapshot: inst.snapshot_id.clone(),
            target: inst.data_dir.clone(),
            recovery: options.recovery.clone(),
            allow_gap: options.allow_gap,
            timeline: options.timeline,
            restore_command: options.restore_command.clone(),
            disable_archiving: true,
            include: Vec::new(),
            tablespaces: TablespaceMapping { map, all: Some(dir.join("tablespaces")) },
            config_dir: None,
            progress: options.progress.clone(),
        },
    )
    .await?;
    inst.size_bytes = report.bytes;
    // An accepted gap may have turned the target into "the end of the archive".
    let has_target = report.recovery_target != RecoveryTarget::Latest.to_string();
    if !has_target && !options.promote {
        inst.mode = Mode::Standby;
    }
    let ready = match inst.mode {
        Mode::Promoted => server::Ready::Promoted,
        Mode::Paused if has_target => server::Ready::Paused,
        Mode::Paused | Mode::Standby => {
            inst.mode = Mode::Standby;
            write_standby_signal(&inst.data_dir)?;
            let number = match WalFileName::parse(&report.wal_chain_end, pg_info.segment_size) {
                Ok(WalFileName::Segment { number, .. }) => number,
                _ => pg_info.stop_lsn.segment_no(pg_info.segment_size),
            };
            server::Ready::ReplayedTo(Lsn(number * pg_info.segment_size.bytes()))
        }
    };
    inst.save()?;
    server::start(host, inst, ready, has_target, clock).await
}

fn write_standby_signal(data_dir: &Path) -> Result<(), Error> {
    let path = data_dir.join("standby.signal");
    std::fs::write(&path, "").map_err(|source| Error::Io { what: "write", path: path.clone(), source })?;
    pg::hand_over(&path).map_err(|e| Error::Io {
        what: "hand over",
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Refuses instance paths inside the production data directory.
fn check_production(host: &Host, options: &CreateOptions) -> Result<(), Error> {
    let Some(data_dir) = &host.production_data_dir else { return Ok(()) };
    let data_dir = pg::conf::normalize(data_dir);
    let inside =
        |p: &Path| std::path::absolute(p).map(|p| pg::conf::normalize(&p)).is_ok_and(|p| p.starts_with(&data_dir));
    if inside(&host.dir) {
        return Err(Error::Production { what: "the scratch directory", path: host.dir.clone(), data_dir });
    }
    for (_, path) in &options.tablespaces {
        if inside(path) {
            return Err(Error::Production { what: "the tablespace directory", path: path.clone(), data_dir });
        }
    }
    Ok(())
}

/// `wanted` if usable, else a free port; never production's.
fn pick_port(host: &Host, wanted: Option<u16>) -> Result<u16, Error> {
    if let Some(port) = wanted {
        let refuse = |reason: &str| Err(Error::Port { port, reason: reason.to_owned() });
        if port == host.production_port {
            return refuse("it is the production cluster's port ([postgres] port)");
        }
        if port == 0 {
            return refuse("0 is not a port");
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return refuse("it is in use on 127.0.0.1");
        }
        return Ok(port);
    }
    for _ in 0..32 {
        let port = pg::free_port().map_err(|e| Error::Port { port: 0, reason: e.to_string() })?;
        if port != host.production_port {
            return Ok(port);
        }
    }
    Err(Error::Port { port: host.production_port, reason: "no other free port found".into() })
}

/// Refuses a new instance beyond `[scratch] max_instances` or `max_bytes`.
fn check_limits(host: &Host, snapshot: &str, needed: u64) -> Result<(), Error> {
    let existing: Vec<Instance> = instance::list(&host.dir)?.into_iter().filter_map(Result::ok).collect();
    let stop = || {
        existing
            .iter()
            .map(|i| {
                format!(
                    "`radd scratch stop {}` (snapshot {}, {}, expires {})",
                    i.id, i.snapshot_id, i.target, i.expires
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if existing.len() >= host.max_instances {
        return Err(Error::TooMany { count: existing.len(), max: host.max_instances, stop: stop() });
    }
    let used: u64 = existing.iter().map(|i| instance::disk_usage(&i.dir())).sum();
    if used.saturating_add(needed) > host.max_bytes {
        return Err(Error::TooLarge {
            snapshot: snapshot.to_owned(),
            needed,
            used,
            max: host.max_bytes,
            stop: if existing.is_empty() { "none exist; raise [scratch] max_bytes".into() } else { stop() },
        });
    }
    Ok(())
}

/// Lists the instances with their state now; unreadable records come back as errors.
pub fn list(host: &Host, now: DateTime<Utc>) -> Result<(Vec<Status>, Vec<Error>), Error> {
    let mut errors = Vec::new();
    let statuses = instance::list(&host.dir)?
        .into_iter()
        .filter_map(|r| r.map_err(|e| errors.push(e)).ok())
        .map(|i| instance::status(i, now))
        .collect();
    Ok((statuses, errors))
}

/// Stops the instances whose TTL ran out (and abandoned creations): the daemon's reaper.
pub fn stop_expired(host: &Host, now: DateTime<Utc>) -> (Vec<StopReport>, Vec<Error>) {
    stop(host, &Selection::Expired, now)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Percent-encodes a user or database name for a connection URI.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Quotes a value for a `key=value` connection string when it needs it.
fn conninfo_quote(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_quote_names() {
        assert_eq!(url_encode("post gres@x"), "post%20gres%40x");
        assert_eq!(conninfo_quote("postgres"), "postgres");
        assert_eq!(conninfo_quote("it's"), "'it\\'s'");
    }
}
