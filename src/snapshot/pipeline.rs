//! The reading side of a backup as concurrent stages, so every core works:
//!
//! ```text
//! reader (1 thread): walk, read, cut chunks, file SHA-256 ──batches──► hashers (1 per core):
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

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::Error;
use super::FileSummer;
use super::chunker::{Chunking, for_each_chunk};
use super::entry_stream;
use super::manifest::{ChunkList, Entry, EntryKind, decode_os, encode_os};
use super::pack::{BlobIndex, BufferPool, PackBuilder, PendingPack};
use super::parent::{ParentFile, ParentReader, ParentWriter, PendingParent};
use super::walk::{Found, attrs, is_relation_file};
use crate::codec::read_full;
use crate::config::BackupConfig;
use crate::crypto::{Digest, IdKey};

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
    pub entry_chunks: Vec<Digest>,
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
    Prior(Vec<Digest>),
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
    prior_base: Option<(Digest, Vec<Digest>)>,
}

/// Consecutive chunks of one file in one buffer (one allocation per ~1 MiB, not per 8 KiB
/// page), with their ids once hashed.
#[derive(Default)]
struct Chunks {
    data: Vec<u8>,
    ends: Vec<u32>,
    ids: Vec<Digest>,
}

impl Chunks {
    /// Cuts `data` into blocks of `block` bytes (the last may be shorter).
    fn blocks(data: Vec<u8>, block: usize) -> Self {
        let len = u32::try_from(data.len()).expect("batches stay below 4 GiB");
        let step = u32::try_from(block.max(1)).unwrap_or(u32::MAX);
        let ends = (1..=len.div_ceil(step)).map(|i| (i * step).min(len)).collect();
        Self { data, ends, ids: Vec::new() }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.data.extend_from_slice(chunk);
        self.ends.push(u32::try_from(self.data.len()).expect("batches stay below 4 GiB"));
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.data[start as usize..end as usize])
    }
}

struct Batch {
    seq: u64,
    steps: Vec<Step>,
}

/// What the packer stage produced.
struct Assembled {
    new_bytes: u64,
    reused_bytes: u64,
    entries: u64,
    files: u64,
    next_parent: Option<PendingParent>,
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
    pub file_sum: FileSummer,
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
        let buffers = BufferPool::new(BATCH_BYTES);
        let returned = buffers.clone();
        for _ in 0..BATCH_WINDOW {
            let _ = free_tx.send(());
        }
        let (line_tx, line_rx) = sync_channel::<Vec<u8>>(QUEUE);
        let stream = scope.spawn(move || {
            entry_stream::store(line_rx, known, id_key, pack_size, packs, PackBuilder::new(pool.clone()))
        });
        let packer = scope.spawn(move || {
            pack_and_assemble(
                (hashed_rx, free_tx, returned),
                (known, id_key),
                (PackBuilder::new(pool.clone()), pack_size),
                packs,
                &line_tx,
                next_parent,
            )
        });
        let mut reader = Reader::new(plan, known, parent, batch_tx, (window, buffers), packs);
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

fn hash_batches(batches: &Mutex<Receiver<Batch>>, hashed: &SyncSender<Batch>, id_key: &IdKey) {
    loop {
        let batch = match batches.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut batch) = batch else { return };
        for step in &mut batch.steps {
            if let Step::Chunks(chunks) = step {
                chunks.ids = chunks.iter().map(|c| id_key.blob_id(c)).collect();
            }
        }
        if hashed.send(batch).is_err() {
            return;
        }
    }
}

