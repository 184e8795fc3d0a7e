//! Draining a `.ready` backlog: WAL files PostgreSQL has marked ready after the one it asked
//! for are sealed in parallel and published strictly in name order, each leaving a marker
//! (`<pg_wal>/radd-archived/<name>`) that PostgreSQL's own later call for it checks instead of
//! reading the file again.
//!
//! Two ways to run it. Inline ([`push_with_backlog`]): the call for the requested file also
//! archives up to `push_ahead` files after it before it returns. In the background
//! ([`drain`], `archive.push_async`, the default): the call archives only its own file and
//! starts one detached drainer (`wal-push --drain`) that keeps sealing the backlog while
//! PostgreSQL's calls for the next files wait for the drainer's markers. Inline, the cores sit
//! idle while PostgreSQL works through the calls for files already archived ahead; in the
//! background they never do, as with pgBackRest's asynchronous archive-push.
//!
//! Either way PostgreSQL is acknowledged only for durable objects, nothing is published out of
//! order (a failure stops the drain before anything after it), and one drainer runs per
//! `pg_wal` (a lock file beside the markers).

use std::path::{Path, PathBuf};

use super::push::{self, MARKER_DIR, PUSHING_SUFFIX, PushOptions, PushOutcome};
use super::{Error, key_of, parse_name, segsize};
use crate::pg::SegmentSize;
use crate::repository::Repository;

/// Lock file the running drainer holds (flock), beside the markers. Names starting with `.`
/// are never taken for markers.
const DRAIN_LOCK: &str = ".drain.lock";
/// Where a detached drainer's log goes (see [`drain_log_path`]), replaced at each start.
pub const DRAIN_LOG: &str = ".drain.log";

/// The log file of the drainer of `path`'s `pg_wal`, beside the markers.
#[must_use]
pub fn drain_log_path(path: &Path) -> Option<PathBuf> {
    path.parent().map(|dir| dir.join(MARKER_DIR).join(DRAIN_LOG))
}

/// Archives `path` and, so that a backlog drains fast, up to `options.ahead` other WAL segments
/// waiting in `archive_status/*.ready` after it (oldest first), before returning. The requested
/// file is sealed first (with every compressing thread), then the others `options.parallel` at
/// a time; all are published strictly in name order, the requested one first, so the archive never shows a later segment before an earlier one
/// (a reader would take that for a gap). Only the requested file decides success: PostgreSQL
/// acknowledges the others itself when it asks for them, which their markers make a cheap
/// check. Returns how many extras were stored.
pub async fn push_with_backlog(
    repo: &Repository,
    path: &Path,
    options: PushOptions,
) -> Result<(PushOutcome, usize), Error> {
    let own_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    // Claimed once for the whole batch: the segments beside this one are the same cluster's.
    let claimed = push::segment_size_at(path)?;
    if let Some(size) = claimed {
        segsize::claim(repo, size, &format!("segment {own_name}")).await?;
    }
    let own = push::commit(repo, push::prepare_claimed(repo, path, options, claimed).await?).await?;
    push::remove_marker(path, &own_name);
    let stored = match claimed.filter(|_| options.ahead > 0) {
        Some(size) => archive_ahead(repo, path, size, options).await.stored,
        None => 0,
    };
    Ok((own, stored))
}

/// What one round of [`archive_ahead`] did.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    /// Files it tried to archive.
    attempted: usize,
    /// Files it stored (the others were in the archive already).
    stored: usize,
    /// Whether it stopped at a file it could not archive.
    failed: bool,
}

/// Archives up to `options.ahead` `.ready` files after `path` that are not archived yet, sealed
/// `options.parallel` at a time and published in name order, each with its marker; stops at
/// the first failure (publishing later files would leave a hole before them).
async fn archive_ahead(repo: &Repository, path: &Path, size: SegmentSize, options: PushOptions) -> Round {
    let files =
        not_yet_archived(repo, ready_files(path, options.ahead + 2 * options.parallel), options.ahead, size).await;
    let parallel = options.parallel.max(1);
    // With several files in flight, the cores are busy sealing different files: one
    // compressing thread per file is enough.
    let options = if parallel > 1 { PushOptions { compress_workers: 1, ..options } } else { options };
    let options = PushOptions { direct_read: true, ..options };
    let mut round = Round { attempted: files.len(), ..Round::default() };
    let mut files = files.into_iter();
    let mut in_flight = std::collections::VecDeque::new();
    loop {
        while in_flight.len() < parallel {
            let Some(p) = files.next() else { break };
            let repo = repo.clone();
            in_flight.push_back(tokio::spawn(async move {
                let result = push::prepare_claimed(&repo, &p, options, Some(size)).await;
                (result, p)
            }));
        }
        let Some(next) = in_flight.pop_front() else { break };
        let committed = match next.await {
            Ok((result, p)) => async { push::commit_ahead(repo, result?).await }.await.map_err(|e| (e.to_string(), p)),
            Err(e) => Err((e.to_string(), PathBuf::new())),
        };
        match committed {
            Ok(outcome) => round.stored += usize::from(outcome == PushOutcome::Stored),
            Err((error, p)) => {
                // Stop here: publishing later files would leave a hole before them. The files
                // in flight are waited for, so that their staging objects are gone (dropped)
                // when this returns.
                tracing::warn!(path = %p.display(), error = %error, "could not archive a backlog segment ahead of time; PostgreSQL will retry it");
                round.failed = true;
                for task in in_flight {
                    let _ = task.await;
                }
                break;
            }
        }
    }
    round
}

