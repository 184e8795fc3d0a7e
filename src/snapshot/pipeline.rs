//! The reading side of a backup as three concurrent stages, so every core works:
//!
//! ```text
//! reader (1 thread): walk, read, cut chunks, file SHA-256 ──batches──► hashers (1 per core):
//! keyed chunk ids (HMAC) ──► packer (1 thread): dedup, fill packs ──► uploader (async: seal, put)
//! ```
//! Batches carry up to ~1 MiB of chunks, so the blocks of one large file are hashed by all
//! hashers at once, and reads overlap with hashing and sealing. Every channel is bounded:
//! memory is a few batches plus the packs in flight, whatever the size of the cluster. A stage
//! that fails closes its channels, which stops the others; the first error is returned.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::Error;
use super::chunker::{Chunking, for_each_chunk};
use super::manifest::{Entry, EntryKind, encode_os};
use super::pack::{BlobIndex, PackBuilder, PendingPack};
use super::parent::{ParentFile, ParentFiles};
use super::walk::{Found, attrs, is_relation_file};
use crate::config::BackupConfig;
use crate::crypto::{Digest, IdKey, Sha256Stream};

/// Bytes of chunks per batch handed from the reader to the hashers.
const BATCH_BYTES: usize = 1 << 20;
/// Batches queued between stages.
const QUEUE: usize = 4;

/// What the reading stages produced.
#[derive(Default)]
pub struct ReadOutcome {
    /// Manifest entries in walk order.
    pub entries: Vec<Entry>,
    /// Logical bytes of all files.
    pub total_bytes: u64,
    /// Bytes of chunks new to the repository.
    pub new_bytes: u64,
    /// Bytes of chunks already stored (or reused unchanged files).
    pub reused_bytes: u64,
    /// Bytes read from disk.
    pub read_bytes: u64,
    /// Files read.
    pub files_read: u64,
    /// Files reused from the parent without reading.
    pub files_unchanged: u64,
    /// The record the next backup will use as its parent.
    pub next_parent: ParentFiles,
    /// Files and directories that could not be read (consistently), with the reason.
    pub unreadable: Vec<String>,
}

struct Batch {
    entry: usize,
    seq: u32,
    chunks: Vec<Vec<u8>>,
}

struct Hashed {
    entry: usize,
    seq: u32,
    chunks: Vec<Vec<u8>>,
    ids: Vec<Digest>,
}

#[derive(Default)]
struct PackerOut {
    ids: HashMap<usize, Vec<(u32, Vec<Digest>)>>,
    new_bytes: u64,
    reused_bytes: u64,
}

/// What the reader stage reads.
pub struct ReadPlan<'a> {
    /// Entries from a walk, parents first.
    pub found: Vec<Found>,
    /// How each file (by relative path) is cut into chunks.
    pub chunking: &'a (dyn Fn(&str) -> Chunking + Sync),
    /// Re-check each file's metadata after reading it; a file that changed meanwhile is read
    /// again (up to 3 times) and otherwise reported unreadable, never stored torn (fs
    /// snapshots; a PostgreSQL base backup is made consistent by WAL replay instead).
    pub stable_reads: bool,
}

/// The chunking of a PostgreSQL data directory: fixed blocks for relation files, CDC otherwise.
pub fn data_dir_chunking(options: &BackupConfig) -> impl Fn(&str) -> Chunking + Sync + use<> {
    let (block, chunk) = (options.block_size.as_usize(), options.chunk_size.as_usize());
    move |rel: &str| if is_relation_file(rel) { Chunking::Fixed(block) } else { Chunking::ContentDefined(chunk) }
}

