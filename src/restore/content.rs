//! The content of the restored files: packs read once each (see [`PackPlan`]), every blob
//! written where the snapshot has it, and every file verified against its manifest checksum
//! once its last chunk is written.
//!
//! Four stages run at once:
//! - the plan's groups (a pack and the chunks it serves) are read out in turn order on a thread
//!   of their own (merged from disk when the plan spilled);
//! - packs are fetched, decrypted and decompressed by [`workers`] at once (one per core; the
//!   decryption runs on tokio's blocking pool), each holding one pack, and handed over in the
//!   order they finish: the writer never waits for one pack while another is ready. In format 3
//!   the same worker checks every blob it hands over against its id (keyed, so this is what
//!   proves the bytes are the backed-up ones);
//! - the writer puts each pack's blobs into their files with positioned writes (blobs back to
//!   back in both pack and file as one write; all-zero blobs are skipped, so they stay holes of
//!   the files created at their full size), direct to the disk where they are aligned and the
//!   file is not read back ([`OutFile`]);
//! - every completed file is checked against its manifest checksum. A CRC-32C (format 3) is
//!   computed by the writer from the bytes it writes, each run of blobs added at its offset in
//!   the file whatever the order ([`PlacedCrc`]; holes count as zeros), so a blob put in the
//!   wrong place, twice or not at all fails the check without a second pass over the file. A
//!   SHA-256 (formats 1 and 2, where it is what authenticates the bytes) needs the file front to
//!   back: [`hashers`] threads read such files back from the page cache. Either way the hashers
//!   then start the file's writeback. The first mismatch stops the writer, and the restore fails
//!   before anything leaves the staging directory. Packs are opened without recomputing their
//!   keyed digest: the blob ids or file checksums cover every byte restored.
//!
//! Memory: at most [`workers`] + 3 pack buffers (one per worker, one being handed over, one
//! queued, one being written), recycled, and as many groups of placements (each at most
//! `pack_plan::MAX_GROUP`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::mpsc;

use super::out_file::OutFile;
use super::pack_plan::{PackPlan, Placement, PlannedPack};
use super::{Error, io_err};
use crate::codec::ObjectKind;
use crate::progress::Progress;
use crate::repo::ObjectKey;
use crate::repository::{ReadBuffers, Repository};
use crate::snapshot::{BlobIndex, BufferPool, FileSum, FileSummer, PlacedCrc};

/// Completed files queued for the hashers (the writer waits when they fall this far behind).
const HASH_QUEUE: usize = 64;
/// Read size when hashing a file back.
const READ_BUFFER: usize = 1 << 20;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Packs decrypted at once: one per core (at least 2, so a fetch overlaps a decryption on one
/// core; at most 16, which bounds memory to 19 plaintext packs).
fn workers() -> usize {
    cores().clamp(2, 16)
}

/// Packs read from storage at once: twice the decrypting [`workers`], so that a worker done
/// with one pack finds the next already read (a cold read or a round trip costs as long as
/// decrypting it). Only compressed bytes wait: plaintexts are made `workers` at a time.
fn readers() -> usize {
    2 * workers()
}

/// Threads reading completed files back: one per core (2 to 16). SHA-256 on a core with SHA
/// extensions runs near 2 GB/s, CRC-32C far faster, reads from the page cache faster still:
/// they keep up with the writer.
fn hashers() -> usize {
    cores().clamp(2, 16)
}

/// A file being restored: where it is written and what it must hash to.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// Its path in the staging directory.
    pub path: PathBuf,
    /// Its path in the manifest (named in errors).
    pub name: String,
    /// Its manifest checksum.
    pub expected: FileSum,
    /// Its size.
    pub length: u64,
}

/// A decrypted pack; its buffer goes back to the pool when it is dropped, so a restore reuses a
/// handful of pack buffers instead of allocating one per pack.
struct PackData {
    data: Vec<u8>,
    pool: BufferPool,
}

impl Drop for PackData {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.data));
    }
}

/// A pack to read and the chunks it serves.
struct Job {
    pack: PlannedPack,
    /// The pack's id.
    name: String,
    placements: Vec<Placement>,
}

