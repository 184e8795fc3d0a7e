//! Packs and indexes. New chunks are appended to a pack (`backup.pack_size`), each pack is
//! sealed as one object (one age header, one zstd frame) and uploaded create-only; the blob
//! tables of the packs a backup wrote go into index objects of at most `backup.index_shard_blobs`
//! blobs, each written only after all its packs are stored (so an index never points at a pack
//! that is not durable) and as soon as it is full (so memory does not grow with the backup).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::Error;
use crate::codec::ObjectKind;
use crate::crypto::Digest;
use crate::repo::{BlobId, ObjectKey, PutOutcome};
use crate::repository::Repository;

pub use super::index::{BlobIndex, BlobLocation, IndexFile, IndexPack};
pub use crate::repository::BufferPool;

/// Most ids a [`PackBuilder`] remembers (~2 MiB; 512 MiB of new 8 KiB blocks). 2^18 held
/// ~9 MiB once an incremental stored 2 GiB of new blocks, which one of 4 GB never does: the
/// peak RSS of an incremental then grew with the cluster (bench/scale.sh).
pub const PENDING_IDS: usize = 1 << 16;

/// Hashes the 128-bit id prefixes of [`PackBuilder`]'s pending set by folding them to 64 bits:
/// they are keyed hashes, uniform and beyond an attacker's choice already, so SipHash's work
/// (the default hasher, ~4% of a full backup's CPU) buys nothing.
#[derive(Debug, Default, Clone, Copy)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; any other input is still hashed, if slowly.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    #[allow(clippy::cast_possible_truncation)] // folding: both halves are kept, xored
    fn write_u128(&mut self, value: u128) {
        self.0 ^= (value as u64) ^ ((value >> 64) as u64);
    }
}

/// A pack being filled.
#[derive(Debug, Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    blobs: Vec<(BlobId, u32, u32)>,
    /// Ids added recently during this backup, by their first 128 bits (half the memory of
    /// whole ids; keyed hashes do not collide in 128 bits at any feasible number of chunks).
    /// Bounded ([`PENDING_IDS`]): once full it is emptied, so memory does not grow with the
    /// size of the backup; a blob seen again only after that is stored a second time (the
    /// index keeps one location per id, prune reclaims the other pack once unused), which for
    /// the blobs repeated often (zero pages) costs one copy per [`PENDING_IDS`] new blobs.
    pending: HashSet<u128, BuildHasherDefault<PrefixHasher>>,
    pool: BufferPool,
}

impl PackBuilder {
    /// A builder taking its buffers from `pool`.
    #[must_use]
    pub fn new(pool: BufferPool) -> Self {
        Self { pool, ..Self::default() }
    }

    fn short(id: &BlobId) -> u128 {
        let mut first = [0u8; 16];
        first.copy_from_slice(&id.as_bytes()[..16]);
        u128::from_le_bytes(first)
    }

    /// Whether `id` was already added during this backup (possibly in a pack still uploading).
    #[must_use]
    pub fn has(&self, id: &BlobId) -> bool {
        self.pending.contains(&Self::short(id))
    }

    /// Whether `id` is stored already or added during this backup.
    #[must_use]
    pub fn knows(&self, known: &BlobIndex, id: &BlobId) -> bool {
        self.has(id) || known.contains(id)
    }

    /// Appends a blob unless [`PackBuilder::knows`] it; returns whether it was added.
    pub fn add_if_new(&mut self, known: &BlobIndex, id: BlobId, data: &[u8]) -> bool {
        let new = !self.knows(known, &id);
        if new {
            self.add(id, data);
        }
        new
    }

    /// Appends a blob.
    // Invariant: a pack is flushed at `pack_size` (at most 1 GiB, checked at config load), and
    // a chunk or block is at most 64 MiB.
    #[allow(clippy::expect_used)]
    pub fn add(&mut self, id: BlobId, data: &[u8]) {
        let offset = u32::try_from(self.data.len()).expect("packs stay below 4 GiB");
        let length = u32::try_from(data.len()).expect("chunks stay below 4 GiB");
        if self.data.capacity() == 0 {
            self.data = self.pool.get();
        }
        self.data.extend_from_slice(data);
        self.blobs.push((id, offset, length));
        if self.pending.len() >= PENDING_IDS {
            self.pending.clear();
        }
        self.pending.insert(Self::short(&id));
    }

    /// Plaintext bytes in the current pack.
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the current pack is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Hands the current pack to the uploader (from a pipeline thread), leaving an empty one.
    pub fn send_to(&mut self, packs: &mpsc::Sender<PendingPack>) -> Result<(), Error> {
        packs.blocking_send(self.take()).map_err(|_| Error::Internal("pack uploader stopped".into()))
    }

    /// Takes the current pack's content, leaving an empty one (the pending set is kept).
    pub fn take(&mut self) -> PendingPack {
        PendingPack { data: std::mem::take(&mut self.data), blobs: std::mem::take(&mut self.blobs) }
    }
}

/// A full pack on its way to storage.
#[derive(Debug)]
pub struct PendingPack {
    data: Vec<u8>,
    blobs: Vec<(BlobId, u32, u32)>,
}

/// What the uploader produced.
#[derive(Debug, Default)]
pub struct UploadReport {
    /// Blob tables of stored packs not yet written to an index object.
    pub index: IndexFile,
    /// Index objects already written for this snapshot.
    pub index_objects: usize,
    /// Bytes written to storage.
    pub uploaded_bytes: u64,
}

/// The name of a snapshot's `n`th index object.
#[must_use]
pub fn index_name(snapshot_id: &str, n: usize) -> String {
    if n == 0 { snapshot_id.to_owned() } else { format!("{snapshot_id}.{n}") }
}

