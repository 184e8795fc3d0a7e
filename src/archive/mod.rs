//! WAL archiving: `wal-push` (archive_command) and `wal-fetch` (restore_command), plus the
//! WAL chain check restores run before writing anything.
//!
//! A push is idempotent: the same content under the same name succeeds, different content fails
//! loudly, and nothing is ever overwritten. A fetch distinguishes "past the end of the archive"
//! (PostgreSQL may end recovery) from a gap or a damaged segment (recovery must abort), because
//! PostgreSQL takes any "not found" as the end of the archive. Knows no S3.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;

mod bound;
mod drain;
mod pages;
mod push;
mod segsize;
mod timeline;

pub use bound::{drop_spool, is_past_end};
pub use drain::{DRAIN_LOG, backlog_waiting, drain, drain_log_path, drainer_running, push_with_backlog};
pub use push::{MARKER_DIR, Prepared, PushOptions, PushOutcome, commit, prepare, push};
pub use segsize::{
    SegmentSizeRecord, claim as claim_segment_size, for_snapshot as segment_size_for_snapshot,
    recorded as recorded_segment_size, segment_size,
};
pub use timeline::{Divergence, Fork, Timelines, parse_history};

use crate::codec::ObjectKind;
use crate::crypto::Digest;
use crate::error::ErrorKind;
use crate::pg::{SegmentSize, Timeline, WalFileName};
use crate::repo::{self, ObjectKey};
use crate::repository::{self, Repository};

/// Errors archiving or fetching WAL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is not a WAL file name.
    #[error("{0}")]
    BadName(String),
    /// A local file could not be read or written.
    #[error("cannot {what} {path}: {source}", path = .path.display())]
    Io {
        /// read, write, rename.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The archive already holds this name with other content. Never overwritten.
    #[error(
        "WAL file {name} is already archived with a different checksum; refusing to overwrite it (two clusters archiving into one repository?)"
    )]
    Mismatch {
        /// The WAL file name.
        name: String,
    },
    /// The file is genuinely not in the archive, and nothing later is: end of archive.
    #[error("WAL file {name} is not in the archive")]
    NotInArchive {
        /// The WAL file name.
        name: String,
    },
    /// The segment is missing although later ones exist: recovery must not stop here silently.
    #[error(
        "WAL gap on timeline {timeline}: segment {missing} is missing from the archive although WAL after it is needed; recovering past it would silently lose data"
    )]
    Gap {
        /// The first missing segment.
        missing: String,
        /// Its timeline.
        timeline: Timeline,
    },
    /// A segment or backup of another segment size than the repository's: a second cluster
    /// archiving here. Nothing of it is stored.
    #[error("two clusters in one repository: {} holds WAL of {} segments (first stored by {}), but {} has {} segments; nothing was stored — give each cluster its own repository", .0.location, .0.recorded, .0.recorded_by, .0.what, .0.found)]
    TwoClusters(Box<TwoClusters>),
    /// A WAL file that cannot be a segment of any cluster (its length or page header).
    #[error("{name} is not a WAL segment PostgreSQL wrote: {reason}")]
    BadSegment {
        /// The file or object.
        name: String,
        /// Why.
        reason: String,
    },
    /// A WAL file or object whose page headers hold another position, timeline or cluster than
    /// its name says: a segment moved or copied to another name, or not WAL at all. Never
    /// archived, never handed to PostgreSQL.
    #[error("WAL file {name} does not hold the WAL its name says: {reason}; {action}")]
    Misnamed {
        /// The file's path or the object's key.
        name: String,
        /// Which header contradicts the name, and how.
        reason: String,
        /// What radd does about it.
        action: &'static str,
    },
    /// Repository-level failure (storage, decryption, integrity).
    #[error(transparent)]
    Repository(#[from] repository::Error),
}

/// What [`Error::TwoClusters`] reports: the repository's segment size and what was refused.
#[derive(Debug)]
pub struct TwoClusters {
    /// Where the repository is.
    pub location: String,
    /// The repository's segment size.
    pub recorded: SegmentSize,
    /// What stored the first WAL of that size.
    pub recorded_by: String,
    /// The size of what was refused.
    pub found: SegmentSize,
    /// What was refused ("segment …", "backup of …", "snapshot …").
    pub what: String,
}