/// A pack read, with its chunks; or why it could not be (with the entry that needed it, when
/// known).
type Fetched = Result<(Job, PackData), (Option<u32>, Error)>;

/// Writes and verifies the content of every file in `plan` (`targets` is indexed by manifest
/// entry; every entry the plan names has one). Returns the number of packs fetched and
/// decrypted.
///
/// # Errors
/// The first checksum mismatch, else the first read or write failure, the file it was for named.
pub(super) async fn write(
    repo: &Repository,
    index: &BlobIndex,
    mut plan: PackPlan,
    targets: Vec<Option<Target>>,
    progress: &Progress,
) -> Result<u64, Error> {
    let packs_read = Arc::new(AtomicU64::new(0));
    let names: Vec<String> = plan.packs.iter().map(|p| index.packs[p.number as usize].clone()).collect();
    let chunks = std::mem::take(&mut plan.chunks);
    tracing::debug!(
        packs = plan.packs.len(),
        spilled_runs = plan.runs,
        workers = workers(),
        hashers = hashers(),
        "writing the files' content"
    );
    // Groups of the plan, in turn order, read on a blocking thread (a spilled plan reads files).
    let (job_tx, job_rx) = mpsc::channel::<Result<Job, Error>>(workers());
    let groups = tokio::task::spawn_blocking(move || {
        loop {
            let mut placements = Vec::new();
            let job = match plan.next_group(&mut placements) {
                Ok(Some(pack)) => {
                    let name = placements.first().and_then(|p| names.get(p.turn as usize)).cloned().unwrap_or_default();
                    Ok(Job { pack, name, placements })
                }
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let failed = job.is_err();
            if job_tx.blocking_send(job).is_err() || failed {
                return;
            }
        }
    });
    let (tx, rx) = mpsc::channel::<Fetched>(1);
    let fetch = tokio::spawn(fetch_packs(repo.clone(), job_rx, tx, Arc::clone(&packs_read)));
    let progress = progress.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let hashers = Hashers::start();
        let written = write_packs(rx, chunks, &targets, &hashers, &progress);
        // A checksum mismatch is the cause of any write failure that follows it.
        hashers.finish()?;
        written
    });
    let written = writer.await;
    fetch.abort();
    groups.abort();
    written.unwrap_or_else(|_| {
        Err(Error::Io {
            what: "restore: the writing thread panicked while writing",
            path: PathBuf::new(),
            source: std::io::Error::other("panic"),
        })
    })?;
    Ok(packs_read.load(Ordering::Relaxed))
}

/// Fetches and opens the packs of the jobs arriving on `jobs`, [`workers`] at once, and sends
/// each to the writer as soon as it is ready; stops at the first failure.
async fn fetch_packs(
    repo: Repository,
    jobs: mpsc::Receiver<Result<Job, Error>>,
    tx: mpsc::Sender<Fetched>,
    counter: Arc<AtomicU64>,
) {
    let buffers = ReadBuffers::default();
    let opening = Arc::new(tokio::sync::Semaphore::new(workers()));
    let jobs = futures::stream::unfold(jobs, |mut rx| async move { rx.recv().await.map(|job| (job, rx)) });
    let stream = jobs
        .map(|job| {
            let (repo, buffers, counter, opening) =
                (repo.clone(), buffers.clone(), Arc::clone(&counter), Arc::clone(&opening));
            async move {
                let job = job.map_err(|e| (None, e))?;
                let key = ObjectKey::Pack(job.name.clone());
                let (data, _opened) = repo
                    .get_open_unhashed_pooled(ObjectKind::Pack, &key, &buffers, opening)
                    .await
                    .map_err(|e| (Some(job.pack.first_file), Error::from(e)))?;
                counter.fetch_add(1, Ordering::Relaxed);
                let (job, data) = if repo.meta.format >= 3 {
                    let id_key = repo.id_key.clone();
                    tokio::task::spawn_blocking(move || {
                        let checked = check_blob_ids(&id_key, &job, &data);
                        (job, data, checked)
                    })
                    .await
                    .map_err(|_| {
                        let source = std::io::Error::other("panic");
                        (None, Error::Io { what: "restore: a blob check panicked in", path: PathBuf::new(), source })
                    })
                    .and_then(|(job, data, checked)| match checked {
                        Ok(()) => Ok((job, data)),
                        Err(e) => Err((Some(job.pack.first_file), e)),
                    })?
                } else {
                    (job, data)
                };
                Ok::<_, (Option<u32>, Error)>((job, PackData { data, pool: buffers.plaintext }))
            }
        })
        .buffer_unordered(readers());
    let mut stream = std::pin::pin!(stream);
    while let Some(pack) = stream.next().await {
        let failed = pack.is_err();
        if tx.send(pack).await.is_err() || failed {
            return;
        }
    }
}

