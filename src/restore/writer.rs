//! Writing manifest entries into a directory. Packs are opened without recomputing their keyed
//! digest: every byte written is checked against its file's SHA-256 from the authenticated
//! manifest instead, so the content is hashed once, not twice.
//!
//! Three stages run at once: packs are fetched, decrypted and decompressed ahead of the writer
//! (two at a time, in the order the manifest first needs them); the writer writes the chunks
//! (all-zero blocks become holes: sparse files); a verifier thread hashes the same bytes in
//! the same order (no copy: the decrypted packs are shared) and compares every file with its
//! manifest SHA-256. A small cache serves chunks that later files share. A mismatch fails the
//! restore before anything leaves the staging directory. Files and directories are fsync'd
//! once, at the end, in parallel, so the kernel writes back meanwhile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::{Error, io_err};
use crate::codec::ObjectKind;
use crate::crypto::Sha256Stream;
use crate::repo::ObjectKey;
use crate::repository::Repository;
use crate::snapshot::{BlobIndex, BufferPool, EntryKind, Manifest};

/// Decrypted packs kept for reuse; bounds restore memory to a few packs plus those in flight.
const PACK_CACHE: usize = 2;
/// Packs fetched and decrypted ahead of the writer.
const PACKS_AHEAD: usize = 2;
/// Chunks queued for the verifier.
const VERIFY_QUEUE: usize = 256;
/// Distinct packs the chunks queued for the verifier may come from (each queued chunk holds its
/// pack alive). Counting entries alone let a slow verifier pin dozens of packs; counting runs
/// of one pack stalled incrementals, whose files alternate between parent and new packs.
const VERIFY_PINNED_PACKS: usize = 2;

/// Work for the verifier thread, in write order.
enum Verify {
    /// Bytes of the current file.
    Data(Arc<PackData>, Range<usize>),
    /// The current file is complete: compare with its manifest SHA-256.
    End { name: String, expected: crate::crypto::Digest },
}

/// How many `Data` items the verifier has hashed; `u64::MAX` once it stopped.
#[derive(Default)]
struct Progress {
    done: std::sync::Mutex<u64>,
    changed: std::sync::Condvar,
}

impl Progress {
    fn set(&self, update: impl FnOnce(&mut u64)) {
        if let Ok(mut done) = self.done.lock() {
            update(&mut done);
        }
        self.changed.notify_all();
    }
}

/// Marks the verifier stopped however its thread ends, so a waiting writer wakes up.
struct StopGuard(Arc<Progress>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.set(|done| *done = u64::MAX);
    }
}

/// The verifier: hashes each file's bytes on its own thread and checks its SHA-256.
struct Verifier {
    tx: SyncSender<Verify>,
    progress: Arc<Progress>,
    /// `Data` items queued so far.
    sent: u64,
    /// Packs with queued items: (address, compared and never dereferenced; number of the last
    /// item from it).
    pinned: VecDeque<(usize, u64)>,
    thread: std::thread::JoinHandle<Result<(), Error>>,
}

impl Verifier {
    fn start() -> Self {
        let (tx, rx) = sync_channel::<Verify>(VERIFY_QUEUE);
        let progress = Arc::new(Progress::default());
        let guard = StopGuard(Arc::clone(&progress));
        let thread = std::thread::spawn(move || {
            let mut sha = Sha256Stream::default();
            for work in rx {
                match work {
                    Verify::Data(pack, range) => {
                        sha.update(&pack[range]);
                        drop(pack);
                        guard.0.set(|done| *done += 1);
                    }
                    Verify::End { name, expected } => {
                        let actual = std::mem::take(&mut sha).finish();
                        if actual != expected {
                            return Err(Error::Checksum { path: name, expected: expected.to_string(), actual: actual.to_string() });
                        }
                    }
                }
            }
            Ok(())
        });
        Self { tx, progress, sent: 0, pinned: VecDeque::new(), thread }
    }

