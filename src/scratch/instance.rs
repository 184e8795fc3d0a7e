//! One managed instance on disk: `<scratch dir>/<id>/` holding `data/` (the restored data
//! directory), `run/` (its configuration, server log and Unix socket), `tablespaces/` and
//! `instance.json`, the record every `radd` process (CLI, daemon, a later run after a reboot)
//! reads. The record is replaced atomically (temporary file + rename, mode 0600), so a reader
//! never sees half of one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Error;
use crate::pg::Lsn;

/// The record's file name inside an instance directory.
pub const RECORD: &str = "instance.json";
/// Held (flock) while instances are counted and a new one is created, so two concurrent
/// scratch restores cannot both pass the limits.
const LOCK: &str = ".radd-scratch.lock";

/// How the instance serves its recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Read-only hot standby, replay paused at the target (`recovery_target_action = pause`).
    Paused,
    /// Read-only hot standby that replayed the whole archive and keeps replaying WAL as it is
    /// archived (`latest` without `--promote`: PostgreSQL cannot pause at the end of the WAL).
    Standby,
    /// Promoted at the target: a writable copy on a timeline of its own (archiving off).
    Promoted,
}

/// `instance.json`: everything `radd scratch list|stop` and the daemon's reaper need, and what
/// `radd restore --scratch --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    /// Short id (8 hex digits), the directory's name.
    pub id: String,
    /// Snapshot restored.
    pub snapshot_id: String,
    /// Recovery target as asked (`time 2026-11-30 14:05:00.000000+00`, `latest`, …).
    pub target: String,
    /// A time target as an absolute UTC time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
    /// How the instance serves its recovery point.
    pub mode: Mode,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory of its Unix socket (private to the PostgreSQL OS user).
    pub socket_dir: PathBuf,
    /// The restored data directory.
    pub data_dir: PathBuf,
    /// Database role the connection strings name (`[postgres] user`; its production password
    /// applies over TCP).
    pub user: String,
    /// Database the connection strings name.
    pub dbname: String,
    /// `postgresql://user@127.0.0.1:port/db`: TCP, password authentication.
    pub dsn: String,
    /// `host=<socket dir> port=… user=… dbname=…`: the private socket, no password (for the
    /// PostgreSQL OS user and root).
    pub dsn_socket: String,
    /// OS user who created it.
    pub owner: String,
    /// `SUDO_USER` when created through sudo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
    /// The radd process that created it (a creation whose process died is abandoned).
    pub creator_pid: u32,
    /// Postmaster pid (from `data/postmaster.pid`) once started.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Creation time (RFC 3339 UTC).
    pub created: String,
    /// When the daemon stops it (RFC 3339 UTC).
    pub expires: String,
    /// Bytes restored (the data directory and tablespaces as restored).
    pub size_bytes: u64,
    /// Whether it reached its target and answers queries.
    pub ready: bool,
    /// `pg_last_wal_replay_lsn()` when it became ready.
    #[serde(default)]
    pub reached_lsn: Option<Lsn>,
    /// `pg_last_xact_replay_timestamp()` when it became ready: the commit time of the last
    /// transaction replayed.
    #[serde(default)]
    pub reached_time: Option<String>,
    /// Seconds from the command's start until it answered queries at the target.
    #[serde(default)]
    pub rto_seconds: Option<f64>,
}

/// Whether an instance's server is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its postmaster is alive.
    Running,
    /// Being created by a live radd process.
    Creating,
    /// No live postmaster (stopped, crashed, or the host restarted); `radd scratch stop`
    /// removes it.
    Stopped,
}

/// An instance as `radd scratch list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The record.
    #[serde(flatten)]
    pub instance: Instance,
    /// Up or not, checked now.
    pub state: State,
    /// Bytes its directory holds now (WAL replayed since grows it).
    pub disk_bytes: u64,
    /// Whether its TTL ran out.
    pub expired: bool,
}

impl Instance {
    /// The instance directory.
    #[must_use]
    pub fn dir(&self) -> PathBuf {
        self.data_dir.parent().map_or_else(|| self.data_dir.clone(), Path::to_owned)
    }

