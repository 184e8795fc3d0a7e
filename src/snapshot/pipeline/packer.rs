//! The packer stage and the uploader: puts the hashers' batches back in walk order and fills
//! packs with the chunks new to the repository; [`store_tree`] runs the reading stages with the
//! async uploader that seals and puts the packs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use tokio::sync::mpsc;

use crate::config::BackupConfig;
use crate::crypto::IdKey;
use crate::repo::BlobId;
use crate::snapshot::chunker::Chunking;
use crate::snapshot::entry_stream;
use crate::snapshot::pack::{BlobIndex, BufferPool, PackBuilder, PendingPack};
use crate::snapshot::parent::{ParentReader, ParentWriter, PendingParent};
use crate::snapshot::placed_crc::combine;
use crate::snapshot::{Error, FileSum};

use super::{BATCH_BYTES, Batch, Chunks, ReadOutcome, ReadPlan, Stages, Step, Walk, read_tree};

/// What the packer stage produced.
pub(super) struct Assembled {
    pub(super) new_bytes: u64,
    pub(super) reused_bytes: u64,
    pub(super) entries: u64,
    pub(super) files: u64,
    pub(super) next_parent: Option<PendingParent>,
}

/// The packer stage's state: the pack being filled and where full packs go, the chunk ids of
/// the entry being finished, the entry-stream lines not yet sent, the next parent record and
/// what the stage has produced so far.
pub(super) struct Packer<'a> {
    pub(super) pack: PackBuilder,
    pub(super) pack_size: usize,
    pub(super) known: &'a BlobIndex,
    pub(super) id_key: &'a IdKey,
    pub(super) packs: &'a mpsc::Sender<PendingPack>,
    /// Chunk ids of the entry being read (since the last `Done`).
    current: Vec<BlobId>,
    /// The trusted parent's chunk ids of the file being read.
    prior: Arc<Vec<BlobId>>,
    /// CRC-32C of the entry's chunks so far (combined from the hashers' per-batch ones).
    crc: u32,
    pub(super) buffer: Vec<u8>,
    pub(super) lines: &'a SyncSender<Vec<u8>>,
    pub(super) next_parent: Option<ParentWriter>,
    pub(super) out: Assembled,
}

/// The packer stage's input: the hashers' batches (in any order), and the batch window's end
/// that hands a place, and a full-size buffer, back to the reader for each batch consumed.
pub(super) struct HashedBatches {
    pub(super) batches: Receiver<Batch>,
    pub(super) window: SyncSender<()>,
    pub(super) buffers: BufferPool,
}

impl<'a> Packer<'a> {
    /// A packer filling packs of the backup's `pack_size` from its pool, sending entry-stream
    /// lines to `lines` and the files' block lists to `next_parent`.
    pub(super) fn new(stages: &Stages<'a>, lines: &'a SyncSender<Vec<u8>>, next_parent: Option<ParentWriter>) -> Self {
        Packer {
            pack: PackBuilder::new(stages.pool.clone()),
            pack_size: stages.options.pack_size.as_usize(),
            known: stages.known,
            id_key: stages.id_key,
            packs: stages.packs,
            current: Vec::new(),
            prior: Arc::default(),
            crc: 0,
            buffer: Vec::with_capacity(entry_stream::LINE_BUFFER + 4096),
            lines,
            next_parent,
            out: Assembled { new_bytes: 0, reused_bytes: 0, entries: 0, files: 0, next_parent: None },
        }
    }
}

/// The packer stage: puts the hashers' batches back in walk order, packs new chunks, finishes
/// each entry with its chunk list and writes it to the entry stream and the next parent record.
pub(super) fn pack_and_assemble(input: HashedBatches, mut packer: Packer<'_>) -> Result<Assembled, Error> {
    let HashedBatches { batches: hashed, window, buffers } = input;
    let mut waiting: BTreeMap<u64, Batch> = BTreeMap::new();
    let mut next_seq = 0u64;
    for batch in hashed {
        waiting.insert(batch.seq, batch);
        while let Some(batch) = waiting.remove(&next_seq) {
            next_seq += 1;
            let _ = window.send(());
            for step in batch.steps {
                match step {
                    Step::Chunks(chunks) => {
                        if chunks.wants_crc {
                            packer.crc = combine(packer.crc, chunks.crc, chunks.content().len() as u64);
                        }
                        packer.pack_chunks(&chunks)?;
                        packer.current.extend(chunks.ids);
                        if chunks.data.capacity() >= BATCH_BYTES {
                            buffers.put_filled(chunks.data);
                        }
                    }
                    Step::Discard => {
                        packer.current.clear();
                        packer.crc = 0;
                    }
                    Step::Prior(ids) => packer.prior = ids,
                    Step::Done(mut finished) => {
                        // Dropped, not cleared: the entry's patch base may share it.
                        packer.prior = Arc::default();
                        let crc = std::mem::take(&mut packer.crc);
                        if finished.crc_from_chunks {
                            finished.set_sum(FileSum::Crc32c(crc));
                        }
                        let ids = std::mem::take(&mut packer.current);
                        packer.finish_entry(*finished, ids)?;
                    }
                }
            }
        }
    }
    if !waiting.is_empty() {
        return Err(Error::Internal("a hashing stage stopped early".into()));
    }
    packer.finish()
}