    /// Queues bytes of the current file; from a pack not yet queued, first waits until the
    /// verifier holds fewer than [`VERIFY_PINNED_PACKS`] packs, so memory stays bounded by packs.
    fn data(&mut self, pack: Arc<PackData>, range: Range<usize>) -> Result<(), Error> {
        let address = Arc::as_ptr(&pack) as usize;
        self.sent += 1;
        if let Some(pinned) = self.pinned.iter_mut().find(|(a, _)| *a == address) {
            pinned.1 = self.sent;
        } else {
            let mut done = self.progress.done.lock().map_err(|_| Self::stopped())?;
            loop {
                if *done == u64::MAX {
                    return Err(Self::stopped());
                }
                let hashed = *done;
                self.pinned.retain(|&(_, last)| last > hashed);
                if self.pinned.len() < VERIFY_PINNED_PACKS {
                    break;
                }
                done = self.progress.changed.wait(done).map_err(|_| Self::stopped())?;
            }
            drop(done);
            self.pinned.push_back((address, self.sent));
        }
        self.send(Verify::Data(pack, range))
    }

    fn send(&self, work: Verify) -> Result<(), Error> {
        // A closed channel means the verifier stopped at a mismatch; `finish` reports it.
        self.tx.send(work).map_err(|_| Self::stopped())
    }

    fn stopped() -> Error {
        Error::Io { what: "restore: verifier stopped", path: PathBuf::new(), source: std::io::Error::other("checksum mismatch") }
    }

    /// Waits for every queued file; the first mismatch, if any.
    fn finish(self) -> Result<(), Error> {
        drop(self.tx);
        self.thread.join().unwrap_or_else(|_| Err(Error::Io { what: "restore: verifier thread panicked", path: PathBuf::new(), source: std::io::Error::other("panic") }))
    }
}

type Pack = (u32, Arc<PackData>);

/// A decrypted pack. Its buffer goes back to the pool when the last chunk using it is written
/// and verified: restore reuses a handful of pack buffers instead of allocating one per pack
/// (freed buffers linger in the allocator's per-thread arenas and inflate the process).
struct PackData {
    data: Vec<u8>,
    pool: BufferPool,
}

impl std::ops::Deref for PackData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for PackData {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.data));
    }
}

/// Decrypted packs: the prefetched stream (in first-use order) plus a small cache.
struct Packs<'a> {
    repo: &'a Repository,
    pool: BufferPool,
    index: &'a BlobIndex,
    ahead: mpsc::Receiver<Result<Pack, Error>>,
    received: HashSet<u32>,
    cache: VecDeque<Pack>,
    /// Position, in write order, of the last chunk each pack serves: past it the pack is
    /// dropped from the cache at once, so the cache holds only packs still to be used.
    last_use: HashMap<u32, u64>,
    /// Chunks served so far.
    served: u64,
}

impl Packs<'_> {
    async fn get(&mut self, pack: u32) -> Result<Arc<PackData>, Error> {
        let position = self.served;
        self.served += 1;
        // Least recently used goes first among packs still needed: an incremental's few packs
        // of changed pages are needed between every pack of its parent's.
        if let Some(slot) = self.cache.iter().position(|(p, _)| *p == pack)
            && let Some(hit) = self.cache.remove(slot)
        {
            let data = Arc::clone(&hit.1);
            self.cache.push_back(hit);
            return Ok(data);
        }
        // The first use of a pack is the head of the prefetch stream (it is in first-use
        // order); a pack evicted from the cache and needed again is fetched directly.
        let data = if self.received.insert(pack) {
            match self.ahead.recv().await {
                Some(Ok((number, data))) if number == pack => data,
                Some(Err(e)) => return Err(e),
                _ => return Err(Error::Io {
                    what: "restore: pack prefetch out of order for",
                    path: self.index.packs[pack as usize].clone().into(),
                    source: std::io::Error::other("prefetch stream ended or diverged"),
                }),
            }
        } else {
            let key = ObjectKey::Pack(self.index.packs[pack as usize].clone());
            let data = self.repo.get_open_unhashed_into(ObjectKind::Pack, &key, self.pool.get()).await?;
            Arc::new(PackData { data, pool: self.pool.clone() })
        };
        let last_use = &self.last_use;
        let live = |p: u32| last_use.get(&p).is_some_and(|&last| last > position);
        self.cache.retain(|(p, _)| live(*p));
        if self.cache.len() >= PACK_CACHE {
            self.cache.pop_front();
        }
        if live(pack) {
            self.cache.push_back((pack, Arc::clone(&data)));
        }
        Ok(data)
    }
}