/// Runs the reader, hasher and packer stages over the walked entries of `plan`.
pub fn read_tree(
    plan: ReadPlan<'_>,
    known: &BlobIndex,
    parent: Option<&ParentFiles>,
    id_key: &IdKey,
    options: &BackupConfig,
    packs: &mpsc::Sender<PendingPack>,
) -> Result<ReadOutcome, Error> {
    let hashers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = sync_channel::<Batch>(QUEUE);
        let batch_rx = Arc::new(Mutex::new(batch_rx));
        let (hashed_tx, hashed_rx) = sync_channel::<Hashed>(QUEUE);
        for _ in 0..hashers {
            let batch_rx = Arc::clone(&batch_rx);
            let hashed_tx = hashed_tx.clone();
            scope.spawn(move || hash_batches(&batch_rx, &hashed_tx, id_key));
        }
        drop(hashed_tx);
        let packer = scope.spawn(move || pack_chunks(hashed_rx, known, options.pack_size.as_usize(), packs));
        let read = read_files(plan, known, parent, batch_tx);
        let packed = packer.join().map_err(|_| Error::Internal("packer thread panicked".into()))?;
        // A packer failure (uploader gone) makes the reader fail too: report the cause.
        let mut packed = packed?;
        let (mut out, slots) = read?;
        out.new_bytes = packed.new_bytes;
        out.reused_bytes += packed.reused_bytes;
        for (slot, index) in slots {
            let Some(mut parts) = packed.ids.remove(&slot) else { continue };
            let entry = &mut out.entries[index];
            parts.sort_by_key(|(seq, _)| *seq);
            let ids: Vec<Digest> = parts.into_iter().flat_map(|(_, ids)| ids).collect();
            if let EntryKind::File { chunks, .. } = &mut entry.kind {
                *chunks = ids;
            }
            if let (EntryKind::File { chunks, .. }, Some(p)) = (&entry.kind, out.next_parent.files.get_mut(&entry.path)) {
                p.chunks.clone_from(chunks);
            }
        }
        Ok(out)
    })
}

fn hash_batches(batches: &Mutex<Receiver<Batch>>, hashed: &SyncSender<Hashed>, id_key: &IdKey) {
    loop {
        let batch = match batches.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Batch { entry, seq, chunks }) = batch else { return };
        let ids = chunks.iter().map(|c| id_key.digest(c)).collect();
        if hashed.send(Hashed { entry, seq, chunks, ids }).is_err() {
            return;
        }
    }
}

fn pack_chunks(hashed: Receiver<Hashed>, known: &BlobIndex, pack_size: usize, packs: &mpsc::Sender<PendingPack>) -> Result<PackerOut, Error> {
    let mut pack = PackBuilder::default();
    let mut out = PackerOut::default();
    let send = |pack: &mut PackBuilder| packs.blocking_send(pack.take()).map_err(|_| Error::Internal("pack uploader stopped".into()));
    for batch in hashed {
        for (data, id) in batch.chunks.iter().zip(&batch.ids) {
            if known.contains(id) || pack.has(id) {
                out.reused_bytes += data.len() as u64;
            } else {
                pack.add(*id, data);
                out.new_bytes += data.len() as u64;
                if pack.len() >= pack_size {
                    send(&mut pack)?;
                }
            }
        }
        out.ids.entry(batch.entry).or_default().push((batch.seq, batch.ids));
    }
    if !pack.is_empty() {
        send(&mut pack)?;
    }
    Ok(out)
}

