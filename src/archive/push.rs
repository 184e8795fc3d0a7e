//! `wal-push`: archive one WAL file, and drain a `.ready` backlog beside it.
//!
//! A file is streamed through [`codec::seal_stream`] (read and keyed digest on one thread, 1 MiB
//! blocks compressed in parallel, age on another) straight into a staging object, fsync'd, and
//! only then published create-only
//! ([`crate::repo::Repo::publish`]): the call returns — and PostgreSQL gets its acknowledgement —
//! only once the object is durable. Backlog files are sealed in parallel but published strictly
//! in name order after the requested one, so the archive never shows a later segment without the
//! earlier ones. A backlog file archived ahead leaves a marker (`<pg_wal>/radd-archived/<name>`:
//! the file's identity and keyed digest) so that PostgreSQL's own call for it later checks the
//! stored object's header against the marker instead of reading and hashing the segment again.
//!
//! The segment size comes from the file itself (its length, checked against the long page
//! header) and is claimed in the repository before anything is stored: a segment of another
//! size than the repository's is refused (two clusters in one repository). Before that, the first
//! page header must match the file's name (position, timeline, magic), and every later page is
//! checked as the file streams ([`super::pages`]): a file whose pages hold other WAL than its
//! name says is never archived, and its staging object is never published. A push killed while
//! staging leaves `<pg_wal>/radd-archived/<name>.pushing` (its pid) beside the staging object it
//! could not remove; the next push of that name sees the marker and removes what the dead
//! writer left in the repository, so that only a crash costs a directory scan.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::pages::{self, CheckedReader};
use super::{Error, key_of, parse_name, segsize};
use crate::codec::{self, ObjectKind, SealKeys, SealOptions, Version};
use crate::crypto::Digest;
use crate::pg::{SegmentSize, WalFileName};
use crate::repo::{self, NewObject, ObjectKey, PutOutcome};
use crate::repository::{self, Repository};

/// Directory beside the WAL files holding markers of files archived ahead of PostgreSQL's call.
pub const MARKER_DIR: &str = "radd-archived";

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Newly stored.
    Stored,
    /// Already archived with identical content.
    AlreadyArchived,
}

/// How `wal-push` works (from `[archive]`).
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    /// WAL files sealed at the same time (at least 1).
    pub parallel: usize,
    /// Other `.ready` files one call may archive after the requested one (0: only that one).
    pub ahead: usize,
    /// zstd level.
    pub level: i32,
    /// Threads compressing the blocks of one file in parallel (0 counts as 1).
    pub compress_workers: u32,
    /// Read the file past the page cache ([`crate::dio`]): set for backlog files, which have
    /// waited and are often no longer cached; the file PostgreSQL just asked for is, and is
    /// read from the cache.
    pub direct_read: bool,
}

impl PushOptions {
    /// One file at a time, nothing ahead, one compressing thread.
    #[must_use]
    pub fn single(level: i32) -> Self {
        PushOptions { parallel: 1, ahead: 0, level, compress_workers: 1, direct_read: false }
    }
}

/// A WAL file digested and (unless already archived) sealed into a staging object, ready to be
/// published.
#[derive(Debug)]
pub struct Prepared {
    path: PathBuf,
    file_name: String,
    /// The parsed name, and the segment size its pages were checked with (`None`: no pages).
    wal: WalFileName,
    segment_size: Option<SegmentSize>,
    key: ObjectKey,
    digest: Digest,
    /// `None` when the archive already holds identical content.
    object: Option<NewObject>,
    /// Present while a staging object exists: says so on disk in case we are killed.
    _pushing: Option<Pushing>,
}

/// `<pg_wal>/radd-archived/<name>.pushing` while a staging object of `<name>` exists; removed
/// when the push ends either way, left behind only by a push that was killed.
#[derive(Debug)]
struct Pushing(PathBuf);