/// The content an entry is restored with: its own, or, for a hard link whose first name is
/// not restored, the first name's.
fn content<'m>(manifest: &'m Manifest, wanted: &[bool], index: usize) -> Option<(&'m crate::crypto::Digest, &'m [crate::crypto::Digest])> {
    match &manifest.entries[index].kind {
        EntryKind::File { sha256, chunks, .. } => Some((sha256, chunks)),
        EntryKind::Hardlink { entry } if !wanted.get(*entry).copied().unwrap_or(false) => match &manifest.entries.get(*entry)?.kind {
            EntryKind::File { sha256, chunks, .. } => Some((sha256, chunks)),
            _ => None,
        },
        _ => None,
    }
}

/// Packs in the order the restore first needs them, and the position (counting chunks in write
/// order) at which each is needed for the last time.
fn first_use_order(index: &BlobIndex, manifest: &Manifest, wanted: &[bool]) -> (Vec<u32>, HashMap<u32, u64>) {
    let mut last_use = HashMap::new();
    let mut order = Vec::new();
    let mut position = 0u64;
    for i in (0..manifest.entries.len()).filter(|&i| wanted[i]) {
        if let Some((_, chunks)) = content(manifest, wanted, i) {
            for chunk in chunks {
                if let Some(location) = index.get(chunk)
                    && last_use.insert(location.pack, position).is_none()
                {
                    order.push(location.pack);
                }
                position += 1;
            }
        }
    }
    (order, last_use)
}

/// Writes every entry under `root`; returns (files, bytes).
pub async fn write_entries(repo: &Repository, index: &BlobIndex, manifest: &Manifest, root: &Path, include: Option<&globset::GlobSet>) -> Result<(u64, u64), Error> {
    let wanted = wanted(manifest, include);
    let (order, last_use) = first_use_order(index, manifest, &wanted);
    let (tx, rx) = mpsc::channel(1);
    let pool = BufferPool::new(0);
    let prefetch = {
        let repo = repo.clone();
        let pool = pool.clone();
        let packs: Vec<(u32, String)> = order.iter().map(|&p| (p, index.packs[p as usize].clone())).collect();
        tokio::spawn(async move {
            let mut stream = futures::stream::iter(packs)
                .map(|(number, id)| {
                    let (repo, pool) = (repo.clone(), pool.clone());
                    async move {
                        let data = repo.get_open_unhashed_into(ObjectKind::Pack, &ObjectKey::Pack(id), pool.get()).await?;
                        Ok::<_, Error>((number, Arc::new(PackData { data, pool })))
                    }
                })
                .buffered(PACKS_AHEAD);
            while let Some(pack) = stream.next().await {
                let failed = pack.is_err();
                if tx.send(pack).await.is_err() || failed {
                    return;
                }
            }
        })
    };
    let mut packs = Packs { repo, pool, index, ahead: rx, received: HashSet::new(), cache: VecDeque::new(), last_use, served: 0 };
    let mut verifier = Verifier::start();
    let written = write_all(&mut packs, &mut verifier, manifest, root, &wanted).await;
    prefetch.abort();
    // A checksum mismatch is the cause of any write failure that follows it.
    verifier.finish()?;
    written
}