/// Whether a file changed between two stats (size, mtime or ctime).
fn changed(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    (a.len(), a.mtime(), a.mtime_nsec(), a.ctime(), a.ctime_nsec()) != (b.len(), b.mtime(), b.mtime_nsec(), b.ctime(), b.ctime_nsec())
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// The reader stage: entries in walk order; file chunks go to the hashers in batches tagged
/// with a slot (one per read attempt). Returns the entries and which slot filled which entry.
fn read_files(plan: ReadPlan<'_>, known: &BlobIndex, parent: Option<&ParentFiles>, batches: SyncSender<Batch>) -> Result<(ReadOutcome, Vec<(usize, usize)>), Error> {
    let mut out = ReadOutcome::default();
    let mut slots = Vec::new();
    let mut next_slot = 0usize;
    let mut entry_of_found: Vec<Option<usize>> = Vec::with_capacity(plan.found.len());
    let stopped = || Error::Internal("hashing stage stopped".into());
    let attempts = if plan.stable_reads { 3 } else { 1 };
    'found: for found in plan.found {
        entry_of_found.push(None);
        let mut meta = found.meta;
        let (mode, uid, gid, mtime, mtime_nsec) = attrs(&meta);
        let mut entry = Entry { path: found.rel.clone(), raw_path: found.raw.clone(), kind: EntryKind::Dir, mode, uid, gid, mtime, mtime_nsec, size: 0 };
        if let Some(target) = &found.link_target {
            let (target, raw_target) = encode_os(target);
            entry.kind = EntryKind::Symlink { target, raw_target };
        } else if meta.is_file() {
            if let Some(first) = found.hardlink_of.and_then(|f| entry_of_found.get(f).copied().flatten()) {
                entry.kind = EntryKind::Hardlink { entry: first };
                entry.size = meta.len();
                *entry_of_found.last_mut().expect("pushed above") = Some(out.entries.len());
                out.entries.push(entry);
                continue;
            }
            let ino = meta.ino();
            let mtime_ns = nanos(meta.mtime(), meta.mtime_nsec());
            let ctime_ns = nanos(meta.ctime(), meta.ctime_nsec());
            if let Some(p) = parent.and_then(|p| p.unchanged(&found.rel, meta.len(), mtime_ns, ctime_ns, ino, known)) {
                out.files_unchanged += 1;
                out.total_bytes += p.size;
                out.reused_bytes += p.size;
                entry.size = p.size;
                entry.kind = EntryKind::File { sha256: p.sha256, chunks: p.chunks.clone() };
                out.next_parent.files.insert(found.rel.clone(), p.clone());
                *entry_of_found.last_mut().expect("pushed above") = Some(out.entries.len());
                out.entries.push(entry);
                continue;
            }
            let chunking = (plan.chunking)(&found.rel);
            let mut attempt = 0;
            let (sha256, size, slot) = loop {
                attempt += 1;
                let file = match std::fs::File::open(&found.path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'found, // deleted meanwhile
                    Err(e) if plan.stable_reads => {
                        tracing::warn!(path = %found.path.display(), error = %e, "cannot read file: snapshot will be partial");
                        out.unreadable.push(format!("{}: {e}", found.path.display()));
                        continue 'found;
                    }
                    Err(source) => return Err(Error::Read { path: found.path, source }),
                };
                let slot = next_slot;
                next_slot += 1;
                let mut sha = Sha256Stream::default();
                let mut size = 0u64;
                let mut batch = Batch { entry: slot, seq: 0, chunks: Vec::new() };
                let mut batch_bytes = 0;
                for_each_chunk(
                    std::io::BufReader::with_capacity(1 << 20, file),
                    chunking,
                    |data| {
                        sha.update(data);
                        size += data.len() as u64;
                        batch.chunks.push(data.to_vec());
                        batch_bytes += data.len();
                        if batch_bytes >= BATCH_BYTES {
                            let seq = batch.seq;
                            let full = std::mem::replace(&mut batch, Batch { entry: slot, seq: seq + 1, chunks: Vec::new() });
                            batch_bytes = 0;
                            batches.send(full).map_err(|_| stopped())?;
                        }
                        Ok(())
                    },
                    |source| Error::Read { path: found.path.clone(), source },
                )?;
                if !batch.chunks.is_empty() {
                    batches.send(batch).map_err(|_| stopped())?;
                }
                out.read_bytes += size;
                if !plan.stable_reads {
                    break (sha.finish(), size, slot);
                }
                match std::fs::symlink_metadata(&found.path) {
                    Ok(after) if !changed(&meta, &after) && after.len() == size => break (sha.finish(), size, slot),
                    Ok(after) if attempt < attempts => {
                        tracing::warn!(path = %found.path.display(), attempt, "file changed while being read; reading it again");
                        meta = after;
                    }
                    Ok(_) => {
                        tracing::warn!(path = %found.path.display(), "file kept changing while being read: snapshot will be partial");
                        out.unreadable.push(format!("{}: changed while being read ({attempts} attempts)", found.path.display()));
                        continue 'found;
                    }
                    Err(_) => continue 'found, // deleted meanwhile
                }
            };
            let (mode, uid, gid, mtime, mtime_nsec) = attrs(&meta);
            (entry.mode, entry.uid, entry.gid, entry.mtime, entry.mtime_nsec) = (mode, uid, gid, mtime, mtime_nsec);
            out.total_bytes += size;
            out.files_read += 1;
            entry.size = size;
            slots.push((slot, out.entries.len()));
            let (mtime_ns, ctime_ns) = (nanos(meta.mtime(), meta.mtime_nsec()), nanos(meta.ctime(), meta.ctime_nsec()));
            out.next_parent.files.insert(found.rel.clone(), ParentFile { size, mtime_ns, ctime_ns, ino, sha256, chunks: Vec::new() });
            entry.kind = EntryKind::File { sha256, chunks: Vec::new() };
        }
        *entry_of_found.last_mut().expect("pushed above") = Some(out.entries.len());
        out.entries.push(entry);
    }
    Ok((out, slots))
}