impl Drop for Pushing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) const PUSHING_SUFFIX: &str = ".pushing";

fn pushing_path(path: &Path, file_name: &str) -> Option<PathBuf> {
    marker_path(path, &format!("{file_name}{PUSHING_SUFFIX}"))
}

/// The pid in the `.pushing` marker of `file_name`, if another process that is still running
/// wrote it (a backlog drainer, or PostgreSQL's own call for a file the drainer reached first).
fn live_pusher(path: &Path, file_name: &str) -> Option<i32> {
    let text = std::fs::read_to_string(pushing_path(path, file_name)?).ok()?;
    text.trim().parse::<i32>().ok().filter(|&pid| is_other_pusher(pid))
}

/// Whether `pid` is another process than this one, still running, and a `wal-push`: a pid
/// reused since a crash by some other program is no pusher (its command line, when /proc
/// shows it, must be a `wal-push`).
fn is_other_pusher(pid: i32) -> bool {
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return false;
    }
    let alive =
        matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Ok(()) | Err(nix::errno::Errno::EPERM));
    let pushing = match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|&b| b == 0).any(|arg| arg == b"wal-push"),
        Err(_) => true,
    };
    alive && pushing
}

/// Longest wait for another process's push of the same file before pushing it anyway (two
/// pushes of one file are safe, only wasted work: the second finds the first's object).
const OTHER_PUSHER_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Waits while another live process pushes `file_name` (its `.pushing` marker), so that
/// PostgreSQL's call for a segment the backlog drainer is sealing acknowledges the drainer's
/// object instead of sealing it a second time.
async fn wait_for_other_pusher(path: &Path, file_name: &str) {
    let started = std::time::Instant::now();
    while let Some(pid) = live_pusher(path, file_name) {
        if started.elapsed() > OTHER_PUSHER_WAIT {
            tracing::warn!(
                segment = file_name,
                pid,
                "another radd has been pushing this file for 5 minutes; pushing it here too"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
}

/// When an earlier push of this file was killed (its `.pushing` marker names a pid that is not
/// ours and no longer runs), removes the staging objects dead writers left for `key`. Best
/// effort.
async fn clean_after_killed_push(repo: &Repository, path: &Path, file_name: &str, key: &ObjectKey) {
    let Some(marker) = pushing_path(path, file_name) else { return };
    let Ok(text) = std::fs::read_to_string(&marker) else { return };
    let pid = text.trim().parse::<i32>().ok();
    if pid.and_then(|pid| u32::try_from(pid).ok()) == Some(std::process::id()) || pid.is_some_and(is_other_pusher) {
        return;
    }
    let (repository, key) = (repo.clone(), key.clone());
    match tokio::task::spawn_blocking(move || repository.remove_abandoned_staging(&key)).await {
        Ok(Ok(removed)) => {
            tracing::info!(
                segment = file_name,
                removed,
                "an earlier push of this file was killed; removed its staging objects"
            );
            let _ = std::fs::remove_file(&marker);
        }
        Ok(Err(error)) => {
            tracing::warn!(segment = file_name, error = %error, "cannot remove the staging objects of a killed push; prune removes them after its grace period")
        }
        Err(error) => {
            tracing::warn!(segment = file_name, error = %error, "cannot remove the staging objects of a killed push")
        }
    }
}

/// Writes the `.pushing` marker of `file_name` (best effort: without it, a killed push's
/// staging object waits for prune).
fn start_pushing(path: &Path, file_name: &str) -> Option<Pushing> {
    let marker = pushing_path(path, file_name)?;
    let written = marker
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&marker, format!("{}\n", std::process::id())));
    match written {
        Ok(()) => Some(Pushing(marker)),
        Err(error) => {
            tracing::debug!(marker = %marker.display(), error = %error, "cannot mark a push in progress");
            None
        }
    }
}

/// Files whose length is the cluster's segment size: segments and `.partial` segments.
fn is_sized(file_name: &str) -> bool {
    WalFileName::is_segment_name(file_name)
        || file_name.strip_suffix(".partial").is_some_and(WalFileName::is_segment_name)
}

/// The segment size of the WAL file at `path` (`None` for history and `.backup` files), from
/// its length and the long page header at its start, which must also match the file's name.
fn file_segment_size(
    path: &Path,
    file_name: &str,
    file: &std::fs::File,
    len: u64,
) -> Result<Option<SegmentSize>, Error> {
    use std::os::unix::fs::FileExt;
    if !is_sized(file_name) {
        return Ok(None);
    }
    // Positioned read: the file is then streamed from its start.
    let mut start = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(SegmentSize::HEADER_LEN)];
    file.read_exact_at(&mut start, 0).map_err(|e| io_error("read", path, e))?;
    let size = SegmentSize::of_segment_file(&start, len)
        .map_err(|reason| Error::BadSegment { name: path.display().to_string(), reason })?;
    let segment = WalFileName::is_segment_name(file_name).then_some(size);
    pages::check_start(&path.display().to_string(), &parse_name(file_name, segment)?, size, &start)?;
    Ok(Some(size))
}

