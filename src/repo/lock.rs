//! Repository locks, stored as objects so they work across hosts on S3 too.
//!
//! Which operations may overlap (restic's model): backups hold a *shared* lock from before they
//! read the blob index until their snapshot is committed, because everything they reuse or
//! upload is unreferenced until that commit and prune would otherwise delete it, however short
//! its grace period. Prune and key rewrap take the *exclusive* lock, which excludes every other
//! lock. WAL pushes, restores, drills, verify and forget take none: they only add objects or read
//! them. A lock names its holder (host, pid, command) and is refreshed every [`HEARTBEAT`]; one
//! whose heartbeat is older than [`STALE_AFTER`], or whose holder was a process of this host that
//! no longer exists, is stale (its process died). A stale exclusive
//! lock still blocks (a crashed prune is noticed) until `radd unlock --stale`; a stale shared
//! lock is ignored — and a backup that could not refresh its lock for that long, or finds it
//! removed, refuses to commit ([`SharedLock::check`]), since a prune may have ignored it.
//!
//! Taking a lock is create-then-list on both sides, so of a backup and a prune starting at once
//! at least one sees the other and backs off: never both proceed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::{Error as RepoError, ObjectKey, PutOutcome, Repo};

/// How often a held lock's heartbeat is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A lock whose heartbeat is older than this is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Whether a lock excludes everyone (prune) or only exclusive holders (backups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Excludes every other lock (prune, key rewrap). Locks written before shared locks existed
    /// were all exclusive.
    #[default]
    Exclusive,
    /// Excludes only exclusive locks (backups).
    Shared,
}

/// The content of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// Lock object name.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Command that holds it ("prune", "backup pg").
    pub command: String,
    /// Exclusive or shared.
    #[serde(default)]
    pub kind: LockKind,
    /// When it was taken.
    pub created: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat: DateTime<Utc>,
}

impl LockInfo {
    /// Whether the holder stopped refreshing it.
    #[must_use]
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        (now - self.heartbeat).to_std().unwrap_or_default() > STALE_AFTER || self.holder_is_gone()
    }

    /// Whether the holder is a process of this host that no longer exists (killed, crashed):
    /// its lock need not wait out [`STALE_AFTER`]. A reused pid only makes the lock look alive,
    /// which is the safe mistake.
    fn holder_is_gone(&self) -> bool {
        let this_host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        let Ok(pid) = i32::try_from(self.pid) else { return false };
        self.host == this_host
            && pid != 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
    }
}

/// Errors taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the exclusive lock.
    #[error("repository is locked by `{command}` on {host} (pid {pid}), taken {age}s ago, last heartbeat {beat}s ago; wait for it, or if that process is gone run `radd unlock --stale` (after {stale}s without heartbeat)", age = (Utc::now() - .0.created).num_seconds(), beat = (Utc::now() - .0.heartbeat).num_seconds(), stale = STALE_AFTER.as_secs(), command = .0.command, host = .0.host, pid = .0.pid)]
    Held(Box<LockInfo>),
    /// A running backup holds a shared lock, so prune must not delete anything now.
    #[error("repository is in use by `{command}` on {host} (pid {pid}), running for {age}s; prune cannot run beside a backup: run it when the backup has finished (or with --lock-wait)", age = (Utc::now() - .0.created).num_seconds(), command = .0.command, host = .0.host, pid = .0.pid)]
    InUse(Box<LockInfo>),
    /// The lock lapsed (not refreshed for too long, or removed by `radd unlock`): another
    /// process may have judged it stale, so a backup must not commit and a prune not delete.
    #[error(
        "the repository lock of this {command} lapsed ({why}); another process may have treated it as dead, so {command} stopped before committing or deleting anything more: run it again"
    )]
    Lapsed {
        /// The command holding the lock.
        command: String,
        /// What happened to the lock.
        why: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl Error {
    /// Busy (another holder) or lapsed locks are conflicts, storage failures are storage.
    #[must_use]
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Error::Repo(e) => e.kind(),
            Error::Held(_) | Error::InUse(_) | Error::Lapsed { .. } => crate::error::ErrorKind::Conflict,
        }
    }
}