impl Error {
    /// Category for exit codes; gaps are integrity failures.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadName(_) => ErrorKind::Config,
            Error::Io { .. } => ErrorKind::Io,
            Error::Mismatch { .. } | Error::TwoClusters(_) => ErrorKind::Conflict,
            Error::BadSegment { .. } | Error::Misnamed { .. } => ErrorKind::Integrity,
            Error::NotInArchive { .. } => ErrorKind::NotFound,
            Error::Gap { .. } => ErrorKind::Integrity,
            Error::Repository(e) => e.kind(),
        }
    }
}

/// Polls until the archived WAL file `name` of `timeline` is in the repository: `Ok(true)` as
/// soon as it is, `Ok(false)` when `limit` passed first. Polls every 10 ms at first, backing off
/// to 250 ms, so a segment archived promptly is seen promptly.
///
/// # Errors
/// The repository cannot be asked.
pub async fn wait_archived(
    repo: &Repository,
    timeline: Timeline,
    name: &str,
    limit: std::time::Duration,
) -> Result<bool, crate::repository::Error> {
    let key = ObjectKey::Wal { dir: timeline.to_string(), name: name.to_owned() };
    let deadline = std::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        if repo.exists(&key).await? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(std::time::Duration::from_millis(250));
    }
}

/// The repository key of a WAL file, grouped by timeline, by the name it was parsed from
/// (parsing accepts only the canonical spelling).
fn key_of(wal: &WalFileName, name: &str) -> ObjectKey {
    ObjectKey::Wal { dir: wal.timeline().to_string(), name: name.to_owned() }
}

/// Parses `name`: a bare segment name with the segment size, any other WAL name without.
fn parse_name(name: &str, segment_size: Option<SegmentSize>) -> Result<WalFileName, Error> {
    match segment_size {
        Some(size) => WalFileName::parse(name, size),
        None => WalFileName::parse_auxiliary(name),
    }
    .map_err(Error::BadName)
}

/// What a segment name needs to be read: the repository's segment size (`Ok(None)` for other
/// WAL names). A repository that holds no segment has none of any name: not in the archive.
async fn size_for_name(repo: &Repository, name: &str) -> Result<Option<SegmentSize>, Error> {
    if !WalFileName::is_segment_name(name) {
        return Ok(None);
    }
    match segment_size(repo).await? {
        Some(size) => Ok(Some(size)),
        None => Err(Error::NotInArchive { name: name.to_owned() }),
    }
}

/// Fetches one WAL file into `dest` (written to a temporary name, then renamed); a segment
/// name is read with the repository's segment size. A segment whose page headers contradict
/// its name ([`crate::pg::PageCheck`]) is refused ([`Error::Misnamed`]) and nothing is written.
pub async fn fetch(repo: &Repository, name: &str, dest: &Path) -> Result<Digest, Error> {
    let size = size_for_name(repo, name).await?;
    fetch_sized(repo, name, size, dest).await
}

/// [`fetch`] with the segment size already known (`None` for names that need none).
async fn fetch_sized(repo: &Repository, name: &str, size: Option<SegmentSize>, dest: &Path) -> Result<Digest, Error> {
    let wal = parse_name(name, size)?;
    let key = key_of(&wal, name);
    let plaintext = match repo.get_open(ObjectKind::Wal, &key).await {
        Ok(p) => p,
        Err(repository::Error::Repo(repo::Error::NotFound { .. })) => {
            return Err(missing_error(repo, &wal, name, size).await);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(size) = size
        && let Err(mismatch) = crate::pg::check_pages(&wal, size, &plaintext)
    {
        return Err(pages::misnamed(&key.to_string(), &mismatch, pages::FETCH_ACTION));
    }
    let digest = Digest::sha256(&plaintext);
    let tmp = dest.with_extension("radd-partial");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&plaintext)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io { what: "write", path: dest.to_owned(), source }
    })?;
    Ok(digest)
}

