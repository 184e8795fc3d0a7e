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

use crate::codec::{self, ObjectKind};
use crate::crypto::Digest;
use crate::error::ErrorKind;
use crate::pg::{SEGMENT_SIZE_DEFAULT, Timeline, WalFileName};
use crate::repo::{self, ObjectKey, PutOutcome};
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
    #[error("WAL file {name} is already archived with a different checksum; refusing to overwrite it (two clusters archiving into one repository?)")]
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
    #[error("WAL gap on timeline {timeline}: segment {missing} is missing from the archive although WAL after it is needed; recovering past it would silently lose data")]
    Gap {
        /// The first missing segment.
        missing: String,
        /// Its timeline.
        timeline: Timeline,
    },
    /// Repository-level failure (storage, decryption, integrity).
    #[error(transparent)]
    Repository(#[from] repository::Error),
}

impl Error {
    /// Category for exit codes; gaps are integrity failures.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadName(_) => ErrorKind::Config,
            Error::Io { .. } => ErrorKind::Io,
            Error::Mismatch { .. } => ErrorKind::Conflict,
            Error::NotInArchive { .. } => ErrorKind::NotFound,
            Error::Gap { .. } => ErrorKind::Integrity,
            Error::Repository(e) => e.kind(),
        }
    }
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Newly stored.
    Stored,
    /// Already archived with identical content.
    AlreadyArchived,
}

/// The repository key of a WAL file: grouped by timeline.
#[must_use]
pub fn wal_key(name: &WalFileName, segment_size: u64) -> ObjectKey {
    ObjectKey::Wal {
        dir: name.timeline().to_string(),
        name: name.to_name(segment_size),
    }
}

fn parse_name(name: &str, segment_size: u64) -> Result<WalFileName, Error> {
    WalFileName::parse(name, segment_size).map_err(Error::BadName)
}

/// A WAL file read, digested and (unless already archived) sealed, ready to be stored.
pub struct Prepared {
    file_name: String,
    key: ObjectKey,
    digest: crate::crypto::Digest,
    /// `None` when the archive already holds identical content.
    sealed: Option<Vec<u8>>,
}

/// Reads a WAL file and seals it; recognises an already archived file (same keyed digest) from
/// one small ranged read without compressing or encrypting anything, and refuses a different
/// file under the same name.
pub async fn prepare(repo: &Repository, path: &Path) -> Result<Prepared, Error> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::BadName(format!("{} has no WAL file name", path.display())))?
        .to_owned();
    let data = tokio::fs::read(path).await.map_err(|source| Error::Io { what: "read", path: path.to_owned(), source })?;
    let segment_size = segment_size_of(&file_name, data.len() as u64);
    let key = wal_key(&parse_name(&file_name, segment_size)?, segment_size);
    let (digest, data) = {
        let id_key = repo.id_key.clone();
        tokio::task::spawn_blocking(move || (codec::content_digest(&id_key, ObjectKind::Wal, &data), data))
            .await
            .map_err(|e| Error::BadName(format!("digest task failed: {e}")))?
    };
    match repo.object_digest(&key).await {
        Ok(existing) if existing == digest => return Ok(Prepared { file_name, key, digest, sealed: None }),
        Ok(_) => return Err(Error::Mismatch { name: file_name }),
        Err(repository::Error::Repo(repo::Error::NotFound { .. })) => {}
        Err(e) => return Err(e.into()),
    }
    let sealed = repo.seal_known(ObjectKind::Wal, data, digest, key.to_string()).await?;
    Ok(Prepared { file_name, key, digest, sealed: Some(sealed) })
}

/// Stores a prepared WAL file create-only; returns once it is durable.
pub async fn commit(repo: &Repository, prepared: Prepared) -> Result<PushOutcome, Error> {
    let Some(sealed) = prepared.sealed else {
        return Ok(PushOutcome::AlreadyArchived);
    };
    match repo.store.put_new(&prepared.key, sealed.into()).await.map_err(repository::Error::from)? {
        PutOutcome::Created => Ok(PushOutcome::Stored),
        PutOutcome::AlreadyExists if repo.object_digest(&prepared.key).await? == prepared.digest => Ok(PushOutcome::AlreadyArchived),
        PutOutcome::AlreadyExists => Err(Error::Mismatch { name: prepared.file_name }),
    }
}