/// Runs the whole write side of a snapshot up to (not including) its index: the walk and the
/// reading stages on blocking threads, sealing and uploading on the async runtime. Returns the
/// read outcome and what was uploaded once every pack is durable.
pub async fn store_tree(
    repo: &crate::repository::Repository,
    known: Arc<BlobIndex>,
    walk: impl FnOnce() -> Result<Vec<Found>, Error> + Send + 'static,
    chunking: impl Fn(&str) -> Chunking + Send + Sync + 'static,
    stable_reads: bool,
    parent: Option<ParentFiles>,
    options: &BackupConfig,
) -> Result<(ReadOutcome, super::pack::UploadReport), Error> {
    let (tx, rx) = mpsc::channel::<PendingPack>(1);
    let uploader = tokio::spawn(super::pack::upload_packs(repo.clone(), rx, options.upload_concurrency));
    let reader = {
        let id_key = repo.id_key.clone();
        let options = options.clone();
        tokio::task::spawn_blocking(move || {
            let plan = ReadPlan { found: walk()?, chunking: &chunking, stable_reads };
            read_tree(plan, &known, parent.as_ref(), &id_key, &options, &tx)
        })
    };
    let read = reader.await.map_err(|e| Error::Internal(e.to_string()))?;
    let upload = uploader.await.map_err(|e| Error::Internal(e.to_string()))?;
    // An uploader failure makes the reader fail too; report the root cause first.
    let upload = upload?;
    Ok((read?, upload))
}

/// A new snapshot id: the UTC start time to the millisecond (ids sort by time, also for
/// snapshots taken within one second) and 8 random hex digits.
#[must_use]
pub fn new_snapshot_id(started: chrono::DateTime<chrono::Utc>) -> String {
    format!("{}-{}", started.format("%Y%m%dT%H%M%S%3fZ"), &IdKey::generate().digest(b"snapshot id").to_string()[..8])
}

/// Writes the index (if any pack was new) and the encrypted manifest; returns the bytes
/// uploaded for them and the manifest's digest. The snapshot record, written after this by the
/// caller, is what commits the snapshot.
pub async fn write_index_and_manifest(
    repo: &crate::repository::Repository,
    snapshot_id: &str,
    index: &super::pack::IndexFile,
    manifest: &super::manifest::Manifest,
) -> Result<(u64, Digest), Error> {
    use crate::repo::ObjectKey;
    if !index.packs.is_empty() {
        repo.put_record(&ObjectKey::Index(snapshot_id.to_owned()), index).await?;
    }
    let json = serde_json::to_vec(manifest).expect("manifest serialises");
    let (_, digest, bytes) = repo
        .seal_put(crate::codec::ObjectKind::Manifest, &ObjectKey::Manifest(snapshot_id.to_owned()), json)
        .await?;
    Ok((bytes, digest))
}