/// Whether `.ready` files after `path` wait that no earlier call archived ahead: a drainer is
/// worth starting.
#[must_use]
pub fn backlog_waiting(path: &Path) -> bool {
    !ready_files(path, 1).is_empty()
}

/// Whether a drainer holds the lock of `path`'s `pg_wal` (so starting another is pointless).
#[must_use]
pub fn drainer_running(path: &Path) -> bool {
    let Some(lock) = lock_path(path) else { return false };
    let Ok(file) = std::fs::OpenOptions::new().read(true).open(lock) else { return false };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// The detached drainer: takes the `pg_wal` lock (returns at once if another drainer holds
/// it), then archives the `.ready` files after `path` (already archived by the call that
/// started it) round after round until none is left or one fails. Returns how many it stored.
pub async fn drain(repo: &Repository, path: &Path, options: PushOptions) -> Result<usize, Error> {
    let Some(lock) = lock_path(path) else { return Ok(0) };
    if let Some(dir) = lock.parent() {
        std::fs::create_dir_all(dir).map_err(|e| push::io_error("create", dir, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| push::io_error("create", &lock, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(0),
        Err(std::fs::TryLockError::Error(e)) => return Err(push::io_error("lock", &lock, e)),
    }
    let Some(size) = push::segment_size_at(path)? else { return Ok(0) };
    let mut stored = 0;
    loop {
        let round = archive_ahead(repo, path, size, options).await;
        stored += round.stored;
        if round.attempted == 0 || round.failed {
            break;
        }
    }
    tracing::info!(after = %path.display(), stored, "backlog drained");
    Ok(stored)
}

fn lock_path(path: &Path) -> Option<PathBuf> {
    path.parent().map(|dir| dir.join(MARKER_DIR).join(DRAIN_LOCK))
}

/// The first `limit` of `candidates` (in order) that the archive does not hold yet, stopping
/// at the first one it cannot tell: segments an earlier call already archived ahead are
/// skipped.
async fn not_yet_archived(
    repo: &Repository,
    candidates: Vec<PathBuf>,
    limit: usize,
    size: SegmentSize,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in candidates {
        if out.len() >= limit {
            break;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { break };
        let Ok(wal) = parse_name(name, Some(size)) else { break };
        match repo.exists(&key_of(&wal, name)).await {
            Ok(true) => {}
            Ok(false) => out.push(path),
            Err(_) => break,
        }
    }
    out
}

/// Up to `limit` segments PostgreSQL has marked ready whose names sort after the requested one
/// and that no earlier call archived ahead (no marker), oldest first. Also removes markers
/// whose segment is no longer waiting (PostgreSQL has acknowledged it): they can never be used.
fn ready_files(path: &Path, limit: usize) -> Vec<PathBuf> {
    let (Some(dir), Some(own)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join("archive_status")) else {
        return Vec::new();
    };
    let ready: std::collections::BTreeSet<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".ready")).map(str::to_owned))
        .collect();
    let mut marked = std::collections::BTreeSet::new();
    if let Ok(markers) = std::fs::read_dir(dir.join(MARKER_DIR)) {
        for marker in markers.filter_map(Result::ok) {
            let name = marker.file_name();
            let name = name.to_str().unwrap_or_default();
            // `.pushing` markers are not acknowledgements: they stay until that file is pushed;
            // the drainer's lock and log are not markers.
            if name.starts_with('.') {
                continue;
            }
            if name != own && !ready.contains(name) && !name.ends_with(PUSHING_SUFFIX) {
                let _ = std::fs::remove_file(marker.path());
            } else {
                marked.insert(name.to_owned());
            }
        }
    }
    // Segments with a marker were archived ahead by an earlier call: no need to ask the store.
    ready
        .into_iter()
        .filter(|n| n.len() == 24 && n.as_str() > own && !marked.contains(n))
        .take(limit)
        .map(|n| dir.join(n))
        .collect()
}