/// Archives one WAL file: compress, encrypt, store create-only. Returns once it is durable.
pub async fn push(repo: &Repository, path: &Path) -> Result<PushOutcome, Error> {
    commit(repo, prepare(repo, path).await?).await
}

/// Archives `path` and, so that a backlog drains fast, up to `parallel - 1` other WAL files
/// waiting in `archive_status/*.ready` beside it (oldest first). Files are read and sealed in
/// parallel but stored strictly in name order, the requested one first, so the archive never
/// shows a later segment before an earlier one (a reader would take that for a gap). Only the
/// requested file decides success: PostgreSQL acknowledges the others itself when it asks for
/// them, which is then a cheap "already archived" check. Returns how many extras were stored.
pub async fn push_with_backlog(repo: &Repository, path: &Path, parallel: usize) -> Result<(PushOutcome, usize), Error> {
    let mut files = vec![path.to_owned()];
    files.extend(not_yet_archived(repo, ready_files(path, 4 * parallel), parallel.saturating_sub(1)).await);
    let mut prepared = futures::stream::iter(files).map(|p| async move { (prepare(repo, &p).await, p) }).buffered(parallel.max(1));
    let own = match prepared.next().await {
        Some((result, _)) => commit(repo, result?).await?,
        None => return Err(Error::BadName(format!("{} has no WAL file name", path.display()))),
    };
    let mut stored = 0;
    while let Some((result, p)) = prepared.next().await {
        match async { commit(repo, result?).await }.await {
            Ok(PushOutcome::Stored) => stored += 1,
            Ok(PushOutcome::AlreadyArchived) => {}
            Err(error) => {
                // Stop here: storing later files would leave a hole before them.
                tracing::warn!(path = %p.display(), error = %error, "could not archive a backlog segment ahead of time; PostgreSQL will retry it");
                break;
            }
        }
    }
    Ok((own, stored))
}

/// The first `limit` of `candidates` (in order) that the archive does not hold yet, stopping
/// at the first one it cannot tell: segments an earlier call already archived ahead are
/// skipped, so each call moves the backlog forward by `parallel` segments.
async fn not_yet_archived(repo: &Repository, candidates: Vec<PathBuf>, limit: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in candidates {
        if out.len() >= limit {
            break;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { break };
        let Ok(wal) = parse_name(name, SEGMENT_SIZE_DEFAULT) else { break };
        match repo.store.exists(&wal_key(&wal, SEGMENT_SIZE_DEFAULT)).await {
            Ok(true) => {}
            Ok(false) => out.push(path),
            Err(_) => break,
        }
    }
    out
}

/// Up to `limit` other segments PostgreSQL has marked ready, oldest name first.
fn ready_files(path: &Path, limit: usize) -> Vec<PathBuf> {
    let (Some(dir), Some(own)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".ready")).map(str::to_owned))
        .filter(|n| n != own && n.len() == 24)
        .collect();
    names.sort();
    names.into_iter().take(limit).map(|n| dir.join(n)).collect()
}

/// Segment files are named by their size; anything else uses the default for parsing.
fn segment_size_of(name: &str, len: u64) -> u64 {
    let plausible = len.is_power_of_two() && (1 << 20..=1 << 30).contains(&len);
    if name.len() == 24 && plausible { len } else { SEGMENT_SIZE_DEFAULT }
}

/// Fetches one WAL file into `dest` (written to a temporary name, then renamed).
pub async fn fetch(repo: &Repository, name: &str, dest: &Path) -> Result<Digest, Error> {
    let wal = parse_name(name, SEGMENT_SIZE_DEFAULT)?;
    let key = wal_key(&wal, SEGMENT_SIZE_DEFAULT);
    let plaintext = match repo.get_open(ObjectKind::Wal, &key).await {
        Ok(p) => p,
        Err(repository::Error::Repo(repo::Error::NotFound { .. })) => {
            return Err(missing_error(repo, &wal, name).await);
        }
        Err(e) => return Err(e.into()),
    };
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
        Error::Io {
            what: "write",
            path: dest.to_owned(),
            source,
        }
    })?;
    Ok(digest)
}