/// Fetches `name` like [`fetch`], serving it from the local spool when an earlier call
/// prefetched it, and prefetching the next `prefetch` segments of its timeline into the spool
/// (`<pg_wal>/radd-spool`, two at a time) so that recovery does not wait on storage for each one.
/// Prefetched segments are decrypted and verified before they enter the spool. The spool is
/// emptied of other timelines on a timeline switch and entirely at the end of the archive.
pub async fn fetch_with_prefetch(repo: &Repository, name: &str, dest: &Path, prefetch: u64) -> Result<(), Error> {
    let size = size_for_name(repo, name).await?;
    let wal = parse_name(name, size)?;
    let (WalFileName::Segment { timeline, number }, Some(size)) = (&wal, size) else {
        return fetch_sized(repo, name, size, dest).await.map(|_| ());
    };
    let (timeline, number) = (*timeline, *number);
    let spool = spool_dir(dest);
    clean_spool(&spool, |n| !n.starts_with(&timeline.to_string()));
    let spooled = spool.join(name);
    if std::fs::rename(&spooled, dest).is_ok() {
        tracing::debug!(name, "served from the prefetch spool");
        return Ok(());
    }
    if prefetch == 0 {
        return fetch_sized(repo, name, Some(size), dest).await.map(|_| ());
    }
    if let Err(source) = std::fs::create_dir_all(&spool) {
        tracing::warn!(spool = %spool.display(), error = %source, "cannot create the prefetch spool; fetching without prefetch");
        return fetch_sized(repo, name, Some(size), dest).await.map(|_| ());
    }
    let ahead = (number + 1..=number + prefetch)
        .map(|n| WalFileName::Segment { timeline, number: n }.to_name(size))
        .filter(|n| !spool.join(n).exists())
        .collect::<Vec<_>>();
    let prefetched = futures::stream::iter(ahead)
        .map(|n| {
            let target = spool.join(&n);
            async move {
                if let Err(error) = fetch_sized(repo, &n, Some(size), &target).await {
                    tracing::debug!(name = %n, error = %error, "not prefetched");
                }
            }
        })
        .buffer_unordered(2)
        .collect::<Vec<()>>();
    let (own, _) = tokio::join!(fetch_sized(repo, name, Some(size), dest), prefetched);
    match own {
        Err(e @ Error::NotInArchive { .. }) => {
            clean_spool(&spool, |_| true);
            let _ = std::fs::remove_dir(&spool);
            Err(e)
        }
        other => other.map(|_| ()),
    }
}

/// Removes spooled files whose names match `remove`.
/// The prefetch spool for segments fetched into `dest`'s directory (`<pg_wal>/radd-spool`).
fn spool_dir(dest: &Path) -> PathBuf {
    dest.parent().unwrap_or(Path::new(".")).join("radd-spool")
}

fn clean_spool(spool: &Path, remove: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(spool) else { return };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_str().is_some_and(&remove) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A missing segment is the end of the archive only if nothing later exists on its timeline.
async fn missing_error(repo: &Repository, wal: &WalFileName, name: &str, size: Option<SegmentSize>) -> Error {
    let (WalFileName::Segment { timeline, number }, Some(size)) = (wal, size) else {
        return Error::NotInArchive { name: name.to_owned() };
    };
    match archived_segments(repo, *timeline, size).await {
        Ok(segments) if segments.range(number + 1..).next().is_some() => {
            Error::Gap { missing: name.to_owned(), timeline: *timeline }
        }
        Ok(_) => Error::NotInArchive { name: name.to_owned() },
        Err(e) => e,
    }
}

/// Segment numbers archived on `timeline`.
pub async fn archived_segments(
    repo: &Repository,
    timeline: Timeline,
    segment_size: SegmentSize,
) -> Result<BTreeSet<u64>, Error> {
    let listed = repo.list_wal(Some(timeline)).await?;
    Ok(listed
        .iter()
        .filter_map(|l| match WalFileName::parse(&l.id.name, segment_size) {
            Ok(WalFileName::Segment { number, .. }) => Some(number),
            _ => None,
        })
        .collect())
}

/// Checks that every segment from `first` to `last` (or to the newest archived one when `last`
/// is `None`) is archived on `timeline`. Returns the last segment number of the chain.
pub async fn check_chain(
    repo: &Repository,
    timeline: Timeline,
    first: u64,
    last: Option<u64>,
    segment_size: SegmentSize,
) -> Result<u64, Error> {
    let segments = archived_segments(repo, timeline, segment_size).await?;
    chain_end(&segments, timeline, first, last, segment_size)
}

/// [`check_chain`] over segment numbers of `timeline` the caller already listed (e.g. from
/// [`Timelines::segment_numbers`]), so one listing serves several checks.
pub fn chain_end(
    segments: &BTreeSet<u64>,
    timeline: Timeline,
    first: u64,
    last: Option<u64>,
    segment_size: SegmentSize,
) -> Result<u64, Error> {
    let last = last.or_else(|| segments.last().copied()).unwrap_or(first).max(first);
    for number in first..=last {
        if !segments.contains(&number) {
            return Err(Error::Gap {
                missing: WalFileName::Segment { timeline, number }.to_name(segment_size),
                timeline,
            });
        }
    }
    Ok(last)
}
