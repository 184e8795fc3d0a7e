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
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::Error;
use super::chunker::{Chunking, for_each_chunk};
use super::manifest::{Entry, EntryKind};
use super::pack::{BlobIndex, PackBuilder, PendingPack};
use super::parent::{ParentFile, ParentFiles};
use super::walk::{attrs, is_relation_file, walk_data_dir};
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

/// Runs the reader, hasher and packer stages over the data directory at `root`.
pub fn read_data_dir(
    root: &Path,
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
        let read = read_files(root, known, parent, options, batch_tx);
        let packed = packer.join().map_err(|_| Error::Internal("packer thread panicked".into()))?;
        // A packer failure (uploader gone) makes the reader fail too: report the cause.
        let mut packed = packed?;
        let mut out = read?;
        out.new_bytes = packed.new_bytes;
        out.reused_bytes += packed.reused_bytes;
        for (index, entry) in out.entries.iter_mut().enumerate() {
            let Some(mut parts) = packed.ids.remove(&index) else { continue };
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

/// The reader stage: entries in walk order; file chunks go to the hashers in batches.
fn read_files(root: &Path, known: &BlobIndex, parent: Option<&ParentFiles>, options: &BackupConfig, batches: SyncSender<Batch>) -> Result<ReadOutcome, Error> {
    let mut out = ReadOutcome::default();
    let stopped = || Error::Internal("hashing stage stopped".into());
    for found in walk_data_dir(root)? {
        let (mode, uid, gid, mtime) = attrs(&found.meta);
        let mut entry = Entry { path: found.rel.clone(), kind: EntryKind::Dir, mode, uid, gid, mtime, size: 0 };
        if let Some(target) = found.link_target {
            entry.kind = EntryKind::Symlink { target };
        } else if found.meta.is_file() {
            let size_hint = found.meta.len();
            let mtime_ns = i128::from(found.meta.mtime()) * 1_000_000_000 + i128::from(found.meta.mtime_nsec());
            let ino = found.meta.ino();
            if let Some(p) = parent.and_then(|p| p.unchanged(&found.rel, size_hint, mtime_ns, ino, known)) {
                out.files_unchanged += 1;
                out.total_bytes += size_hint;
                out.reused_bytes += size_hint;
                entry.size = size_hint;
                entry.kind = EntryKind::File { sha256: p.sha256, chunks: p.chunks.clone() };
                out.next_parent.files.insert(found.rel.clone(), p.clone());
                out.entries.push(entry);
                continue;
            }
            let file = match std::fs::File::open(&found.path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // dropped meanwhile
                Err(source) => return Err(Error::Read { path: found.path, source }),
            };
            let chunking = if is_relation_file(&found.rel) {
                Chunking::Fixed(options.block_size.as_usize())
            } else {
                Chunking::ContentDefined(options.chunk_size.as_usize())
            };
            let index = out.entries.len();
            let mut sha = Sha256Stream::default();
            let mut size = 0u64;
            let mut batch = Batch { entry: index, seq: 0, chunks: Vec::new() };
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
                        let full = std::mem::replace(&mut batch, Batch { entry: index, seq: seq + 1, chunks: Vec::new() });
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
            out.total_bytes += size;
            out.read_bytes += size;
            out.files_read += 1;
            entry.size = size;
            let sha256 = sha.finish();
            out.next_parent.files.insert(found.rel.clone(), ParentFile { size, mtime_ns, ino, sha256, chunks: Vec::new() });
            entry.kind = EntryKind::File { sha256, chunks: Vec::new() };
        }
        out.entries.push(entry);
    }
    Ok(out)
}
