//! The packer stage and the uploader: puts the hashers' batches back in walk order and fills
//! packs with the chunks new to the repository; [`store_tree`] runs the reading stages with the
//! async uploader that seals and puts the packs.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use tokio::sync::mpsc;

use crate::config::BackupConfig;
use crate::crypto::{Digest, IdKey};
use crate::snapshot::Error;
use crate::snapshot::chunker::Chunking;
use crate::snapshot::entry_stream;
use crate::snapshot::manifest::{ChunkList, EntryKind, decode_os};
use crate::snapshot::pack::{BlobIndex, BufferPool, PackBuilder, PendingPack};
use crate::snapshot::parent::{ParentReader, ParentWriter, PendingParent};

use super::{BATCH_BYTES, Batch, Finished, ReadOutcome, ReadPlan, Stages, Step, Walk, read_tree};

/// What the packer stage produced.
pub(super) struct Assembled {
    pub(super) new_bytes: u64,
    pub(super) reused_bytes: u64,
    pub(super) entries: u64,
    pub(super) files: u64,
    pub(super) next_parent: Option<PendingParent>,
}

/// The packer stage: puts the hashers' batches back in walk order, packs new chunks, finishes
/// each entry with its chunk list and writes it to the entry stream and the next parent record.
pub(super) fn pack_and_assemble(
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
                                        let base = id_key.digest(&bytes);
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
) -> Result<(ReadOutcome, crate::snapshot::pack::UploadReport), Error> {
    let (tx, rx) = mpsc::channel::<PendingPack>(1);
    let pool = BufferPool::new(options.pack_size.as_usize() + options.pack_size.as_usize() / 2);
    let uploader = tokio::spawn(crate::snapshot::pack::upload_packs(
        repo.clone(),
        rx,
        (options.upload_concurrency, options.index_shard_blobs),
        pool.clone(),
        snapshot_id.to_owned(),
    ));
    // Abandoned (a cancelled backup): stop uploading, which stops the reading stages too.
    let _stop = crate::snapshot::pack::AbortOnDrop(uploader.abort_handle());
    let reader = {
        let id_key = repo.id_key.clone();
        let (options, progress) = (options.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            let plan = ReadPlan { chunking: &chunking, stable_reads, progress: &progress };
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
