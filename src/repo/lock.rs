//! Repository locks, stored as objects so they work across hosts on S3 too.
//!
//! Which operations may overlap: WAL pushes, backups, restores, drills, verify and forget never
//! take a lock — they only add objects or read them, and prune's grace period makes deletion
//! safe beside them. Prune (and, later, key rewrap) takes the *exclusive* lock: two of them must
//! not run at once. A lock names its holder (host, pid, command) and is refreshed every
//! [`HEARTBEAT`]; one whose heartbeat is older than [`STALE_AFTER`] is stale (its process died)
//! and is removed by `radd unlock --stale`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::{Error as RepoError, ObjectKey, PutOutcome, Repo};

/// How often a held lock's heartbeat is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A lock whose heartbeat is older than this is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// The content of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// Lock object name.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Command that holds it ("prune").
    pub command: String,
    /// When it was taken.
    pub created: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat: DateTime<Utc>,
}

impl LockInfo {
    /// Whether the holder stopped refreshing it.
    #[must_use]
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        (now - self.heartbeat).to_std().unwrap_or_default() > STALE_AFTER
    }
}

/// Errors taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the exclusive lock.
    #[error("repository is locked by `{command}` on {host} (pid {pid}), taken {age}s ago, last heartbeat {beat}s ago; wait for it, or if that process is gone run `radd unlock --stale` (after {stale}s without heartbeat)", age = (Utc::now() - .0.created).num_seconds(), beat = (Utc::now() - .0.heartbeat).num_seconds(), stale = STALE_AFTER.as_secs(), command = .0.command, host = .0.host, pid = .0.pid)]
    Held(Box<LockInfo>),
    /// Storage failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// A held exclusive lock; dropping it stops the heartbeat, [`ExclusiveLock::release`] deletes it.
pub struct ExclusiveLock {
    repo: Repo,
    id: String,
    heartbeat: JoinHandle<()>,
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

/// Takes the exclusive lock for `command`, or fails naming the holder. Stale locks of dead
/// processes still block (so a crashed prune is noticed) until `radd unlock --stale`.
pub async fn exclusive(repo: &Repo, command: &str) -> Result<ExclusiveLock, Error> {
    let now = Utc::now();
    let id = format!("{}-{}", now.format("%Y%m%dT%H%M%S%3fZ"), std::process::id());
    let info = LockInfo {
        id: id.clone(),
        host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        pid: std::process::id(),
        command: command.to_owned(),
        created: now,
        heartbeat: now,
    };
    let body = serde_json::to_vec(&info).expect("lock serialises");
    if repo.put_new(&ObjectKey::Lock(id.clone()), body.into()).await? == PutOutcome::AlreadyExists {
        return Err(Error::Held(Box::new(info)));
    }
    // Whoever created the oldest lock wins; everyone else backs off.
    let mut others: Vec<LockInfo> = list(repo).await?.into_iter().filter(|l| l.id != id).collect();
    others.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    if let Some(holder) = others.into_iter().find(|l| (l.created, &l.id) < (info.created, &info.id)) {
        repo.delete(&ObjectKey::Lock(id)).await?;
        return Err(Error::Held(Box::new(holder)));
    }
    let heartbeat = {
        let repo = repo.clone();
        let mut info = info.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                info.heartbeat = Utc::now();
                let body = serde_json::to_vec(&info).expect("lock serialises");
                if let Err(error) = repo.put_overwrite(&ObjectKey::Lock(info.id.clone()), body.into()).await {
                    tracing::warn!(error = %error, "cannot refresh the repository lock");
                }
            }
        })
    };
    Ok(ExclusiveLock { repo: repo.clone(), id, heartbeat })
}

impl ExclusiveLock {
    /// Deletes the lock.
    pub async fn release(self) -> Result<(), RepoError> {
        self.heartbeat.abort();
        self.repo.delete(&ObjectKey::Lock(self.id.clone())).await
    }
}

impl Drop for ExclusiveLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
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