    /// When it expires; `None` for an unreadable time (treated as expired by the reaper).
    #[must_use]
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.expires).ok().map(|t| t.with_timezone(&Utc))
    }

    /// Whether the TTL ran out at `now`.
    #[must_use]
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at().is_none_or(|at| at <= now)
    }

    /// The live postmaster's pid: recorded, or read from `data/postmaster.pid` (a server that
    /// started before radd could record it).
    #[must_use]
    pub fn live_postmaster(&self) -> Option<i32> {
        self.pid
            .filter(|pid| is_postgres(*pid))
            .or_else(|| postmaster_pid(&self.data_dir).filter(|pid| is_postgres(*pid)))
    }

    /// Running, creating or stopped, checked now.
    #[must_use]
    pub fn state(&self) -> State {
        if self.live_postmaster().is_some() {
            State::Running
        } else if !self.ready && process_alive(self.creator_pid) {
            State::Creating
        } else {
            State::Stopped
        }
    }

    /// Writes the record atomically into its directory (mode 0600).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn save(&self) -> Result<(), Error> {
        let dir = self.dir();
        let path = dir.join(RECORD);
        let tmp = dir.join(format!(".{RECORD}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Io {
            what: "serialise",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
            .map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("replace", &path))?;
        crate::pg::hand_over(&path).map_err(|e| Error::Io {
            what: "hand over",
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Reads the record of the instance in `dir`.
    ///
    /// # Errors
    /// [`Error::Record`] when it is missing or unreadable.
    pub fn load(dir: &Path) -> Result<Instance, Error> {
        let path = dir.join(RECORD);
        let text = std::fs::read(&path).map_err(|e| Error::Record { path: path.clone(), message: e.to_string() })?;
        serde_json::from_slice(&text).map_err(|e| Error::Record { path, message: e.to_string() })
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.to_owned(), source }
}

/// Every instance under `parent` (directories with an `instance.json`; drills' own scratch
/// directories, which may share the parent, have none), oldest first. Unreadable records are
/// returned as errors beside the good ones, so one bad directory hides nothing else.
pub fn list(parent: &Path) -> Result<Vec<Result<Instance, Error>>, Error> {
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", parent)(e)),
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink() && p.join(RECORD).exists())
        .collect();
    dirs.sort();
    let mut found: Vec<Result<Instance, Error>> = dirs.iter().map(|d| Instance::load(d)).collect();
    found.sort_by(|a, b| match (a, b) {
        (Ok(a), Ok(b)) => a.created.cmp(&b.created),
        _ => std::cmp::Ordering::Equal,
    });
    Ok(found)
}

/// The status of `instance` now.
#[must_use]
pub fn status(instance: Instance, now: DateTime<Utc>) -> Status {
    let state = instance.state();
    let disk_bytes = disk_usage(&instance.dir());
    let expired = instance.expired(now);
    Status { instance, state, disk_bytes, expired }
}

/// Bytes a directory tree occupies on disk (allocated blocks; symlinks not followed).
#[must_use]
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return own };
    own + entries.filter_map(Result::ok).map(|e| disk_usage(&e.path())).sum::<u64>()
}

/// Creates `parent` if needed and takes the creation lock (released on drop).
pub fn lock(parent: &Path) -> Result<std::fs::File, Error> {
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let path = parent.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io("open", &path))?;
    file.lock().map_err(io("lock", &path))?;
    Ok(file)
}

/// Creates the instance directory `<parent>/<id>` (mode 0700) under a fresh random id.
pub fn create_dir(parent: &Path) -> Result<(String, PathBuf), Error> {
    for _ in 0..16 {
        let mut bytes = [0u8; 4];
        rand::fill(&mut bytes);
        let id = hex::encode(bytes);
        let dir = parent.join(&id);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok((id, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", &dir)(e)),
        }
    }
    Err(Error::Io {
        what: "find a free instance id in",
        path: parent.to_owned(),
        source: std::io::Error::other("16 random ids taken"),
    })
}

/// The postmaster pid in `data_dir/postmaster.pid` (its first line).
#[must_use]
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether `pid` is alive (a process we may not signal counts).
#[must_use]
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Ok(()) | Err(nix::errno::Errno::EPERM))
}

/// Whether `pid` is a live PostgreSQL server process (a reused pid running something else,
/// or a zombie, does not count).
#[must_use]
pub fn is_postgres(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) state …": comm may hold spaces and parentheses, the state follows the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else { return false };
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let state = tail.split_whitespace().next().unwrap_or("");
    (comm == "postgres" || comm == "postmaster") && state != "Z" && state != "X"
}

/// The OS user this process runs as (its name, else the uid): who created or stopped an
/// instance.
#[must_use]
pub fn os_user() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name)
}
