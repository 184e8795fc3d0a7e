//! The reading side of a backup as concurrent stages, so every core works:
//!
//! ```text
//! reader (1 thread): walk, read, cut chunks, file checksum ──batches──► hashers (1 per core):
//! keyed chunk ids (BLAKE3, or HMAC-SHA256 in format-1 repositories) ──► packer (1 thread): back
//! in walk order, dedup, fill packs, chunk lists of large files, finish entries ──► entry
//! stream (1 thread): manifest entries as chunks in packs
//!                                   ──► uploader (async: seal, put)
//! ```
//! Batches carry up to ~1 MiB of chunks, so the blocks of one large file are hashed by all
//! hashers at once, and reads overlap with hashing and sealing. Every channel is bounded and
//! the walk, the entries and the parent record all stream: memory is a few batches plus the
//! packs in flight (and the blob index), whatever the number or size of the files. A stage
//! that fails closes its channels, which stops the others; the first error is returned.
//!
//! `reader` is the first stage (walk, read, cut, file checksum) and the hashers; `packer` puts
//! the hashed batches back in order and packs new chunks, and runs the uploader; `assemble`
//! finishes each entry (its chunk list, the next parent record, the entry-stream line) and
//! writes what commits a snapshot's content (the last index, the manifest).

mod assemble;
mod packer;
mod read_ahead;
mod reader;

use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::Error;
use super::FileSum;
use super::chunker::Chunking;
use super::entry_stream;
use super::manifest::{Entry, EntryKind};
use super::pack::{BlobIndex, BufferPool, PackBuilder, PendingPack};
use super::parent::{ParentFile, ParentReader, ParentWriter, PendingParent};
use super::walk::{Found, is_relation_file};
use crate::config::BackupConfig;
use crate::crypto::IdKey;
use crate::repo::BlobId;

pub use assemble::{new_snapshot_id, write_index_and_manifest};
use packer::{HashedBatches, Packer, pack_and_assemble};
pub use packer::{Tree, store_tree};
use reader::{BatchWindow, Reader, hash_batches};

/// Bytes of chunks per batch handed from the reader to the hashers.
const BATCH_BYTES: usize = 1 << 20;
/// Most steps per batch (many small files make many steps with few bytes).
const BATCH_STEPS: usize = 512;
/// Batches queued between stages.
const QUEUE: usize = 4;
/// Batches between the reader and the packer at once, counting those queued, being hashed
/// and waiting to be put back in order: hashers finish out of order, and without this bound a
/// hasher stalled on one batch let the others pile finished batches up behind it.
const BATCH_WINDOW: usize = 2 * QUEUE + 4;

/// What the reading stages produced. The entries themselves went into the manifest's entry
/// stream as they were finished.
#[derive(Default)]
pub struct ReadOutcome {
    /// Number of manifest entries.
    pub entries: u64,
    /// Entries that are files or further names of files.
    pub files: u64,
    /// The entry stream's chunk ids, for the manifest.
    pub entry_chunks: Vec<BlobId>,
    /// Logical bytes of all files.
    pub total_bytes: u64,
    /// Bytes of file content new to the repository (entry-stream chunks count only as uploaded).
    pub new_bytes: u64,
    /// Bytes of chunks already stored (or reused unchanged files).
    pub reused_bytes: u64,
    /// Bytes read from disk.
    pub read_bytes: u64,
    /// Files read.
    pub files_read: u64,
    /// Files reused from the parent without reading.
    pub files_unchanged: u64,
    /// The record the next backup will use as its parent, once this snapshot is committed
    /// (`None` when it could not be written).
    pub next_parent: Option<PendingParent>,
    /// Files and directories that could not be read (consistently), with the reason.
    pub unreadable: Vec<String>,
}

/// One thing the reader hands down the pipeline, in walk order.
enum Step {
    /// Content of the file being read (hashed by the hashers).
    Chunks(Chunks),
    /// The chunks since the last `Done` belong to an abandoned read: they are not the entry's.
    Discard,
    /// The chunk ids of the file about to be read, as the trusted parent stored it: a chunk
    /// equal to the parent's at the same position is known stored without an index lookup.
    /// Shared with the entry's `prior_base` (a 1 GiB file's ids are 4 MiB: one copy, not two).
    Prior(Arc<Vec<BlobId>>),
    /// A finished entry.
    Done(Box<Finished>),
}