/// Checks every blob `job` takes from its pack against the id the manifest names for it
/// (each distinct blob once): in format 3 this, not the file checksum, is what proves the
/// restored bytes are the backed-up ones, since age authenticates only that the pack was
/// encrypted to the repository's public recipients, which anyone can do. Runs on the decrypting
/// worker, so the check is spread over the cores with the decryption.
fn check_blob_ids(id_key: &crate::crypto::IdKey, job: &Job, data: &[u8]) -> Result<(), Error> {
    let mut checked = std::collections::HashSet::new();
    for placement in &job.placements {
        if !checked.insert(placement.pack_offset) {
            continue;
        }
        let start = placement.pack_offset as usize;
        let bytes = data.get(start..start + placement.length as usize);
        if bytes.is_none_or(|bytes| crate::repo::BlobId::of(id_key, bytes).as_bytes()[..16] != placement.id_prefix) {
            return Err(Error::BlobMismatch {
                pack: ObjectKey::Pack(job.name.clone()).to_string(),
                offset: placement.pack_offset,
            });
        }
    }
    Ok(())
}

fn target_of(targets: &[Option<Target>], file: u32) -> Result<&Target, Error> {
    targets.get(file as usize).and_then(Option::as_ref).ok_or_else(|| Error::Io {
        what: "restore: the plan names an entry that has no file",
        path: PathBuf::from(file.to_string()),
        source: std::io::Error::other("internal error"),
    })
}