/// A held exclusive lock; dropping it stops the heartbeat, [`ExclusiveLock::release`] deletes it.
pub struct ExclusiveLock {
    held: Held,
}

/// A held shared lock (a backup's); dropping it stops the heartbeat, [`SharedLock::release`]
/// deletes it, [`SharedLock::check`] tells whether it is still safe to commit.
pub struct SharedLock {
    held: Held,
}

/// A lock object this process created and keeps refreshing.
struct Held {
    repo: Repo,
    info: LockInfo,
    heartbeat: JoinHandle<()>,
    /// The longest time between two successful refreshes so far, and the last one.
    refreshed: Arc<Mutex<Refreshes>>,
}

struct Refreshes {
    last: Instant,
    longest_gap: Duration,
}

/// Every lock in the repository (unreadable ones are skipped with a warning).
pub async fn list(repo: &Repo) -> Result<Vec<LockInfo>, RepoError> {
    let mut out = Vec::new();
    for item in repo.list(ObjectKey::LOCK_DIR).await? {
        let id = item.key.rsplit('/').next().unwrap_or_default().to_owned();
        match repo.get(&ObjectKey::Lock(id.clone())).await {
            Ok(body) => match serde_json::from_slice::<LockInfo>(&body) {
                Ok(info) => out.push(info),
                Err(error) => tracing::warn!(lock = %id, error = %error, "unreadable lock object"),
            },
            Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Takes the exclusive lock for `command`, or fails naming the holder: another exclusive lock
/// (stale ones of dead processes too, so a crashed prune is noticed, until `radd unlock
/// --stale`), or a live shared lock (a running backup). While only shared locks stand in the
/// way it waits for them, polling, for up to `wait`.
pub async fn exclusive(repo: &Repo, command: &str, wait: Duration) -> Result<ExclusiveLock, Error> {
    let deadline = Instant::now() + wait;
    loop {
        let held = create(repo, command, LockKind::Exclusive).await?;
        let now = Utc::now();
        let others: Vec<LockInfo> = list(repo).await?.into_iter().filter(|l| l.id != held.info.id).collect();
        // Of two exclusive lockers, whoever created the oldest lock wins.
        let older_exclusive = others
            .iter()
            .filter(|l| l.kind == LockKind::Exclusive && (l.created, &l.id) < (held.info.created, &held.info.id))
            .min_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
            .cloned();
        let live_shared = others.iter().find(|l| l.kind == LockKind::Shared && !l.is_stale(now)).cloned();
        let backup = match (older_exclusive, live_shared) {
            (None, None) => return Ok(ExclusiveLock { held }),
            (Some(holder), _) => {
                held.release().await?;
                return Err(Error::Held(Box::new(holder)));
            }
            (None, Some(backup)) => backup,
        };
        held.release().await?;
        if Instant::now() >= deadline {
            return Err(Error::InUse(Box::new(backup)));
        }
        tracing::info!(holder = %backup.command, host = %backup.host, pid = backup.pid, "waiting for a running backup to finish before taking the exclusive lock");
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Takes a shared lock for `command` (a backup). While a live exclusive lock is held it waits
/// for it, polling, for up to `wait`, then fails naming the holder. A stale exclusive lock (a
/// prune that died) does not stop backups: a live prune whose lock lapsed stops deleting
/// ([`ExclusiveLock::check`]).
pub async fn shared(repo: &Repo, command: &str, wait: Duration) -> Result<SharedLock, Error> {
    let deadline = Instant::now() + wait;
    loop {
        let held = create(repo, command, LockKind::Shared).await?;
        let now = Utc::now();
        let exclusive = list(repo).await?.into_iter().find(|l| l.kind == LockKind::Exclusive && !l.is_stale(now));
        let Some(holder) = exclusive else {
            return Ok(SharedLock { held });
        };
        // Back off so the exclusive holder (which may be waiting for us) can proceed.
        held.release().await?;
        if Instant::now() >= deadline {
            return Err(Error::Held(Box::new(holder)));
        }
        tracing::info!(holder = %holder.command, host = %holder.host, pid = holder.pid, "waiting for the repository's exclusive lock to be released");
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// How often a waiting locker looks again.
const POLL: Duration = Duration::from_secs(2);

async fn create(repo: &Repo, command: &str, kind: LockKind) -> Result<Held, Error> {
    let now = Utc::now();
    let id = format!(
        "{}-{}-{}",
        now.format("%Y%m%dT%H%M%S%3fZ"),
        std::process::id(),
        LOCK_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let info = LockInfo {
        id: id.clone(),
        host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        pid: std::process::id(),
        command: command.to_owned(),
        kind,
        created: now,
        heartbeat: now,
    };
    if repo.put_new(&ObjectKey::Lock(id.clone()), encode(&info)).await? == PutOutcome::AlreadyExists {
        return Err(Error::Held(Box::new(info)));
    }
    let refreshed = Arc::new(Mutex::new(Refreshes { last: Instant::now(), longest_gap: Duration::ZERO }));
    let heartbeat = {
        let (repo, mut info, refreshed) = (repo.clone(), info.clone(), Arc::clone(&refreshed));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                info.heartbeat = Utc::now();
                match repo.put_overwrite(&ObjectKey::Lock(info.id.clone()), encode(&info)).await {
                    Ok(()) => {
                        if let Ok(mut r) = refreshed.lock() {
                            r.longest_gap = r.longest_gap.max(r.last.elapsed());
                            r.last = Instant::now();
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "cannot refresh the repository lock"),
                }
            }
        })
    };
    Ok(Held { repo: repo.clone(), info, heartbeat, refreshed })
}

static LOCK_SEQ: AtomicU64 = AtomicU64::new(0);

fn encode(info: &LockInfo) -> bytes::Bytes {
    // A struct of strings, numbers and times always serialises.
    serde_json::to_vec(info).unwrap_or_default().into()
}

impl Held {
    async fn release(self) -> Result<(), RepoError> {
        self.heartbeat.abort();
        self.repo.delete(&ObjectKey::Lock(self.info.id.clone())).await
    }

    async fn check(&self) -> Result<(), Error> {
        let command = self.info.command.clone();
        let gap = self.refreshed.lock().map(|r| r.longest_gap.max(r.last.elapsed())).unwrap_or(Duration::MAX);
        if gap > TRUSTED_GAP {
            return Err(Error::Lapsed { command, why: format!("not refreshed for {}s", gap.as_secs()) });
        }
        match self.repo.get(&ObjectKey::Lock(self.info.id.clone())).await {
            Ok(_) => Ok(()),
            Err(RepoError::NotFound { .. }) => {
                Err(Error::Lapsed { command, why: format!("lock {} was removed (radd unlock?)", self.info.id) })
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl ExclusiveLock {
    /// Whether the lock held all along: it was never left unrefreshed long enough for another
    /// process to judge it stale, and it still exists (`radd unlock` did not remove it). Call
    /// right before committing (a backup) or deleting (a prune).
    pub async fn check(&self) -> Result<(), Error> {
        self.held.check().await
    }

    /// Deletes the lock.
    pub async fn release(self) -> Result<(), RepoError> {
        self.held.release().await
    }
}

/// Refreshes may lapse this long before a shared lock is no longer trusted: a margin below
/// [`STALE_AFTER`] for the time between a prune listing the lock and judging it.
const TRUSTED_GAP: Duration = Duration::from_secs(STALE_AFTER.as_secs() - 60);

impl SharedLock {
    /// Whether the lock held all along, so committing is safe: see [`ExclusiveLock::check`].
    pub async fn check(&self) -> Result<(), Error> {
        self.held.check().await
    }

    /// Deletes the lock.
    pub async fn release(self) -> Result<(), RepoError> {
        self.held.release().await
    }
}

/// Removes locks whose heartbeat is older than [`STALE_AFTER`] (or all with `all`); returns them.
pub async fn unlock(repo: &Repo, all: bool) -> Result<Vec<LockInfo>, RepoError> {
    let now = Utc::now();
    let mut removed = Vec::new();
    for lock in list(repo).await? {
        if all || lock.is_stale(now) {
            repo.delete(&ObjectKey::Lock(lock.id.clone())).await?;
            removed.push(lock);
        }
    }
    Ok(removed)
}