/// The segment size of the file at `path`, for [`push_with_backlog`] to claim before anything.
pub(super) fn segment_size_at(path: &Path) -> Result<Option<SegmentSize>, Error> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !is_sized(file_name) {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(|e| io_error("read", path, e))?;
    let len = file.metadata().map_err(|e| io_error("read", path, e))?.len();
    file_segment_size(path, file_name, &file, len)
}

/// The identity of a file as PostgreSQL left it: device, inode, size, mtime (ns).
fn identity(meta: &std::fs::Metadata) -> String {
    format!(
        "{} {} {} {}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
    )
}

fn marker_path(path: &Path, file_name: &str) -> Option<PathBuf> {
    path.parent().map(|dir| dir.join(MARKER_DIR).join(file_name))
}

/// The digest a marker records for this very file (same identity), if any.
fn marker_digest(path: &Path, file_name: &str, meta: &std::fs::Metadata) -> Option<Digest> {
    let text = std::fs::read_to_string(marker_path(path, file_name)?).ok()?;
    let (id, digest) = text.trim_end().rsplit_once(' ')?;
    (id == identity(meta)).then(|| digest.parse().ok()).flatten()
}

/// Records that `path` (with this identity and digest) is durably archived. Best effort: without
/// a marker, PostgreSQL's call for the file verifies it by reading it.
fn write_marker(path: &Path, file_name: &str, meta: &std::fs::Metadata, digest: Digest) {
    let Some(marker) = marker_path(path, file_name) else { return };
    let tmp = marker.with_extension("tmp");
    let written = marker
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, format!("{} {digest}\n", identity(meta))))
        .and_then(|()| std::fs::rename(&tmp, &marker));
    if let Err(error) = written {
        tracing::debug!(marker = %marker.display(), error = %error, "cannot record a segment archived ahead");
    }
}

/// Removes the marker of `file_name`, if any.
pub(super) fn remove_marker(path: &Path, file_name: &str) {
    if let Some(marker) = marker_path(path, file_name) {
        let _ = std::fs::remove_file(marker);
    }
}

pub(super) fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io { what, path: path.to_owned(), source }
}

/// Reads a WAL file and seals it into a staging object (synced, not yet visible); recognises an
/// already archived file from its marker (identity unchanged and the stored header's digest
/// equal to the recorded one) or by digesting it and comparing with the stored header, without
/// compressing or encrypting anything, and refuses a different file under the same name. A
/// segment's size (from the file) is claimed in the repository first: a segment of another size
/// than the repository's is refused before anything is stored.
pub async fn prepare(repo: &Repository, path: &Path, options: PushOptions) -> Result<Prepared, Error> {
    prepare_claimed(repo, path, options, None).await
}