/// The writer: takes packs as they arrive and writes their blobs; `left` counts the chunks
/// each entry still waits for.
fn write_packs(
    mut rx: mpsc::Receiver<Fetched>,
    mut left: Vec<u32>,
    targets: &[Option<Target>],
    hashers: &Hashers,
    progress: &Progress,
) -> Result<(), Error> {
    // CRC-32C sums are computed from the bytes as they are written; SHA-256 ones (formats 1
    // and 2) need the file in order, so the hashers read those back.
    let mut sums: Vec<Option<PlacedCrc>> = targets
        .iter()
        .map(|t| t.as_ref().filter(|t| matches!(t.expected, FileSum::Crc32c(_))).map(|t| PlacedCrc::new(t.length)))
        .collect();
    // Files without content are complete already.
    for (entry, target) in targets.iter().enumerate() {
        if let Some(target) = target
            && left.get(entry) == Some(&0)
        {
            hashers.check(target, sums[entry].as_ref())?;
        }
    }
    // The aligned buffer direct writes copy blobs through.
    let mut scratch = Vec::new();
    let (mut waited, mut writing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut clock = std::time::Instant::now();
    while let Some(fetched) = rx.blocking_recv() {
        waited += clock.elapsed();
        clock = std::time::Instant::now();
        hashers.check_running()?;
        let (job, pack) = match fetched {
            Ok(fetched) => fetched,
            Err((Some(file), e)) => {
                return Err(Error::File { path: target_of(targets, file)?.name.clone(), source: Box::new(e) });
            }
            Err((None, e)) => return Err(e),
        };
        write_pack(&pack.data, &job.name, &job.placements, targets, &mut left, &mut sums, hashers, &mut scratch)?;
        progress.advance(job.placements.iter().map(|p| u64::from(p.length)).sum());
        writing += clock.elapsed();
        clock = std::time::Instant::now();
    }
    // Where the writer's time went: waiting on decryption, or writing (the bench reads this).
    tracing::debug!(waited_s = waited.as_secs_f64(), writing_s = writing.as_secs_f64(), "writer done");
    // Every pack was handed over, or the stream stopped at a failure reported above.
    if let Some(entry) = left.iter().position(|&n| n != 0) {
        return Err(Error::Io {
            what: "restore: the pack reader stopped before every chunk was written; incomplete:",
            path: PathBuf::from(target_of(targets, u32::try_from(entry).unwrap_or(u32::MAX))?.name.clone()),
            source: std::io::Error::other("pack stream ended early"),
        });
    }
    Ok(())
}

/// Bytes of one file waiting to be written with one call: blobs back to back in the pack and
/// in the file (as a file's blocks in its first backup are).
struct Run {
    file_offset: u64,
    pack: std::ops::Range<usize>,
}

/// Writes the blobs of one pack (its plaintext and its id) into their files (`group`: its
/// placements, sorted by file), adding what it writes to the files' CRC-32C `sums`.
// Long: the per-placement loop keeps one open file and one pending run between iterations.
#[allow(clippy::too_many_arguments)]
fn write_pack(
    pack: &[u8],
    pack_name: &str,
    group: &[Placement],
    targets: &[Option<Target>],
    left: &mut [u32],
    sums: &mut [Option<PlacedCrc>],
    hashers: &Hashers,
    scratch: &mut Vec<u8>,
) -> Result<(), Error> {
    let mut open: Option<(u32, OutFile)> = None;
    let mut run: Option<Run> = None;
    let flush = |run: &mut Option<Run>,
                 open: &mut Option<(u32, OutFile)>,
                 target: &Target,
                 sums: &mut [Option<PlacedCrc>],
                 scratch: &mut Vec<u8>|
     -> Result<(), Error> {
        if let (Some(r), Some((entry, file))) = (run.take(), open) {
            let bytes = &pack[r.pack];
            file.write_at(&target.path, bytes, r.file_offset, scratch).map_err(io_err("write", &target.path))?;
            if let Some(Some(sum)) = sums.get_mut(*entry as usize) {
                sum.add(r.file_offset, bytes);
            }
        }
        Ok(())
    };
    for p in group {
        let target = target_of(targets, p.file)?;
        if open.as_ref().is_none_or(|(f, _)| *f != p.file) {
            if let Some((previous, _)) = &open {
                let previous = target_of(targets, *previous)?;
                flush(&mut run, &mut open, previous, sums, scratch)?;
            }
            // Direct writes only for files checked by what was written (not read back).
            let direct = sums.get(p.file as usize).is_some_and(Option::is_some);
            let file = OutFile::open(&target.path, direct).map_err(io_err("open", &target.path))?;
            open = Some((p.file, file));
        }
        let range = p.pack_offset as usize..p.pack_offset as usize + p.length as usize;
        let Some(bytes) = pack.get(range.clone()) else {
            return Err(Error::BlobOutsidePack {
                pack: ObjectKey::Pack(pack_name.to_owned()).to_string(),
                offset: p.pack_offset,
                length: p.length,
                path: target.name.to_owned(),
            });
        };
        if is_zero(bytes) {
            // A hole: the file was created at its full size.
            flush(&mut run, &mut open, target, sums, scratch)?;
        } else {
            match &mut run {
                Some(r) if r.pack.end == range.start && r.file_offset + r.pack.len() as u64 == p.file_offset => {
                    r.pack.end = range.end
                }
                _ => {
                    flush(&mut run, &mut open, target, sums, scratch)?;
                    run = Some(Run { file_offset: p.file_offset, pack: range });
                }
            }
        }
        let remaining = &mut left[p.file as usize];
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            flush(&mut run, &mut open, target, sums, scratch)?;
            open = None;
            hashers.check(target, sums[p.file as usize].as_ref())?;
        }
    }
    if let Some((file, _)) = &open {
        let target = target_of(targets, *file)?;
        flush(&mut run, &mut open, target, sums, scratch)?;
    }
    Ok(())
}

/// Whether every byte is zero (64 bytes at a time: the compiler vectorises the inner fold).
fn is_zero(data: &[u8]) -> bool {
    let chunks = data.chunks_exact(64);
    let tail = chunks.remainder();
    chunks.into_iter().all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0) && tail.iter().all(|&b| b == 0)
}