/// The packer stage: puts the hashers' batches back in walk order, packs new chunks, finishes
/// each entry with its chunk list and writes it to the entry stream and the next parent record.
fn pack_and_assemble(
    (hashed, window, buffers): (Receiver<Batch>, SyncSender<()>, BufferPool),
    (known, id_key): (&BlobIndex, &IdKey),
    (mut pack, pack_size): (PackBuilder, usize),
    packs: &mpsc::Sender<PendingPack>,
    lines: &SyncSender<Vec<u8>>,
    mut next_parent: Option<ParentWriter>,
) -> Result<Assembled, Error> {
    let mut out = Assembled { new_bytes: 0, reused_bytes: 0, entries: 0, files: 0, next_parent: None };
    let mut waiting: BTreeMap<u64, Batch> = BTreeMap::new();
    let mut next_seq = 0u64;
    let mut current: Vec<Digest> = Vec::new();
    let mut prior: Vec<Digest> = Vec::new();
    let mut buffer: Vec<u8> = Vec::with_capacity(entry_stream::LINE_BUFFER + 4096);
    for batch in hashed {
        waiting.insert(batch.seq, batch);
        while let Some(batch) = waiting.remove(&next_seq) {
            next_seq += 1;
            let _ = window.send(());
            for step in batch.steps {
                match step {
                    Step::Chunks(chunks) => {
                        for (position, (data, id)) in (current.len()..).zip(chunks.iter().zip(&chunks.ids)) {
                            if prior.get(position) == Some(id) {
                                out.reused_bytes += data.len() as u64;
                            } else if pack.add_if_new(known, *id, data) {
                                out.new_bytes += data.len() as u64;
                                if pack.len() >= pack_size {
                                    pack.send_to(packs)?;
                                }
                            } else {
                                out.reused_bytes += data.len() as u64;
                            }
                        }
                        current.extend(chunks.ids);
                        if chunks.data.capacity() >= BATCH_BYTES {
                            buffers.put_filled(chunks.data);
                        }
                    }
                    Step::Discard => current.clear(),
                    Step::Prior(ids) => prior = ids,
                    Step::Done(finished) => {
                        prior.clear();
                        let Finished { mut entry, mut parent, read, prior_base } = *finished;
                        let ids = std::mem::take(&mut current);
                        if let (EntryKind::File { chunks, list, .. }, true) = (&mut entry.kind, read) {
                            if ids.len() >= ChunkList::MIN_CHUNKS {
                                // Large files: the ids go out of line, as a patch of the list
                                // the previous version used when few changed, else a new list.
                                let patched = prior_base.filter(|(base, _)| pack.knows(known, base)).and_then(
                                    |(base, base_ids)| {
                                        ChunkList::patch_of(base, &base_ids, &ids).map(|l| (l, base_ids))
                                    },
                                );
                                // The parent record keeps the base's ids only where they differ
                                // from the file's (empty: the same).
                                let (chunk_list, base_ids) = match patched {
                                    Some((l, base_ids)) if l.patch.is_empty() && base_ids.len() == ids.len() => {
                                        (l, Vec::new())
                                    }
                                    Some(found) => found,
                                    None => {
                                        let bytes = ChunkList::encode(&ids);
                                        let base = id_key.blob_id(&bytes);
                                        if pack.add_if_new(known, base, &bytes) && pack.len() >= pack_size {
                                            pack.send_to(packs)?;
                                        }
                                        (
                                            ChunkList {
                                                base,
                                                count: u32::try_from(ids.len()).unwrap_or(u32::MAX),
                                                patch: Vec::new(),
                                            },
                                            Vec::new(),
                                        )
                                    }
                                };
                                if let Some(file) = parent.as_mut() {
                                    file.base_chunks = base_ids;
                                    file.list = Some(chunk_list.clone());
                                    file.chunks.clone_from(&ids);
                                }
                                *list = Some(chunk_list);
                            } else {
                                if let Some(file) = parent.as_mut() {
                                    file.chunks.clone_from(&ids);
                                }
                                *chunks = ids;
                            }
                        }
                        if let (Some(file), Some(writer)) = (parent, next_parent.as_mut()) {
                            let rel = decode_os(&entry.path, entry.raw_path.as_ref());
                            if let Err(error) = writer.add(rel.as_bytes(), &file) {
                                tracing::warn!(error = %error, "cannot write the parent record: the next backup reads every file");
                                next_parent = None;
                            }
                        }
                        out.entries += 1;
                        out.files +=
                            u64::from(matches!(entry.kind, EntryKind::File { .. } | EntryKind::Hardlink { .. }));
                        entry_stream::push_line(&mut buffer, &entry);
                        if buffer.len() >= entry_stream::LINE_BUFFER {
                            lines
                                .send(std::mem::take(&mut buffer))
                                .map_err(|_| Error::Internal("entry stream stopped".into()))?;
                        }
                    }
                }
            }
        }
    }
    if !waiting.is_empty() {
        return Err(Error::Internal("a hashing stage stopped early".into()));
    }
    if !buffer.is_empty() {
        lines.send(buffer).map_err(|_| Error::Internal("entry stream stopped".into()))?;
    }
    if !pack.is_empty() {
        pack.send_to(packs)?;
    }
    out.next_parent = next_parent.and_then(|writer| {
        writer
            .finish()
            .map_err(|error| tracing::warn!(error = %error, "cannot write the parent record: the next backup reads every file"))
            .ok()
    });
    Ok(out)
}