/// Fetches `name` like [`fetch`], serving it from the local spool when an earlier call
/// prefetched it, and prefetching the next `prefetch` segments of its timeline into the spool
/// (`<pg_wal>/radd-spool`, two at a time) so that recovery does not wait on storage for each one.
/// Prefetched segments are decrypted and verified before they enter the spool. The spool is
/// emptied of other timelines on a timeline switch and entirely at the end of the archive.
pub async fn fetch_with_prefetch(repo: &Repository, name: &str, dest: &Path, prefetch: u64) -> Result<(), Error> {
    let wal = parse_name(name, SEGMENT_SIZE_DEFAULT)?;
    let WalFileName::Segment { timeline, number } = wal else {
        return fetch(repo, name, dest).await.map(|_| ());
    };
    let spool = dest.parent().unwrap_or(Path::new(".")).join("radd-spool");
    clean_spool(&spool, |n| !n.starts_with(&timeline.to_string()));
    let spooled = spool.join(name);
    if std::fs::rename(&spooled, dest).is_ok() {
        tracing::debug!(name, "served from the prefetch spool");
        return Ok(());
    }
    if prefetch == 0 {
        return fetch(repo, name, dest).await.map(|_| ());
    }
    if let Err(source) = std::fs::create_dir_all(&spool) {
        tracing::warn!(spool = %spool.display(), error = %source, "cannot create the prefetch spool; fetching without prefetch");
        return fetch(repo, name, dest).await.map(|_| ());
    }
    let ahead = (number + 1..=number + prefetch)
        .map(|n| WalFileName::Segment { timeline, number: n }.to_name(SEGMENT_SIZE_DEFAULT))
        .filter(|n| !spool.join(n).exists())
        .collect::<Vec<_>>();
    let prefetched = futures::stream::iter(ahead)
        .map(|n| {
            let target = spool.join(&n);
            async move {
                if let Err(error) = fetch(repo, &n, &target).await {
                    tracing::debug!(name = %n, error = %error, "not prefetched");
                }
            }
        })
        .buffer_unordered(2)
        .collect::<Vec<()>>();
    let (own, _) = tokio::join!(fetch(repo, name, dest), prefetched);
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
fn clean_spool(spool: &Path, remove: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(spool) else { return };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_str().is_some_and(&remove) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A missing segment is the end of the archive only if nothing later exists on its timeline.
async fn missing_error(repo: &Repository, wal: &WalFileName, name: &str) -> Error {
    let WalFileName::Segment { timeline, number } = wal else {
        return Error::NotInArchive { name: name.to_owned() };
    };
    match archived_segments(repo, *timeline, SEGMENT_SIZE_DEFAULT).await {
        Ok(segments) if segments.range(number + 1..).next().is_some() => Error::Gap {
            missing: name.to_owned(),
            timeline: *timeline,
        },
        Ok(_) => Error::NotInArchive { name: name.to_owned() },
        Err(e) => e,
    }
}

/// Segment numbers archived on `timeline`.
pub async fn archived_segments(
    repo: &Repository,
    timeline: Timeline,
    segment_size: u64,
) -> Result<BTreeSet<u64>, Error> {
    let dir = format!("{}/{timeline}/", ObjectKey::WAL_DIR);
    let listed = repo
        .store
        .list(&dir)
        .await
        .map_err(repository::Error::from)?;
    Ok(listed
        .iter()
        .filter_map(|l| l.key.rsplit('/').next())
        .filter_map(|n| match WalFileName::parse(n, segment_size) {
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
    segment_size: u64,
) -> Result<u64, Error> {
    let segments = archived_segments(repo, timeline, segment_size).await?;
    let last = last
        .or_else(|| segments.last().copied())
        .unwrap_or(first)
        .max(first);
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