/// [`prepare`] when the caller already claimed segment size `claimed` for this repository.
// Long on purpose: the push decision (name and segment size, compare with what is stored, else seal, stage and put) as one linear sequence of early returns.
pub(super) async fn prepare_claimed(
    repo: &Repository,
    path: &Path,
    options: PushOptions,
    claimed: Option<SegmentSize>,
) -> Result<Prepared, Error> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::BadName(format!("{} has no WAL file name", path.display())))?
        .to_owned();
    let file = std::fs::File::open(path).map_err(|e| io_error("read", path, e))?;
    let meta = file.metadata().map_err(|e| io_error("read", path, e))?;
    let len = meta.len();
    let segment_size = file_segment_size(path, &file_name, &file, len)?;
    let wal = parse_name(&file_name, segment_size.filter(|_| WalFileName::is_segment_name(&file_name)))?;
    if let Some(size) = segment_size.filter(|s| claimed != Some(*s)) {
        segsize::claim(repo, size, &format!("segment {file_name}")).await?;
    }
    let key = key_of(&wal, &file_name);
    let object = key.to_string();
    wait_for_other_pusher(path, &file_name).await;
    clean_after_killed_push(repo, path, &file_name, &key).await;
    match stored_header(repo, &key).await {
        Ok((version, existing)) => {
            let done = |digest| Prepared {
                path: path.to_owned(),
                file_name: file_name.clone(),
                wal: wal.clone(),
                segment_size,
                key: key.clone(),
                digest,
                object: None,
                _pushing: None,
            };
            if marker_digest(path, &file_name, &meta) == Some(existing) {
                return Ok(done(existing));
            }
            if digest_file(repo, path, &wal, segment_size, file, version).await? == existing {
                Ok(done(existing))
            } else {
                Err(Error::Mismatch { name: file_name })
            }
        }
        Err(Error::Repository(repository::Error::Repo(repo::Error::NotFound { .. }))) => {
            let pushing = start_pushing(path, &file_name);
            let repository = repo.clone();
            let seal = SealOptions { level: options.level, workers: options.compress_workers };
            let input = WalInput::open(path, file, options.direct_read)?;
            let (key2, input, shown) =
                (key.clone(), CheckedReader::new(input, &wal, segment_size), path.display().to_string());
            let sealed = tokio::task::spawn_blocking(move || -> Result<_, Error> {
                let mut staged = repository.new_object(&key2, usize::try_from(len / 2).unwrap_or(0))?;
                let keys = SealKeys { id_key: &repository.id_key, recipients: &repository.recipients };
                // A write that failed (a full disk) is the cause of whatever the sealing
                // pipeline reports: name it as the storage error it is.
                let digest = codec::seal_stream(ObjectKind::Wal, input, len, keys, seal, &mut staged, &object)
                    .map_err(|e| match staged.write_error() {
                        Some(write) => Error::from(repository::Error::from(write)),
                        None => pages::from_read_error(e, &shown),
                    })?;
                staged.sync().map_err(repository::Error::from)?;
                Ok((staged, digest))
            })
            .await
            .map_err(|e| io_error("read", path, std::io::Error::other(e)))?;
            let (staged, digest) = sealed?;
            crate::faults::crash_point("wal-push:staged");
            Ok(Prepared {
                path: path.to_owned(),
                file_name,
                wal,
                segment_size,
                key,
                digest,
                object: Some(staged),
                _pushing: pushing,
            })
        }
        Err(e) => Err(e),
    }
}

/// The content of a WAL file as it is sealed: read past the page cache or through it.
enum WalInput {
    Direct(crate::dio::DirectReader),
    Cached(std::fs::File),
}