/// Whether a file changed between two stats (size, mtime or ctime).
fn changed(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    (a.len(), a.mtime(), a.mtime_nsec(), a.ctime(), a.ctime_nsec())
        != (b.len(), b.mtime(), b.mtime_nsec(), b.ctime(), b.ctime_nsec())
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// Gathers steps into batches for the hashers.
struct Feeder {
    tx: SyncSender<Batch>,
    /// Free places in the [`BATCH_WINDOW`], handed back by the packer.
    window: Receiver<()>,
    /// Full-size batch buffers, handed back by the packer: fresh ones would each be mapped and
    /// page-faulted in anew (the allocator maps buffers this large).
    buffers: BufferPool,
    seq: u64,
    steps: Vec<Step>,
    bytes: usize,
    progress: crate::progress::Progress,
}

impl Feeder {
    fn push(&mut self, step: Step, bytes: usize) -> Result<(), Error> {
        self.steps.push(step);
        self.bytes += bytes;
        self.progress.advance(bytes as u64);
        if self.bytes >= BATCH_BYTES || self.steps.len() >= BATCH_STEPS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if self.steps.is_empty() {
            return Ok(());
        }
        let batch = Batch { seq: self.seq, steps: std::mem::take(&mut self.steps) };
        self.seq += 1;
        self.bytes = 0;
        self.window.recv().map_err(|_| Error::Internal("packing stage stopped".into()))?;
        self.tx.send(batch).map_err(|_| Error::Internal("hashing stage stopped".into()))
    }
}

/// The reader stage: turns each walked entry into steps (file content, then the entry).
struct Reader<'a> {
    plan: ReadPlan<'a>,
    known: &'a BlobIndex,
    parent: Option<ParentReader>,
    feeder: Feeder,
    out: ReadOutcome,
    /// Walk position of the next entry.
    found: usize,
    /// Entries sent so far (the index the next one gets in the manifest).
    entries: usize,
    /// Files with further names: walk position → manifest index.
    first_names: HashMap<usize, usize>,
    /// The uploader's channel: closed once it failed, which stops the walk at the next entry
    /// (also when nothing new would be packed to notice it).
    uploads: &'a mpsc::Sender<PendingPack>,
}

impl<'a> Reader<'a> {
    fn new(
        plan: ReadPlan<'a>,
        known: &'a BlobIndex,
        parent: Option<ParentReader>,
        tx: SyncSender<Batch>,
        (window, buffers): (Receiver<()>, BufferPool),
        uploads: &'a mpsc::Sender<PendingPack>,
    ) -> Self {
        let feeder =
            Feeder { tx, window, buffers, seq: 0, steps: Vec::new(), bytes: 0, progress: plan.progress.clone() };
        Self {
            plan,
            known,
            parent,
            feeder,
            uploads,
            out: ReadOutcome::default(),
            found: 0,
            entries: 0,
            first_names: HashMap::new(),
        }
    }