/// Which entries to write: all, or those matching an `--include` glob, everything below a
/// matching directory, and the directories above them.
fn wanted(manifest: &Manifest, include: Option<&globset::GlobSet>) -> Vec<bool> {
    let Some(globs) = include else {
        return vec![true; manifest.entries.len()];
    };
    let matched: Vec<bool> = manifest
        .entries
        .iter()
        .map(|e| {
            let path = e.os_path();
            path.ancestors().any(|a| !a.as_os_str().is_empty() && globs.is_match(a))
        })
        .collect();
    let needed_dirs: HashSet<PathBuf> = manifest
        .entries
        .iter()
        .zip(&matched)
        .filter(|(_, m)| **m)
        .flat_map(|(e, _)| e.os_path().ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>())
        .collect();
    manifest.entries.iter().zip(matched).map(|(e, m)| m || needed_dirs.contains(&e.os_path())).collect()
}

async fn write_all(packs: &mut Packs<'_>, verifier: &mut Verifier, manifest: &Manifest, root: &Path, wanted: &[bool]) -> Result<(u64, u64), Error> {
    let as_root = nix::unistd::geteuid().is_root();
    let mut written: Vec<Option<PathBuf>> = vec![None; manifest.entries.len()];
    let mut dirs = Vec::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    for (index, entry) in manifest.entries.iter().enumerate() {
        if !wanted[index] {
            continue;
        }
        let path = root.join(entry.os_path());
        match &entry.kind {
            EntryKind::Dir if entry.path.is_empty() => {}
            EntryKind::Dir => std::fs::create_dir(&path).map_err(io_err("create directory", &path))?,
            EntryKind::Symlink { target, raw_target } => {
                let target = crate::snapshot::decode_os(target, raw_target.as_ref());
                std::os::unix::fs::symlink(target, &path).map_err(io_err("create symlink", &path))?;
            }
            EntryKind::Hardlink { entry: first } => {
                if let Some(original) = written.get(*first).cloned().flatten() {
                    std::fs::hard_link(&original, &path).map_err(io_err("create hard link", &path))?;
                    written[index] = Some(path);
                    continue;
                }
                // The first name was not restored (--include): the content is restored here.
            }
            EntryKind::File { .. } => {}
        }
        if let Some((sha256, chunks)) = content(manifest, wanted, index) {
            write_file(packs, verifier, (&path, &entry.path), entry.size, chunks).await?;
            verifier.send(Verify::End { name: entry.path.clone(), expected: *sha256 })?;
            files += 1;
            bytes += entry.size;
        }
        if !matches!(entry.kind, EntryKind::Symlink { .. }) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode)).map_err(io_err("set mode of", &path))?;
        }
        if as_root {
            std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid)).map_err(io_err("set owner of", &path))?;
        }
        if matches!(entry.kind, EntryKind::Dir) {
            dirs.push((path.clone(), entry.mtime, entry.mtime_nsec));
        } else {
            set_mtime(&path, entry.mtime, entry.mtime_nsec)?;
        }
        written[index] = Some(path);
    }
    // Directory times last, deepest first: writing into a directory changes its mtime.
    for (path, secs, nsec) in dirs.iter().rev() {
        set_mtime(path, *secs, *nsec)?;
    }
    Ok((files, bytes))
}

/// Sets the modification time without following symlinks.
fn set_mtime(path: &Path, secs: i64, nsec: u32) -> Result<(), Error> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let mtime = TimeSpec::new(secs, i64::from(nsec));
    utimensat(nix::fcntl::AT_FDCWD, path, &TimeSpec::UTIME_OMIT, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::Io { what: "set mtime of", path: path.to_owned(), source: e.into() })
}