/// A completed file to check.
struct Check {
    path: PathBuf,
    name: String,
    expected: FileSum,
    /// Whether to read it back and compare its checksum (else it was checked as written).
    read_back: bool,
}

/// Threads that read completed files back and compare them with their manifest checksum.
struct Hashers {
    tx: SyncSender<Check>,
    failed: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<(), Error>>>,
}

impl Hashers {
    fn start() -> Self {
        let (tx, rx) = sync_channel::<Check>(HASH_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let failed = Arc::new(AtomicBool::new(false));
        let threads = (0..hashers())
            .map(|_| {
                let (rx, failed) = (Arc::clone(&rx), Arc::clone(&failed));
                std::thread::spawn(move || {
                    let result = hash_files(&rx);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        Self { tx, failed, threads }
    }

    /// Queues a completed file (waits while the hashers are [`HASH_QUEUE`] files behind). With
    /// the CRC-32C `sum` of what was written, the file is checked here and the hashers only
    /// start its writeback; without, they read it back and checksum it.
    fn check(&self, target: &Target, sum: Option<&PlacedCrc>) -> Result<(), Error> {
        self.check_running()?;
        let computed = sum.map(|sum| FileSum::Crc32c(sum.finish()));
        if let Some(actual) = computed
            && actual != target.expected
        {
            return Err(Error::Checksum {
                path: target.name.clone(),
                expected: target.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        let check = Check {
            path: target.path.clone(),
            name: target.name.clone(),
            expected: target.expected,
            read_back: computed.is_none(),
        };
        // A closed channel means every hasher stopped at a failure; `finish` reports it.
        self.tx.send(check).map_err(|_| Self::stopped())
    }

    /// Fails once a hasher found a problem, so the writer stops early; `finish` reports it.
    fn check_running(&self) -> Result<(), Error> {
        if self.failed.load(Ordering::Relaxed) { Err(Self::stopped()) } else { Ok(()) }
    }

    fn stopped() -> Error {
        Error::Io {
            what: "restore: verification stopped",
            path: PathBuf::new(),
            source: std::io::Error::other("a restored file failed its check"),
        }
    }

    /// Waits until every queued file is checked; the first failure, if any.
    fn finish(self) -> Result<(), Error> {
        drop(self.tx);
        let mut first = Ok(());
        for thread in self.threads {
            let result = thread.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    what: "restore: a verifying thread panicked",
                    path: PathBuf::new(),
                    source: std::io::Error::other("panic"),
                })
            });
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

/// A hasher thread: checks files until the queue closes or one fails.
fn hash_files(rx: &Mutex<Receiver<Check>>) -> Result<(), Error> {
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return Ok(()),
        };
        let Ok(check) = next else { return Ok(()) };
        hash_file(&check, &mut buffer)?;
    }
}

/// Reads a restored file back and compares its checksum with the manifest's; then asks the
/// kernel to write it back now (so the final fsync finds little left) and drop it from the cache.
fn hash_file(check: &Check, buffer: &mut [u8]) -> Result<(), Error> {
    use std::io::Read;
    let mut file = std::fs::File::open(&check.path).map_err(io_err("read back", &check.path))?;
    let mut length = 0u64;
    if check.read_back {
        let mut summer = FileSummer::like(&check.expected);
        loop {
            let n = match file.read(buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read back", &check.path)(e)),
            };
            summer.update(&buffer[..n]);
            length += n as u64;
        }
        let actual = summer.finish();
        if actual != check.expected {
            return Err(Error::Checksum {
                path: check.name.clone(),
                expected: check.expected.to_string(),
                actual: actual.to_string(),
            });
        }
    } else {
        length = file.metadata().map_err(io_err("stat", &check.path))?.len();
    }
    match writeback() {
        Writeback::DontNeed => start_writeback(&file, length),
        Writeback::None => {}
        Writeback::Fsync => file.sync_data().map_err(io_err("fsync", &check.path))?,
    }
    Ok(())
}

/// What a hasher does with a file it verified (the final fsync pass follows in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writeback {
    /// Start its writeback now and drop its clean pages (the default: the disk writes while
    /// the restore goes on, the final pass finds little left, and the page cache is not
    /// filled with a cluster nobody reads yet).
    DontNeed,
    /// Nothing: the final pass writes everything.
    None,
    /// fdatasync it now, waiting (a hasher is busy until the disk has it).
    Fsync,
}

/// Environment variable choosing [`Writeback`] (`dontneed`, `none`, `fsync`): a bench knob
/// (`bench/restore-speed.sh` compares them), read once per process.
const WRITEBACK_ENV: &str = "RADD_RESTORE_WRITEBACK";

fn writeback() -> Writeback {
    static MODE: std::sync::OnceLock<Writeback> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| match std::env::var(WRITEBACK_ENV).as_deref() {
        Ok("none") => Writeback::None,
        Ok("fsync") => Writeback::Fsync,
        Ok("dontneed" | "") | Err(_) => Writeback::DontNeed,
        Ok(other) => {
            tracing::warn!(value = other, "{WRITEBACK_ENV} is none of dontneed, none, fsync; using dontneed");
            Writeback::DontNeed
        }
    })
}

/// Asks the kernel to start writing a file back now (`POSIX_FADV_DONTNEED` queues dirty pages
/// for writeback without waiting, and drops clean ones). Only a hint: failures are ignored.
fn start_writeback(file: &std::fs::File, length: u64) {
    let Ok(length) = i64::try_from(length) else { return };
    if length > 0 {
        let _ = nix::fcntl::posix_fadvise(file, 0, length, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `placements` of `pack` into one file of `length` bytes whose manifest sum is the
    /// CRC-32C of `expected`; the writer's verdict.
    fn write_one(pack: &[u8], placements: &[(u32, u64)], length: u64, expected: &[u8]) -> Result<(), Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::File::create(&path).unwrap().set_len(length).unwrap();
        let expected = FileSum::Crc32c(crc32c::crc32c(expected));
        let targets = vec![Some(Target { path: path.clone(), name: "f".into(), expected, length })];
        let group: Vec<Placement> = placements
            .iter()
            .map(|&(pack_offset, file_offset)| Placement {
                turn: 0,
                pack_offset,
                length: 100,
                file: 0,
                file_offset,
                id_prefix: [0; 16],
            })
            .collect();
        let mut left = vec![u32::try_from(group.len()).unwrap()];
        let mut sums = vec![Some(PlacedCrc::new(length))];
        let hashers = Hashers::start();
        let written = write_pack(pack, "p", &group, &targets, &mut left, &mut sums, &hashers, &mut Vec::new());
        hashers.finish()?;
        written?;
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk, expected_bytes(pack, placements, length), "the file holds what was placed");
        Ok(())
    }

    fn expected_bytes(pack: &[u8], placements: &[(u32, u64)], length: u64) -> Vec<u8> {
        let mut out = vec![0u8; usize::try_from(length).unwrap()];
        for &(from, to) in placements {
            let (from, to) = (from as usize, usize::try_from(to).unwrap());
            out[to..to + 100].copy_from_slice(&pack[from..from + 100]);
        }
        out
    }

    #[test]
    fn the_written_crc_catches_misplaced_missing_and_doubled_blobs() {
        let pack: Vec<u8> = (0..300u32).map(|i| u8::try_from(i % 251).unwrap() | 1).collect();
        let (a, b) = (&pack[..100], &pack[100..200]);
        let file = [a, b, &[0u8; 100]].concat();
        // Written out of order, the last 100 bytes a hole: the sum matches without reading back.
        write_one(&pack, &[(100, 100), (0, 0)], 300, &file).unwrap();
        for wrong in [&[(0, 100), (100, 0)][..], &[(0, 0)], &[(0, 0), (0, 0), (100, 100)], &[(0, 0), (100, 200)]] {
            let err = write_one(&pack, wrong, 300, &file).unwrap_err();
            assert!(matches!(err, Error::Checksum { ref path, .. } if path == "f"), "{wrong:?}: {err}");
        }
    }

    #[test]
    fn zero_detection_looks_at_every_byte() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 8192]));
        for len in [1, 63, 64, 65, 8192] {
            for at in [0, len / 2, len - 1] {
                let mut data = vec![0u8; len];
                data[at] = 1;
                assert!(!is_zero(&data), "byte {at} of {len}");
            }
        }
    }
}