    fn finish(self) -> ReadOutcome {
        self.out
    }

    fn done(
        &mut self,
        entry: Entry,
        parent: Option<ParentFile>,
        read: bool,
        first_name_at: Option<usize>,
        prior_base: Option<(Digest, Vec<Digest>)>,
    ) -> Result<(), Error> {
        if let Some(position) = first_name_at {
            self.first_names.insert(position, self.entries);
        }
        self.entries += 1;
        self.feeder.push(Step::Done(Box::new(Finished { entry, parent, read, prior_base })), 0)
    }

    /// Reads a file cut into fixed blocks straight into batch buffers (one copy: the kernel's),
    /// feeding each batch to the file checksum as one piece; returns the bytes read.
    fn read_blocks(
        &mut self,
        mut file: std::fs::File,
        expected: u64,
        block: usize,
        sum: &mut FileSummer,
        path: &std::path::Path,
    ) -> Result<u64, Error> {
        // Whole blocks per batch, so blocks never straddle two batches.
        let batch = (BATCH_BYTES / block.max(1)).max(1) * block.max(1);
        let mut size = 0u64;
        loop {
            // Sized for what is left of the file; once that is read, one block more: end of file
            // for a file that did not grow, the next block of one that did (read to its end).
            let left = usize::try_from(expected.saturating_sub(size)).unwrap_or(usize::MAX);
            let want = if left == 0 { block.max(1) } else { batch.min(left) };
            // Full batches reuse buffers the packer handed back, still initialised from their
            // last use: no zero-fill and no fresh mapping (only a shorter last batch's tail is
            // zeroed again).
            let mut data = if want == batch { self.feeder.buffers.get() } else { Vec::new() };
            data.resize(want, 0);
            let n = read_full(&mut file, &mut data).map_err(|source| Error::Read { path: path.to_owned(), source })?;
            data.truncate(n);
            if n == 0 {
                return Ok(size);
            }
            sum.update(&data);
            size += n as u64;
            self.feeder.push(Step::Chunks(Chunks::blocks(data, block)), n)?;
            if n < want {
                return Ok(size);
            }
        }
    }