impl Packer<'_> {
    /// Packs the chunks of `chunks` (the next ones of the entry being read) not stored yet,
    /// sending the pack on once full, and counts new and reused bytes. A chunk equal to the
    /// trusted parent's at the same position is known stored without an index lookup.
    fn pack_chunks(&mut self, chunks: &Chunks) -> Result<(), Error> {
        for (position, (data, id)) in (self.current.len()..).zip(chunks.iter().zip(&chunks.ids)) {
            if self.prior.get(position) == Some(id) {
                self.out.reused_bytes += data.len() as u64;
            } else if self.pack.add_if_new(self.known, *id, data) {
                self.out.new_bytes += data.len() as u64;
                if self.pack.len() >= self.pack_size {
                    self.pack.send_to(self.packs)?;
                }
            } else {
                self.out.reused_bytes += data.len() as u64;
            }
        }
        Ok(())
    }

    /// Sends the last entry-stream lines and the last pack, and closes the next parent record
    /// (a record that cannot be written only makes the next backup read every file).
    fn finish(mut self) -> Result<Assembled, Error> {
        if !self.buffer.is_empty() {
            self.lines.send(self.buffer).map_err(|_| Error::Internal("entry stream stopped".into()))?;
        }
        if !self.pack.is_empty() {
            self.pack.send_to(self.packs)?;
        }
        self.out.next_parent = self.next_parent.and_then(|writer| {
            writer
                .finish()
                .map_err(|error| tracing::warn!(error = %error, "cannot write the parent record: the next backup reads every file"))
                .ok()
        });
        Ok(self.out)
    }
}

/// The tree [`store_tree`] reads, and how.
pub struct Tree<C> {
    /// The entries, in walk order.
    pub walk: Box<Walk>,
    /// Fixed blocks or content-defined chunks, by path.
    pub chunking: C,
    /// See [`ReadPlan::stable_reads`].
    pub stable_reads: bool,
    /// The trusted parent's block lists (files unchanged since are not read).
    pub parent: Option<ParentReader>,
    /// Where this backup's block lists go, for the next one.
    pub next_parent: Option<ParentWriter>,
}

/// Runs the whole write side of snapshot `snapshot_id` up to (not including) its last index
/// object: the walk and the reading stages on blocking threads, sealing, uploading and full
/// index objects on the async runtime. Returns the read outcome and what was uploaded once
/// every pack is durable.
pub async fn store_tree<C: Fn(&str) -> Chunking + Send + Sync + 'static>(
    repo: &crate::repository::Repository,
    snapshot_id: &str,
    known: Arc<BlobIndex>,
    tree: Tree<C>,
    options: &BackupConfig,
    progress: &crate::progress::Progress,
) -> Result<(ReadOutcome, crate::snapshot::pack::UploadReport), Error> {
    let Tree { walk, chunking, stable_reads, parent, next_parent } = tree;
    let (tx, rx) = mpsc::channel::<PendingPack>(1);
    let pool = BufferPool::new(options.pack_size.as_usize() + options.pack_size.as_usize() / 2);
    let uploader = tokio::spawn(crate::snapshot::pack::upload_packs(
        repo.clone(),
        rx,
        options.upload_concurrency,
        options.index_shard_blobs,
        pool.clone(),
        snapshot_id.to_owned(),
    ));
    // Abandoned (a cancelled backup): stop uploading, which stops the reading stages too.
    let _stop = crate::snapshot::pack::AbortOnDrop(uploader.abort_handle());
    let reader = {
        let (id_key, format) = (repo.id_key.clone(), repo.meta.format);
        let (options, progress) = (options.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            let file_sum = crate::snapshot::FileSummer::for_format(format);
            let direct_io = options.direct_io;
            let plan = ReadPlan { chunking: &chunking, stable_reads, progress: &progress, file_sum, direct_io };
            let stages = Stages { known: &known, id_key: &id_key, options: &options, packs: &tx, pool: &pool };
            read_tree(walk, plan, &stages, parent, next_parent)
        })
    };
    let read = reader.await.map_err(|e| Error::Internal(e.to_string()))?;
    let upload = uploader.await.map_err(|e| Error::Internal(e.to_string()))?;
    // An uploader failure makes the reader fail too; report the root cause first.
    let upload = upload?;
    Ok((read?, upload))
}