/// An entry ready for the manifest. When `read`, its chunk list is the chunks since the last
/// `Done`.
struct Finished {
    entry: Entry,
    parent: Option<ParentFile>,
    read: bool,
    /// For a file read again: the list blob its previous version was stored against, and
    /// that blob's ids (to store the new version as a patch).
    prior_base: Option<(BlobId, Arc<Vec<BlobId>>)>,
    /// The entry's CRC-32C is the combination of its chunks' (computed by the hashers, see
    /// [`Chunks::crc`]), filled in by the packer: the reader's placeholder is not it.
    crc_from_chunks: bool,
}

impl Finished {
    /// Sets the file checksum of the entry and of its parent-record line.
    fn set_sum(&mut self, sum: FileSum) {
        if let EntryKind::File { sum: entry_sum, .. } = &mut self.entry.kind {
            *entry_sum = sum;
        }
        if let Some(parent) = &mut self.parent {
            parent.sum = sum;
        }
    }
}

/// Consecutive chunks of one file in one buffer (one allocation per ~1 MiB, not per 8 KiB
/// page), with their ids once hashed.
#[derive(Default)]
struct Chunks {
    data: Vec<u8>,
    /// Where the first chunk starts in `data`: 0, or the first aligned address of a buffer a
    /// direct read filled ([`crate::dio`]).
    start: u32,
    ends: Vec<u32>,
    ids: Vec<BlobId>,
    /// The CRC-32C of the bytes from `start` on, when `wants_crc`: computed by a hasher beside
    /// the ids, so that the reading thread (one, and the one the disk waits for) does not.
    crc: u32,
    wants_crc: bool,
}

impl Chunks {
    /// Cuts `data` from `start` on into blocks of `block` bytes (the last may be shorter).
    // Invariant (also `push`): a batch is one read buffer of a few MiB.
    #[allow(clippy::expect_used)]
    fn blocks(data: Vec<u8>, start: usize, block: usize) -> Self {
        let len = u32::try_from(data.len()).expect("batches stay below 4 GiB");
        let start = u32::try_from(start).expect("batches stay below 4 GiB");
        let step = u32::try_from(block.max(1)).unwrap_or(u32::MAX);
        let ends = (1..=(len - start).div_ceil(step)).map(|i| (start + i * step).min(len)).collect();
        Self { data, start, ends, ids: Vec::new(), crc: 0, wants_crc: false }
    }

    #[allow(clippy::expect_used)]
    fn push(&mut self, chunk: &[u8]) {
        self.data.extend_from_slice(chunk);
        self.ends.push(u32::try_from(self.data.len()).expect("batches stay below 4 GiB"));
    }

    /// The bytes of the chunks, back to back.
    fn content(&self) -> &[u8] {
        &self.data[self.start as usize..]
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(self.start).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.data[start as usize..end as usize])
    }
}

struct Batch {
    seq: u64,
    steps: Vec<Step>,
}

/// How the reader stage reads.
pub struct ReadPlan<'a> {
    /// How each file (by relative path) is cut into chunks.
    pub chunking: &'a (dyn Fn(&str) -> Chunking + Sync),
    /// Re-check each file's metadata after reading it; a file that changed meanwhile is read
    /// again (up to 3 times) and otherwise reported unreadable, never stored torn (fs
    /// snapshots; a PostgreSQL base backup is made consistent by WAL replay instead).
    pub stable_reads: bool,
    /// Advanced by the bytes of each batch read and each file reused unchanged.
    pub progress: &'a crate::progress::Progress,
    /// The whole-file checksum new entries get (the repository format's: SHA-256 or CRC-32C),
    /// cloned fresh for each file.
    pub file_sum: super::FileSummer,
    /// Read fixed-block files with `O_DIRECT` where the filesystem allows it
    /// (`backup.direct_io`).
    pub direct_io: bool,
}

/// A walk: calls its argument with every entry, parents first, in walk order (see
/// [`walk_order`](super::parent::walk_order)); stops at the first error it returns.
pub type Walk = dyn FnOnce(&mut dyn FnMut(Found) -> Result<(), Error>) -> Result<(), Error> + Send;

