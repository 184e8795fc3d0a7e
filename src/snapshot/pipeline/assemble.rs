//! What commits a snapshot's content: new snapshot ids, and the last index object and the
//! manifest written once every pack is durable; and finishing each entry in the packer stage
//! (its chunk list, the next parent record, the entry-stream line).

use crate::crypto::Digest;
use crate::repo::BlobId;
use std::os::unix::ffi::OsStrExt;

use super::Finished;
use super::packer::Packer;
use crate::snapshot::Error;
use crate::snapshot::entry_stream;
use crate::snapshot::manifest::{ChunkList, Entry, EntryKind, decode_os};
use crate::snapshot::parent::ParentFile;

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
    upload: &mut crate::snapshot::pack::UploadReport,
    shard_blobs: usize,
    manifest: &crate::snapshot::manifest::Manifest,
) -> Result<(u64, Digest), Error> {
    use crate::repo::ObjectKey;
    upload.write_index(repo, snapshot_id, shard_blobs, true).await?;
    let json = serde_json::to_vec(manifest)
        .map_err(|e| Error::Internal(format!("serialising the manifest of snapshot {snapshot_id}: {e}")))?;
    let (_, digest, bytes) =
        repo.seal_put(crate::codec::ObjectKind::Manifest, &ObjectKey::Manifest(snapshot_id.to_owned()), json).await?;
    Ok((bytes, digest))
}

impl Packer<'_> {
    /// Finishes an entry with the chunk ids read for it (`ids`: inline, or for a large file as a
    /// chunk list) and writes it to the next parent record and the entry stream.
    pub(super) fn finish_entry(&mut self, finished: Finished, ids: Vec<BlobId>) -> Result<(), Error> {
        let Finished { mut entry, mut parent, read, prior_base, .. } = finished;
        if let (EntryKind::File { chunks, list, .. }, true) = (&mut entry.kind, read) {
            if ids.len() >= ChunkList::MIN_CHUNKS {
                let (chunk_list, base_ids) = self.chunk_list(&ids, prior_base)?;
                if let Some(file) = parent.as_mut() {
                    file.base_chunks = base_ids;
                    file.list = Some(chunk_list.clone());
                    // The entry keeps the list, not the ids: the record takes them.
                    file.chunks = ids;
                }
                *list = Some(chunk_list);
            } else {
                if let Some(file) = parent.as_mut() {
                    file.chunks.clone_from(&ids);
                }
                *chunks = ids;
            }
        }
        if let Some(file) = parent {
            self.record_parent(&entry, &file);
        }
        self.out.entries += 1;
        self.out.files += u64::from(matches!(entry.kind, EntryKind::File { .. } | EntryKind::Hardlink { .. }));
        entry_stream::push_line(&mut self.buffer, &entry);
        if self.buffer.len() >= entry_stream::LINE_BUFFER {
            self.lines
                .send(std::mem::take(&mut self.buffer))
                .map_err(|_| Error::Internal("entry stream stopped".into()))?;
        }
        Ok(())
    }

    /// A large file's chunk ids out of line: as a patch of the list the previous version used
    /// (`prior_base`) when few changed, else a new list, packed if not stored yet. Returns the
    /// list and the base's ids for the parent record, which keeps them only where they differ
    /// from the file's (empty: the same).
    fn chunk_list(
        &mut self,
        ids: &[BlobId],
        prior_base: Option<(BlobId, std::sync::Arc<Vec<BlobId>>)>,
    ) -> Result<(ChunkList, Vec<BlobId>), Error> {
        let patched = prior_base.filter(|(base, _)| self.pack.knows(self.known, base)).and_then(|(base, base_ids)| {
            // The packer dropped its share at the entry's end: this is the only one left.
            let base_ids = std::sync::Arc::try_unwrap(base_ids).unwrap_or_else(|shared| shared.as_ref().clone());
            ChunkList::patch_of(base, &base_ids, ids).map(|l| (l, base_ids))
        });
        Ok(match patched {
            Some((l, base_ids)) if l.patch.is_empty() && base_ids.len() == ids.len() => (l, Vec::new()),
            Some(found) => found,
            None => {
                let bytes = ChunkList::encode(ids);
                let base = BlobId::of(self.id_key, &bytes);
                if self.pack.add_if_new(self.known, base, &bytes) && self.pack.len() >= self.pack_size {
                    self.pack.send_to(self.packs)?;
                }
                (ChunkList { base, count: u32::try_from(ids.len()).unwrap_or(u32::MAX), patch: Vec::new() }, Vec::new())
            }
        })
    }

    /// Adds a file to the next parent record; a record that cannot be written is dropped (the
    /// next backup then reads every file).
    fn record_parent(&mut self, entry: &Entry, file: &ParentFile) {
        if let Some(writer) = self.next_parent.as_mut() {
            let rel = decode_os(&entry.path, entry.raw_path.as_ref());
            if let Err(error) = writer.add(rel.as_bytes(), file) {
                tracing::warn!(error = %error, "cannot write the parent record: the next backup reads every file");
                self.next_parent = None;
            }
        }
    }
}