/// Writes one file from its chunks (at `path`; `name` is its path in the manifest, for errors),
/// holes for all-zero blocks, handing every chunk to the verifier.
async fn write_file(packs: &mut Packs<'_>, verifier: &mut Verifier, (path, name): (&Path, &str), size: u64, chunks: &[crate::crypto::Digest]) -> Result<(), Error> {
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io_err("create", path))?;
    let mut run = Run { file, path, pending: None, position: 0, flushed: 0 };
    let mut hole = false;
    for chunk in chunks {
        let missing = || Error::MissingChunk { chunk: chunk.to_string(), path: name.to_owned() };
        let location = packs.index.get(chunk).ok_or_else(missing)?;
        let pack = packs.get(location.pack).await.map_err(|e| Error::File { path: name.to_owned(), source: Box::new(e) })?;
        let range = location.offset as usize..location.offset as usize + location.length as usize;
        let data = pack.get(range.clone()).ok_or_else(missing)?;
        hole = data.iter().all(|&b| b == 0);
        if hole {
            run.flush(verifier)?;
            let length = data.len() as u64;
            verifier.data(pack, range)?;
            run.file.seek(SeekFrom::Current(i64::try_from(length).unwrap_or(i64::MAX))).map_err(io_err("seek in", path))?;
            run.position += length;
        } else {
            run.push(pack, range, verifier)?;
        }
    }
    run.flush(verifier)?;
    if hole {
        run.file.set_len(size).map_err(io_err("extend", path))?;
    }
    start_writeback(&run.file, run.flushed, run.position - run.flushed);
    Ok(())
}

/// Consecutive chunks that lie back to back in one pack (as a file's blocks usually do) are
/// written with one call and handed to the verifier as one range: an 8 KiB-block file costs a
/// few large writes, not one system call per page.
struct Run<'p> {
    file: std::fs::File,
    path: &'p Path,
    pending: Option<(Arc<PackData>, Range<usize>)>,
    /// Bytes of the file written or skipped so far.
    position: u64,
    /// Bytes already handed to writeback.
    flushed: u64,
}

impl Run<'_> {
    fn push(&mut self, pack: Arc<PackData>, range: Range<usize>, verifier: &mut Verifier) -> Result<(), Error> {
        if let Some((current, pending)) = &mut self.pending
            && Arc::ptr_eq(current, &pack)
            && pending.end == range.start
            && pending.len() < RUN_BYTES
        {
            pending.end = range.end;
            return Ok(());
        }
        self.flush(verifier)?;
        self.pending = Some((pack, range));
        Ok(())
    }

    fn flush(&mut self, verifier: &mut Verifier) -> Result<(), Error> {
        let Some((pack, range)) = self.pending.take() else { return Ok(()) };
        self.file.write_all(&pack[range.clone()]).map_err(io_err("write", self.path))?;
        self.position += range.len() as u64;
        verifier.data(pack, range)?;
        if self.position - self.flushed >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.flushed, self.position - self.flushed);
            self.flushed = self.position;
        }
        Ok(())
    }
}

/// Most bytes written with one call.
const RUN_BYTES: usize = 1 << 20;

/// Bytes written to a file between requests to start writing them back.
const WRITEBACK_EVERY: u64 = 16 << 20;

/// Asks the kernel to start writing a range back now (`POSIX_FADV_DONTNEED` queues dirty pages
/// for writeback without waiting), so the disk works while later files are decrypted and the
/// final fsync finds little left to write. Only a hint: failures are ignored.
fn start_writeback(file: &std::fs::File, offset: u64, length: u64) {
    if length == 0 {
        return;
    }
    let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else { return };
    let _ = nix::fcntl::posix_fadvise(file, offset, length, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

/// fsyncs one directory, making the names in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// fsyncs every file and directory under `root` (files first), spread over a few threads.
pub fn sync_tree(root: &Path) -> Result<(), Error> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        let dir = dirs[i].clone();
        for entry in std::fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let kind = entry.file_type().map_err(io_err("read", &dir))?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
        i += 1;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let sync_all = |paths: &[PathBuf], what: &'static str| -> Result<(), Error> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = paths
                .chunks(paths.len().div_ceil(threads).max(1))
                .map(|part| {
                    scope.spawn(move || {
                        part.iter().try_for_each(|p| std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(io_err(what, p)))
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(Error::Io { what, path: root.to_owned(), source: std::io::Error::other("fsync thread panicked") })))
        })
    };
    sync_all(&files, "fsync")?;
    sync_all(&dirs, "fsync directory")
}