/// The chunking of a PostgreSQL data directory: fixed blocks for relation files, CDC otherwise.
pub fn data_dir_chunking(options: &BackupConfig) -> impl Fn(&str) -> Chunking + Sync + use<> {
    let (block, chunk) = (options.block_size.as_usize(), options.chunk_size.as_usize());
    move |rel: &str| if is_relation_file(rel) { Chunking::Fixed(block) } else { Chunking::ContentDefined(chunk) }
}

/// The shared parts of a backup the reading stages need.
pub struct Stages<'a> {
    /// Every blob already in the repository.
    pub known: &'a BlobIndex,
    /// The keyed-id key.
    pub id_key: &'a IdKey,
    /// Chunking and packing settings.
    pub options: &'a BackupConfig,
    /// Where full packs go (the uploader).
    pub packs: &'a mpsc::Sender<PendingPack>,
    /// Pack buffers, recycled by the uploader.
    pub pool: &'a BufferPool,
}

/// Runs the walk and the reader, hasher, packer and entry-stream stages.
pub fn read_tree(
    walk: Box<Walk>,
    plan: ReadPlan<'_>,
    stages: &Stages<'_>,
    parent: Option<ParentReader>,
    next_parent: Option<ParentWriter>,
) -> Result<ReadOutcome, Error> {
    let hashers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let Stages { known, id_key, options, packs, pool } = *stages;
    let pack_size = options.pack_size.as_usize();
    std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = sync_channel::<Batch>(QUEUE);
        let batch_rx = Arc::new(Mutex::new(batch_rx));
        let (hashed_tx, hashed_rx) = sync_channel::<Batch>(QUEUE);
        for _ in 0..hashers {
            let batch_rx = Arc::clone(&batch_rx);
            let hashed_tx = hashed_tx.clone();
            scope.spawn(move || hash_batches(&batch_rx, &hashed_tx, id_key));
        }
        // Only the hashers hold the receiving end: once they are gone (the packer stopped), the
        // reader's send fails instead of waiting forever for a hasher.
        drop(batch_rx);
        drop(hashed_tx);
        let (free_tx, window) = sync_channel::<()>(BATCH_WINDOW);
        // Room for a batch from the first aligned address on (direct reads).
        let buffers = BufferPool::new(BATCH_BYTES + 2 * crate::dio::ALIGN);
        let returned = buffers.clone();
        for _ in 0..BATCH_WINDOW {
            let _ = free_tx.send(());
        }
        let (line_tx, line_rx) = sync_channel::<Vec<u8>>(QUEUE);
        let stream = scope.spawn(move || {
            entry_stream::store(line_rx, known, id_key, pack_size, packs, PackBuilder::new(pool.clone()))
        });
        let packer = scope.spawn(move || {
            let input = HashedBatches { batches: hashed_rx, window: free_tx, buffers: returned };
            pack_and_assemble(input, Packer::new(stages, &line_tx, next_parent))
        });
        let mut reader = Reader::new(plan, known, parent, batch_tx, BatchWindow { free: window, buffers }, packs);
        let walked = walk(&mut |found| reader.visit(found)).and_then(|()| reader.feeder.flush());
        let mut out = reader.finish();
        let packed = packer.join().map_err(|_| Error::Internal("packer thread panicked".into()))?;
        let stored = stream.join().map_err(|_| Error::Internal("entry stream thread panicked".into()))?;
        // A failing later stage makes the earlier ones fail too: report the cause first.
        let stored = stored?;
        let packed = packed?;
        walked?;
        out.new_bytes = packed.new_bytes;
        out.reused_bytes += packed.reused_bytes;
        out.entries = packed.entries;
        out.files = packed.files;
        out.next_parent = packed.next_parent;
        out.entry_chunks = stored.chunks;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_blocks_cover_a_batch_exactly() {
        for (len, block) in [(0usize, 8192usize), (1, 8192), (8192, 8192), (8193, 8192), (3 * 8192 + 5, 8192), (100, 1)]
        {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let chunks = Chunks::blocks(data.clone(), 0, block);
            let pieces: Vec<&[u8]> = chunks.iter().collect();
            assert_eq!(pieces.concat(), data, "{len} bytes in blocks of {block}");
            assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= block));
            assert_eq!(pieces.len(), len.div_ceil(block));
        }
    }
}