    fn visit(&mut self, found: Found) -> Result<(), Error> {
        if self.uploads.is_closed() {
            return Err(Error::Internal("pack uploader stopped".into()));
        }
        let position = self.found;
        self.found += 1;
        let mut meta = found.meta;
        let (mode, uid, gid, mtime, mtime_nsec) = attrs(&meta);
        let mut entry = Entry {
            path: found.rel.clone(),
            raw_path: found.raw.clone(),
            kind: EntryKind::Dir,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size: 0,
        };
        if let Some(target) = &found.link_target {
            let (target, raw_target) = encode_os(target);
            entry.kind = EntryKind::Symlink { target, raw_target };
            return self.done(entry, None, false, None, None);
        }
        if !meta.is_file() {
            return self.done(entry, None, false, None, None);
        }
        if let Some(first) = found.hardlink_of.and_then(|f| self.first_names.get(&f).copied()) {
            entry.kind = EntryKind::Hardlink { entry: first };
            entry.size = meta.len();
            return self.done(entry, None, false, None, None);
        }
        let first_name_at = (meta.nlink() > 1).then_some(position);
        let ino = meta.ino();
        let mtime_ns = nanos(meta.mtime(), meta.mtime_nsec());
        let ctime_ns = nanos(meta.ctime(), meta.ctime_nsec());
        let rel = decode_os(&found.rel, found.raw.as_ref());
        let known = self.known;
        let prior = self.parent.as_mut().and_then(|p| p.find(rel.as_bytes()));
        let unchanged = match (&prior, &self.parent) {
            (Some(p), Some(reader)) => reader.unchanged(p, meta.len(), mtime_ns, ctime_ns, ino, known),
            _ => false,
        };
        if let (Some(p), true) = (prior.as_ref(), unchanged) {
            self.out.files_unchanged += 1;
            self.out.total_bytes += p.size;
            self.out.reused_bytes += p.size;
            self.feeder.progress.advance(p.size);
            entry.size = p.size;
            let chunks = if p.list.is_some() { Vec::new() } else { p.chunks.clone() };
            entry.kind = EntryKind::File { sum: p.sum, chunks, list: p.list.clone() };
            return self.done(entry, prior, false, first_name_at, None);
        }
        if let (Some(p), Some(true)) = (&prior, self.parent.as_ref().map(ParentReader::trusted))
            && !p.chunks.is_empty()
        {
            self.feeder.push(Step::Prior(p.chunks.clone()), 0)?;
        }
        let prior_base = prior
            .and_then(|p| p.list.map(|l| (l.base, if p.base_chunks.is_empty() { p.chunks } else { p.base_chunks })));
        let chunking = (self.plan.chunking)(&found.rel);
        let attempts = if self.plan.stable_reads { 3 } else { 1 };
        let mut attempt = 0;
        let (sum, size) = loop {
            attempt += 1;
            let file = match std::fs::File::open(&found.path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()), // deleted meanwhile
                Err(e) if self.plan.stable_reads => {
                    tracing::warn!(path = %found.path.display(), error = %e, "cannot read file: snapshot will be partial");
                    self.out.unreadable.push(format!("{}: {e}", found.path.display()));
                    return Ok(());
                }
                Err(source) => return Err(Error::Read { path: found.path, source }),
            };
            let mut summer = self.plan.file_sum.clone();
            let size = match chunking {
                Chunking::Fixed(block) => self.read_blocks(file, meta.len(), block, &mut summer, &found.path)?,
                Chunking::ContentDefined(avg) => {
                    let mut size = 0u64;
                    let mut chunks = Chunks::default();
                    let expected = usize::try_from(meta.len()).unwrap_or(usize::MAX).min(BATCH_BYTES);
                    let feeder = &mut self.feeder;
                    for_each_chunk(
                        std::io::BufReader::with_capacity(1 << 20, file),
                        avg,
                        |data| {
                            summer.update(data);
                            size += data.len() as u64;
                            if chunks.data.capacity() == 0 {
                                chunks.data.reserve(expected.max(data.len()));
                            }
                            chunks.push(data);
                            if chunks.data.len() >= BATCH_BYTES {
                                let full = std::mem::take(&mut chunks);
                                let bytes = full.data.len();
                                feeder.push(Step::Chunks(full), bytes)?;
                            }
                            Ok(())
                        },
                        |source| Error::Read { path: found.path.clone(), source },
                    )?;
                    if !chunks.ends.is_empty() {
                        let bytes = chunks.data.len();
                        self.feeder.push(Step::Chunks(chunks), bytes)?;
                    }
                    size
                }
            };
            self.out.read_bytes += size;
            if !self.plan.stable_reads {
                break (summer.finish(), size);
            }
            match std::fs::symlink_metadata(&found.path) {
                Ok(after) if !changed(&meta, &after) && after.len() == size => break (summer.finish(), size),
                Ok(after) if attempt < attempts => {
                    tracing::warn!(path = %found.path.display(), attempt, "file changed while being read; reading it again");
                    self.feeder.push(Step::Discard, 0)?;
                    meta = after;
                }
                Ok(_) => {
                    tracing::warn!(path = %found.path.display(), "file kept changing while being read: snapshot will be partial");
                    self.out
                        .unreadable
                        .push(format!("{}: changed while being read ({attempts} attempts)", found.path.display()));
                    return self.feeder.push(Step::Discard, 0);
                }
                Err(_) => return self.feeder.push(Step::Discard, 0), // deleted meanwhile
            }
        };
        let (mode, uid, gid, mtime, mtime_nsec) = attrs(&meta);
        (entry.mode, entry.uid, entry.gid, entry.mtime, entry.mtime_nsec) = (mode, uid, gid, mtime, mtime_nsec);
        self.out.total_bytes += size;
        self.out.files_read += 1;
        entry.size = size;
        entry.kind = EntryKind::File { sum, chunks: Vec::new(), list: None };
        let (mtime_ns, ctime_ns) = (nanos(meta.mtime(), meta.mtime_nsec()), nanos(meta.ctime(), meta.ctime_nsec()));
        let parent =
            ParentFile { size, mtime_ns, ctime_ns, ino, sum, chunks: Vec::new(), list: None, base_chunks: Vec::new() };
        self.done(entry, Some(parent), true, first_name_at, prior_base)
    }
}