impl WalInput {
    /// Reads `path` (open as `file`) directly when `direct` and its filesystem allows it.
    fn open(path: &Path, file: std::fs::File, direct: bool) -> Result<Self, Error> {
        if !direct {
            return Ok(WalInput::Cached(file));
        }
        match crate::dio::open(path).map_err(|e| io_error("read", path, e))? {
            Some(direct) => Ok(WalInput::Direct(crate::dio::DirectReader::new(direct))),
            None => Ok(WalInput::Cached(file)),
        }
    }
}

impl std::io::Read for WalInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            WalInput::Direct(reader) => reader.read(buf),
            WalInput::Cached(file) => file.read(buf),
        }
    }
}

/// The format version and keyed digest in the header of the stored object `key` (one small
/// ranged read).
async fn stored_header(repo: &Repository, key: &ObjectKey) -> Result<(Version, Digest), Error> {
    let name = key.to_string();
    let header = repo.get_stored_prefix(key, codec::HEADER_LEN as u64).await?;
    Ok(codec::header(&header, &name).map_err(repository::Error::from)?)
}

/// The keyed digest of `version` the WAL file `path` (already open as `file`) would have as the
/// object of its name (`wal`, read with `size`), its pages checked against that name on the way.
async fn digest_file(
    repo: &Repository,
    path: &Path,
    wal: &WalFileName,
    size: Option<SegmentSize>,
    file: std::fs::File,
    version: Version,
) -> Result<Digest, Error> {
    let len = file.metadata().map_err(|e| io_error("read", path, e))?.len();
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let (id_key, object, shown) = (repo.id_key.clone(), key_of(wal, file_name).to_string(), path.display().to_string());
    let input = CheckedReader::new(file, wal, size);
    tokio::task::spawn_blocking(move || {
        codec::digest_stream(ObjectKind::Wal, version, input, len, &id_key, &object)
            .map_err(|e| pages::from_read_error(e, &shown))
    })
    .await
    .map_err(|e| io_error("read", path, std::io::Error::other(e)))?
}

/// Publishes a prepared WAL file create-only; returns once it is durable. A concurrent push of
/// the same name is accepted only if its content is identical.
pub async fn commit(repo: &Repository, prepared: Prepared) -> Result<PushOutcome, Error> {
    let Some(object) = prepared.object else {
        return Ok(PushOutcome::AlreadyArchived);
    };
    if repo.publish(object).await? == PutOutcome::Created {
        return Ok(PushOutcome::Stored);
    }
    // Pushed concurrently by another process, perhaps an older radd (another format version).
    let (version, existing) = stored_header(repo, &prepared.key).await?;
    let ours = if version == Version::V3 {
        prepared.digest
    } else {
        let file = std::fs::File::open(&prepared.path).map_err(|e| io_error("read", &prepared.path, e))?;
        let (wal, size) = (&prepared.wal, prepared.segment_size);
        digest_file(repo, &prepared.path, wal, size, file, version).await?
    };
    if ours == existing { Ok(PushOutcome::AlreadyArchived) } else { Err(Error::Mismatch { name: prepared.file_name }) }
}

/// [`commit`] for a file archived ahead of PostgreSQL's call: on success writes its marker
/// before its `.pushing` marker goes, so that PostgreSQL's call, waiting for this push, finds
/// the marker at once instead of reading and hashing the file.
pub(super) async fn commit_ahead(repo: &Repository, mut prepared: Prepared) -> Result<PushOutcome, Error> {
    let pushing = prepared._pushing.take();
    let (path, file_name, digest) = (prepared.path.clone(), prepared.file_name.clone(), prepared.digest);
    let outcome = commit(repo, prepared).await?;
    if let Ok(meta) = std::fs::metadata(&path) {
        write_marker(&path, &file_name, &meta, digest);
    }
    drop(pushing);
    Ok(outcome)
}

/// Archives one WAL file: compress, encrypt, store create-only. Returns once it is durable.
pub async fn push(repo: &Repository, path: &Path, options: PushOptions) -> Result<PushOutcome, Error> {
    commit(repo, prepare(repo, path, options).await?).await
}
