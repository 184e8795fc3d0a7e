//! The reader stage and the hashers: walks the tree, reads each file (again if it changed
//! meanwhile), cuts it into chunks with its checksum (SHA-256 or CRC-32C) and feeds batches of steps to the hashers,
//! which compute the keyed chunk ids.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::codec::read_full;
use crate::crypto::IdKey;
use crate::dio;
use crate::repo::BlobId;
use crate::snapshot::Error;
use crate::snapshot::chunker::{Chunking, for_each_chunk};
use crate::snapshot::manifest::{Entry, EntryKind, decode_os, encode_os};
use crate::snapshot::pack::{BlobIndex, BufferPool, PendingPack};
use crate::snapshot::parent::{ParentFile, ParentReader};
use crate::snapshot::walk::{Found, attrs};
use crate::snapshot::{FileSum, FileSummer};

use super::read_ahead::ReadAhead;
use super::{BATCH_BYTES, BATCH_STEPS, Batch, Chunks, Finished, ReadOutcome, ReadPlan, Step};

pub(super) fn hash_batches(batches: &Mutex<Receiver<Batch>>, hashed: &SyncSender<Batch>, id_key: &IdKey) {
    loop {
        let batch = match batches.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut batch) = batch else { return };
        for step in &mut batch.steps {
            if let Step::Chunks(chunks) = step {
                chunks.ids = chunks.iter().map(|c| BlobId::of(id_key, c)).collect();
                if chunks.wants_crc {
                    chunks.crc = crc32c::crc32c(chunks.content());
                }
            }
        }
        if hashed.send(batch).is_err() {
            return;
        }
    }
}