/// Runs the whole write side of snapshot `snapshot_id` up to (not including) its last index
/// object: the walk and the reading stages on blocking threads, sealing, uploading and full
/// index objects on the async runtime. Returns the read outcome and what was uploaded once
/// every pack is durable.
pub async fn store_tree(
    (repo, snapshot_id): (&crate::repository::Repository, &str),
    known: Arc<BlobIndex>,
    walk: Box<Walk>,
    chunking: impl Fn(&str) -> Chunking + Send + Sync + 'static,
    (stable_reads, progress): (bool, &crate::progress::Progress),
    parents: (Option<ParentReader>, Option<ParentWriter>),
    options: &BackupConfig,
) -> Result<(ReadOutcome, super::pack::UploadReport), Error> {
    let (tx, rx) = mpsc::channel::<PendingPack>(1);
    let pool = BufferPool::new(options.pack_size.as_usize() + options.pack_size.as_usize() / 2);
    let uploader = tokio::spawn(super::pack::upload_packs(
        repo.clone(),
        rx,
        (options.upload_concurrency, options.index_shard_blobs),
        pool.clone(),
        snapshot_id.to_owned(),
    ));
    // Abandoned (a cancelled backup): stop uploading, which stops the reading stages too.
    let _stop = super::pack::AbortOnDrop(uploader.abort_handle());
    let reader = {
        let (id_key, format) = (repo.id_key.clone(), repo.meta.format);
        let (options, progress) = (options.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            let file_sum = FileSummer::for_format(format);
            let plan = ReadPlan { chunking: &chunking, stable_reads, progress: &progress, file_sum };
            let stages = Stages { known: &known, id_key: &id_key, options: &options, packs: &tx, pool: &pool };
            read_tree(walk, plan, &stages, parents.0, parents.1)
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
    let mut random = [0u8; 4];
    rand::fill(&mut random[..]);
    format!("{}-{}", started.format("%Y%m%dT%H%M%S%3fZ"), hex::encode(random))
}

/// Writes the rest of the index (if any pack was new) and the encrypted manifest; returns the
/// bytes uploaded for them and the manifest's digest. The snapshot record, written after this by
/// the caller, is what commits the snapshot.
pub async fn write_index_and_manifest(
    repo: &crate::repository::Repository,
    snapshot_id: &str,
    (upload, shard_blobs): (&mut super::pack::UploadReport, usize),
    manifest: &super::manifest::Manifest,
) -> Result<(u64, Digest), Error> {
    use crate::repo::ObjectKey;
    upload.write_index(repo, snapshot_id, shard_blobs, true).await?;
    let json = serde_json::to_vec(manifest).expect("manifest serialises");
    let (_, digest, bytes) =
        repo.seal_put(crate::codec::ObjectKind::Manifest, &ObjectKey::Manifest(snapshot_id.to_owned()), json).await?;
    Ok((bytes, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_blocks_cover_a_batch_exactly() {
        for (len, block) in [(0usize, 8192usize), (1, 8192), (8192, 8192), (8193, 8192), (3 * 8192 + 5, 8192), (100, 1)]
        {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let chunks = Chunks::blocks(data.clone(), block);
            let pieces: Vec<&[u8]> = chunks.iter().collect();
            assert_eq!(pieces.concat(), data, "{len} bytes in blocks of {block}");
            assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= block));
            assert_eq!(pieces.len(), len.div_ceil(block));
        }
    }
}