impl UploadReport {
    /// Writes the blob tables collected so far as index objects: every full shard, or with
    /// `all` the rest too. Called only with tables of durable packs, so an index never points
    /// at a pack that is not stored; the tables then leave memory, which no longer grows with
    /// the size of the backup. (Index objects of a backup that then fails point at packs no
    /// snapshot references: prune condemns and removes them like any unreferenced pack.)
    pub async fn write_index(
        &mut self,
        repo: &Repository,
        snapshot_id: &str,
        shard_blobs: usize,
        all: bool,
    ) -> Result<(), Error> {
        let shards = self.index.shards(shard_blobs);
        let write = if all { shards.len() } else { shards.len().saturating_sub(1) };
        let mut written_packs = 0;
        for packs in &shards[..write] {
            repo.put_record_bytes(
                &ObjectKey::Index(index_name(snapshot_id, self.index_objects)),
                &super::index::encode(packs),
            )
            .await?;
            self.index_objects += 1;
            written_packs += packs.len();
            if !all {
                crate::faults::crash_point("backup:index-object");
            }
        }
        self.index.packs.drain(..written_packs);
        Ok(())
    }
}

/// Aborts a task when dropped: a pipeline whose caller gave up stops its uploader, whose closed
/// channel then stops the stages feeding it.
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Seals and uploads packs from `rx` with at most `concurrency` in flight; returns once every
/// pack is durably stored, or with the first error (later packs are abandoned). Pack buffers go
/// back to `pool`. Full index objects of stored packs (`shard_blobs` blobs) are written under
/// `snapshot_id` on the way.
///
/// Of the packs in flight, at most one per core is being sealed: sealing is CPU work, storing
/// is waiting (an fsync'd local write, an S3 PUT). A pack being stored holds only its sealed
/// bytes, its plaintext buffer is back in `pool`: so more packs in flight than cores keep the
/// cores compressing while earlier packs wait for the disk or the network, for the memory of
/// compressed packs only (on the bench VM, 4 in flight instead of 2 took a full backup of a
/// 4.3 GB cluster from 8.5 s to 6.1–7.0 s).
pub async fn upload_packs(
    repo: Repository,
    mut rx: mpsc::Receiver<PendingPack>,
    concurrency: usize,
    shard_blobs: usize,
    pool: BufferPool,
    snapshot_id: String,
) -> Result<UploadReport, Error> {
    let limit = Arc::new(Semaphore::new(concurrency));
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let sealing = Arc::new(Semaphore::new(concurrency.min(cores)));
    let mut tasks: JoinSet<Result<(IndexPack, u64), Error>> = JoinSet::new();
    let mut report = UploadReport::default();
    let collect = |done: Result<Result<(IndexPack, u64), Error>, tokio::task::JoinError>,
                   report: &mut UploadReport|
     -> Result<(), Error> {
        let (pack, bytes) = done.map_err(|e| Error::Internal(e.to_string()))??;
        report.uploaded_bytes += bytes;
        report.index.packs.push(pack);
        Ok(())
    };
    loop {
        // Both permits before the next pack: a pack waiting for a core stays in the channel
        // (which holds one), not in memory beside the ones being sealed and stored.
        let permit = Arc::clone(&limit).acquire_owned().await.map_err(|e| Error::Internal(e.to_string()))?;
        let seal_permit = Arc::clone(&sealing).acquire_owned().await.map_err(|e| Error::Internal(e.to_string()))?;
        let Some(pack) = rx.recv().await else { break };
        while let Some(done) = tasks.try_join_next() {
            collect(done, &mut report)?;
        }
        if report.index.blob_count() >= 2 * shard_blobs {
            report.write_index(&repo, &snapshot_id, shard_blobs, false).await?;
        }
        let repo = repo.clone();
        let pool = pool.clone();
        tasks.spawn(async move {
            let _permit = permit;
            store_pack(&repo, pack, &pool, seal_permit).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        collect(done, &mut report)?;
    }
    Ok(report)
}

/// Seals `pack`, then gives up `seal_permit` (a core is free for the next pack) and stores it.
async fn store_pack(
    repo: &Repository,
    pack: PendingPack,
    pool: &BufferPool,
    seal_permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(IndexPack, u64), Error> {
    let PendingPack { data, blobs } = pack;
    let (id_key, recipients, level) = (repo.id_key.clone(), repo.recipients.clone(), repo.compression_level);
    let by_table = repo.meta.format >= 3;
    let table: Vec<(Digest, u32)> =
        if by_table { blobs.iter().map(|b| (b.0.digest(), b.2)).collect() } else { Vec::new() };
    let (sealed, data) = tokio::task::spawn_blocking(move || {
        let sealed = if by_table {
            // Format 3: named by its blob table, so the pack's bytes are not hashed a second time.
            let digest = crate::codec::blob_table_digest(&id_key, table.into_iter());
            crate::codec::seal_blob_table(&data, digest, &recipients, level, "new pack").map(|s| (s, digest))
        } else {
            crate::codec::seal(ObjectKind::Pack, &data, &id_key, &recipients, level, "new pack")
        };
        (sealed, data)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    drop(seal_permit);
    pool.put(data);
    let (sealed, digest) = sealed.map_err(crate::repository::Error::from)?;
    let id = digest.to_string();
    let key = ObjectKey::Pack(id.clone());
    let stored = sealed.len() as u64;
    let outcome = repo.put_new(&key, sealed.into()).await?;
    if outcome == PutOutcome::AlreadyExists && repo.object_digest(&key).await? != digest {
        return Err(Error::PackConflict { key: key.to_string() });
    }
    let uploaded = if outcome == PutOutcome::Created { stored } else { 0 };
    Ok((IndexPack { id, blobs }, uploaded))
}