/// Feeds the next `chunks` of a file to its checksum: a SHA-256 here, in order; a CRC-32C is
/// left to the hashers ([`Chunks`]' `crc`), and the packer combines the pieces in order.
fn sum_chunks(sum: &mut FileSummer, chunks: &mut Chunks) {
    match sum {
        FileSummer::Sha256(_) => sum.update(chunks.content()),
        FileSummer::Crc32c(_) => chunks.wants_crc = true,
    }
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
/// The reader's end of the batch window: a place to take before sending each batch (so at
/// most [`BATCH_WINDOW`](super::BATCH_WINDOW) are in flight), and the full-size buffers the
/// packer hands back.
pub(super) struct BatchWindow {
    pub(super) free: Receiver<()>,
    pub(super) buffers: BufferPool,
}

pub(super) struct Feeder {
    tx: SyncSender<Batch>,
    /// Free places in the [`BATCH_WINDOW`](super::BATCH_WINDOW), handed back by the packer.
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

    pub(super) fn flush(&mut self) -> Result<(), Error> {
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
pub(super) struct Reader<'a> {
    plan: ReadPlan<'a>,
    known: &'a BlobIndex,
    parent: Option<ParentReader>,
    pub(super) feeder: Feeder,
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
    /// Threads reading large files ahead, started with the first such file.
    ahead: Option<ReadAhead>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        plan: ReadPlan<'a>,
        known: &'a BlobIndex,
        parent: Option<ParentReader>,
        tx: SyncSender<Batch>,
        BatchWindow { free: window, buffers }: BatchWindow,
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
            ahead: None,
        }
    }

    pub(super) fn finish(self) -> ReadOutcome {
        self.out
    }

    fn done(
        &mut self,
        entry: Entry,
        parent: Option<ParentFile>,
        read: bool,
        first_name_at: Option<usize>,
        prior_base: Option<(BlobId, Arc<Vec<BlobId>>)>,
    ) -> Result<(), Error> {
        if let Some(position) = first_name_at {
            self.first_names.insert(position, self.entries);
        }
        self.entries += 1;
        // A CRC-32C of a file read is its chunks', which the hashers computed.
        let crc_from_chunks = read && matches!(self.plan.file_sum, FileSummer::Crc32c(_));
        let finished = Finished { entry, parent, read, prior_base, crc_from_chunks };
        self.feeder.push(Step::Done(Box::new(finished)), 0)
    }

    /// Reads a file cut into fixed blocks straight into batch buffers (one copy: the kernel's,
    /// or none when `direct`: the device's, see [`crate::dio`]), feeding each batch to the
    /// file checksum as one piece; returns the bytes read.
    fn read_blocks(
        &mut self,
        mut file: std::fs::File,
        direct: bool,
        expected: u64,
        block: usize,
        sum: &mut FileSummer,
        path: &std::path::Path,
    ) -> Result<u64, Error> {
        let read_error = |source| Error::Read { path: path.to_owned(), source };
        // Whole blocks per batch, so blocks never straddle two batches (and, blocks being
        // multiples of 8 KiB, direct reads stay aligned).
        let batch = (BATCH_BYTES / block.max(1)).max(1) * block.max(1);
        if direct && expected >= 2 * batch as u64 {
            let mut ahead = match self.ahead.take() {
                Some(ahead) => ahead,
                None => ReadAhead::start().map_err(read_error)?,
            };
            let read = self.read_blocks_ahead(&mut ahead, Arc::new(file), expected, (block, batch), sum, path);
            ahead.discard();
            self.ahead = Some(ahead);
            return read;
        }
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
            let (start, n, at_end) = if direct {
                let read = dio::read_at(&file, &mut data, size, want).map_err(read_error)?;
                (read.start, read.len, read.at_end)
            } else {
                data.resize(want, 0);
                let n = read_full(&mut file, &mut data).map_err(read_error)?;
                data.truncate(n);
                (0, n, n < want)
            };
            if n == 0 {
                return Ok(size);
            }
            let mut chunks = Chunks::blocks(data, start, block);
            sum_chunks(sum, &mut chunks);
            size += n as u64;
            self.feeder.push(Step::Chunks(chunks), n)?;
            if at_end {
                return Ok(size);
            }
        }
    }

    /// [`Reader::read_blocks`] of a large file opened with `O_DIRECT`, with reads kept in
    /// flight ahead of the batches handed on ([`ReadAhead`]): as far ahead as the file's size
    /// at its stat; past that, one block at a time as `read_blocks` does (the end of a file
    /// that did not grow, or the rest of one that did).
    fn read_blocks_ahead(
        &mut self,
        ahead: &mut ReadAhead,
        file: Arc<std::fs::File>,
        expected: u64,
        (block, batch): (usize, usize),
        sum: &mut FileSummer,
        path: &std::path::Path,
    ) -> Result<u64, Error> {
        let read_error = |source| Error::Read { path: path.to_owned(), source };
        let (mut submitted, mut size) = (0u64, 0u64);
        loop {
            while ahead.has_room() && (submitted < expected || ahead.is_idle()) {
                let left = usize::try_from(expected.saturating_sub(submitted)).unwrap_or(usize::MAX);
                let want = if left == 0 { block.max(1) } else { batch.min(left) };
                let data = if want == batch { self.feeder.buffers.get() } else { Vec::new() };
                ahead.submit(&file, data, submitted, want).map_err(read_error)?;
                submitted += want as u64;
            }
            let Some(done) = ahead.next() else { return Ok(size) };
            // Every read but the file's last returns all it asked for (`want` is aligned), so
            // results follow each other without gaps.
            let (data, read) = done.map_err(read_error)?;
            if read.len == 0 {
                return Ok(size);
            }
            let mut chunks = Chunks::blocks(data, read.start, block);
            sum_chunks(sum, &mut chunks);
            size += read.len as u64;
            self.feeder.push(Step::Chunks(chunks), read.len)?;
            if read.at_end {
                return Ok(size);
            }
        }
    }

    pub(super) fn visit(&mut self, found: Found) -> Result<(), Error> {
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
        // The parent's ids, shared by the packer's comparison and the patch against the base.
        let prior = prior.map(|mut p| {
            let chunks = Arc::new(std::mem::take(&mut p.chunks));
            (p, chunks)
        });
        if let (Some((_, chunks)), Some(true)) = (&prior, self.parent.as_ref().map(ParentReader::trusted))
            && !chunks.is_empty()
        {
            self.feeder.push(Step::Prior(Arc::clone(chunks)), 0)?;
        }
        let prior_base = prior.and_then(|(p, chunks)| {
            p.list.map(|l| (l.base, if p.base_chunks.is_empty() { chunks } else { Arc::new(p.base_chunks) }))
        });
        let Some((sum, size)) = self.read_consistently(&found.rel, &found.path, &mut meta)? else { return Ok(()) };
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

    /// Reads the file `rel` at `path` (again when it changed meanwhile and `stable_reads` is set, up to
    /// 3 times) into chunks; returns its checksum and size, or `None` when the entry is left out:
    /// deleted meanwhile, or (stable reads) unreadable or never read consistently, which is
    /// reported in the outcome. `meta` ends as the metadata the content matches.
    fn read_consistently(
        &mut self,
        rel: &str,
        path: &std::path::Path,
        meta: &mut std::fs::Metadata,
    ) -> Result<Option<(FileSum, u64)>, Error> {
        let chunking = (self.plan.chunking)(rel);
        let attempts = if self.plan.stable_reads { 3 } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Fixed blocks (relation files) are read past the page cache where allowed.
            let direct =
                self.plan.direct_io && matches!(chunking, Chunking::Fixed(block) if block.is_multiple_of(dio::ALIGN));
            let opened = match direct.then(|| dio::open(path)) {
                Some(Ok(Some(file))) => Ok((file, true)),
                Some(Err(e)) => Err(e),
                Some(Ok(None)) | None => std::fs::File::open(path).map(|file| (file, false)),
            };
            let (file, direct) = match opened {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None), // deleted meanwhile
                Err(e) if self.plan.stable_reads => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read file: snapshot will be partial");
                    self.out.unreadable.push(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
                Err(source) => return Err(Error::Read { path: path.to_owned(), source }),
            };
            let mut summer = self.plan.file_sum.clone();
            let size = match chunking {
                Chunking::Fixed(block) => self.read_blocks(file, direct, meta.len(), block, &mut summer, path)?,
                Chunking::ContentDefined(avg) => self.read_chunks(file, meta.len(), avg, &mut summer, path)?,
            };
            self.out.read_bytes += size;
            if !self.plan.stable_reads {
                return Ok(Some((summer.finish(), size)));
            }
            match std::fs::symlink_metadata(path) {
                Ok(after) if !changed(meta, &after) && after.len() == size => return Ok(Some((summer.finish(), size))),
                Ok(after) if attempt < attempts => {
                    tracing::warn!(path = %path.display(), attempt, "file changed while being read; reading it again");
                    self.feeder.push(Step::Discard, 0)?;
                    *meta = after;
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "file kept changing while being read: snapshot will be partial");
                    self.out
                        .unreadable
                        .push(format!("{}: changed while being read ({attempts} attempts)", path.display()));
                    return self.feeder.push(Step::Discard, 0).map(|()| None);
                }
                Err(_) => return self.feeder.push(Step::Discard, 0).map(|()| None), // deleted meanwhile
            }
        }
    }

    /// Reads a file cut into content-defined chunks of `avg` bytes on average, hashing it with
    /// checksum as it goes and handing the chunks on in batches; returns the bytes read.
    fn read_chunks(
        &mut self,
        file: std::fs::File,
        expected_len: u64,
        avg: usize,
        sum: &mut FileSummer,
        path: &std::path::Path,
    ) -> Result<u64, Error> {
        let mut size = 0u64;
        let mut chunks = Chunks::default();
        let expected = usize::try_from(expected_len).unwrap_or(usize::MAX).min(BATCH_BYTES);
        let feeder = &mut self.feeder;
        for_each_chunk(
            std::io::BufReader::with_capacity(1 << 20, file),
            avg,
            |data| {
                size += data.len() as u64;
                if chunks.data.capacity() == 0 {
                    chunks.data.reserve(expected.max(data.len()));
                }
                chunks.push(data);
                if chunks.data.len() >= BATCH_BYTES {
                    let mut full = std::mem::take(&mut chunks);
                    sum_chunks(sum, &mut full);
                    let bytes = full.data.len();
                    feeder.push(Step::Chunks(full), bytes)?;
                }
                Ok(())
            },
            |source| Error::Read { path: path.to_owned(), source },
        )?;
        if !chunks.ends.is_empty() {
            let bytes = chunks.data.len();
            sum_chunks(sum, &mut chunks);
            self.feeder.push(Step::Chunks(chunks), bytes)?;
        }
        Ok(size)
    }
}
