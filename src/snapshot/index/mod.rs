//! The blob index: where every stored blob is (pack, offset, length), built from every index
//! object of the repository and kept on the local disk, not in memory, so a backup, restore,
//! verify or prune holds the same memory whatever the repository's size and history.
//!
//! Loading fetches the index objects a few at a time ([`LOAD_CONCURRENCY`], in listing order
//! so pack numbers and the choice among duplicate blobs are the same on every load), feeds
//! their blobs to an external sort (sorted runs of ~5.5 MiB, k-way merged) and writes one
//! sorted table of unique ids to an anonymous temporary file under [`scratch_dir`] (`TMPDIR`,
//! else `/tmp`): 44 bytes a blob on disk, about 4 bytes per 32 blobs in memory (the fan-out
//! table, at most 16 MiB) plus the pack ids. A lookup is one positioned read of ~1.4 KiB; the
//! operating system's page cache keeps hot parts of the table in memory outside the process.
//! The table is rebuilt on every run (no cache to invalidate: the index objects are the truth,
//! and a build is one sequential pass at disk speed).

mod disk;
mod format;

use std::path::PathBuf;

use futures::{StreamExt, stream};

pub use disk::{Blob, BlobTable, ExternalSort, RUN_RECORDS, Record, ScratchError, Sorted};
pub use format::{BLOB_BYTES, DecodeError, IndexFile, IndexObject, IndexPack, MAGIC, encode, visit};

use super::Error;
use crate::repo::BlobId;
use crate::repo::ObjectKey;
use crate::repository::{self, BufferPool, RECORD_HEADER, Repository};

/// Index objects fetched at once while loading: enough to hide a store's latency (an object is
/// ~2.2 MiB, so four keep a link of 100 MB/s busy at 80 ms per request), few enough that the
/// objects in flight stay a small part of memory.
pub const LOAD_CONCURRENCY: usize = 4;

/// Capacity of the buffers index objects are read into: above the largest binary object
/// (~2.2 MiB) and above the allocator's mmap threshold (`main` sets 4 MiB), so each buffer is a
/// mapping of its own that goes back to the system when the load ends instead of staying behind
/// in the heap that the packs read later would have to grow past.
const INDEX_BUFFER: usize = 4 << 20 | 64 << 10;

/// Where the on-disk index and external sorts put their temporary files: `TMPDIR` or `/tmp`.
#[must_use]
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir()
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Index into [`BlobIndex::packs`].
    pub pack: u32,
    /// Offset in the pack's plaintext.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

/// All blobs known to the repository (see the module docs): a sorted table on disk, the pack
/// ids and which index object listed each pack in memory.
#[derive(Debug, Default)]
pub struct BlobIndex {
    /// Pack ids, referenced by position (a pack listed by two index objects has two).
    pub packs: Vec<String>,
    table: Option<BlobTable>,
    /// For each pack position, the position in `objects` of the index object listing it.
    pack_objects: Vec<u32>,
    /// Names of the index objects read, in listing order.
    objects: Vec<String>,
}

/// Why an index object could not be added: its payload does not decode, or the local sort
/// failed.
#[derive(Debug, thiserror::Error)]
enum AddError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Scratch(#[from] ScratchError),
}

/// Collects index objects into a [`BlobIndex`].
struct Builder {
    sort: ExternalSort<Blob>,
    index: BlobIndex,
    dir: PathBuf,
}

impl Builder {
    fn new() -> Self {
        let dir = scratch_dir();
        Self { sort: ExternalSort::new(&dir, RUN_RECORDS), index: BlobIndex::default(), dir }
    }

    /// Adds one index object's payload, its blobs going straight into the sort.
    fn add(&mut self, name: String, payload: &[u8]) -> Result<(), AddError> {
        let object_no = u32::try_from(self.index.objects.len()).unwrap_or(u32::MAX);
        let base = u32::try_from(self.index.packs.len()).unwrap_or(u32::MAX);
        let Self { sort, index, .. } = self;
        format::visit::<AddError>(
            payload,
            |packs, _| {
                index.pack_objects.extend(std::iter::repeat_n(object_no, packs.len()));
                index.packs.extend(packs);
            },
            |id, pack, offset, length| {
                Ok(sort.push(Blob { id: *id.as_bytes(), pack: base.saturating_add(pack), offset, length })?)
            },
        )?;
        self.index.objects.push(name);
        Ok(())
    }

    fn finish(self) -> Result<BlobIndex, ScratchError> {
        let Builder { sort, mut index, dir } = self;
        if !sort.is_empty() {
            let bound = sort.len();
            index.table = Some(BlobTable::write(&dir, sort.finish()?, bound)?);
        }
        Ok(index)
    }
}

fn location(blob: Blob) -> (BlobId, BlobLocation) {
    (BlobId::from_bytes(blob.id), BlobLocation { pack: blob.pack, offset: blob.offset, length: blob.length })
}

impl BlobIndex {
    /// Reads every index object in the repository (binary or the older JSON), a few at a
    /// time. A damaged object is an integrity error naming it.
    pub async fn load(repo: &Repository) -> Result<Self, Error> {
        let names = repo.list_index().await?.into_iter().map(|item| item.id);
        let buffers = BufferPool::new(INDEX_BUFFER);
        let mut fetched = stream::iter(names)
            .map(|name| {
                let buffers = &buffers;
                async move {
                    let body = repo.get_record_into(&ObjectKey::Index(name.clone()), buffers.get()).await?;
                    Ok::<_, Error>((name, body))
                }
            })
            .buffered(LOAD_CONCURRENCY);
        let mut builder = Builder::new();
        while let Some(next) = fetched.next().await {
            let (name, body) = next?;
            builder.add(name.clone(), &body[RECORD_HEADER..]).map_err(|e| match e {
                AddError::Decode(e) => Error::from(repository::Error::CorruptRecord {
                    key: ObjectKey::Index(name).to_string(),
                    reason: e.to_string(),
                }),
                AddError::Scratch(e) => Error::from(e),
            })?;
            buffers.put(body);
        }
        drop(fetched);
        let index = tokio::task::spawn_blocking(move || builder.finish())
            .await
            .map_err(|e| Error::Internal(format!("building the blob index: {e}")))??;
        tracing::debug!(
            blobs = index.len(),
            packs = index.packs.len(),
            objects = index.objects.len(),
            "blob index loaded"
        );
        Ok(index)
    }

    /// The index of index objects already in memory, for unit tests (the table still goes to
    /// [`scratch_dir`]).
    #[cfg(test)]
    #[must_use]
    pub fn from_files<'a>(files: impl IntoIterator<Item = &'a IndexFile>) -> Self {
        let mut builder = Builder::new();
        for (n, file) in files.into_iter().enumerate() {
            builder.add(format!("file-{n}"), &encode(&file.packs)).expect("temporary directory is writable");
        }
        builder.finish().expect("temporary directory is writable")
    }

    /// Location of a blob, if stored. A failed read of the local table is logged and answered
    /// `None` (a backup then stores the blob again; a restore or verify reports it missing).
    #[must_use]
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        match self.table.as_ref()?.get(id.as_bytes()) {
            Ok(found) => found.map(|blob| location(blob).1),
            Err(error) => {
                tracing::error!(error = %error, blob = %id, "cannot read the local blob index");
                None
            }
        }
    }

    /// Locations of many blobs at once, in the order asked. When they are many compared with
    /// the table (over 1 in 64 of its blobs), they are sorted and merged with one sequential
    /// read of the table instead of one positioned read each (a restore's chunk lists:
    /// hundreds of thousands of lookups become one pass at disk speed). A positioned read costs
    /// about as much as reading 100 blobs in sequence, hence the bound.
    pub fn get_many(&self, ids: &[BlobId]) -> Result<Vec<Option<BlobLocation>>, Error> {
        if ids.len().saturating_mul(64) < self.len() {
            return Ok(ids.iter().map(|id| self.get(id)).collect());
        }
        let mut order: Vec<u32> = (0..u32::try_from(ids.len())
            .map_err(|_| Error::Internal("more than 4 billion lookups at once".into()))?)
            .collect();
        order.sort_unstable_by_key(|&i| ids[i as usize]);
        let mut out = vec![None; ids.len()];
        let mut stored = self.blobs();
        let mut current = stored.next().transpose()?;
        for i in order {
            let id = ids[i as usize];
            while let Some((stored_id, _)) = &current
                && *stored_id < id
            {
                current = stored.next().transpose()?;
            }
            match &current {
                Some((stored_id, location)) if *stored_id == id => out[i as usize] = Some(*location),
                Some(_) => {}
                None => break,
            }
        }
        Ok(out)
    }

    /// Whether a blob is stored.
    #[must_use]
    pub fn contains(&self, id: &BlobId) -> bool {
        self.get(id).is_some()
    }

    /// Number of blobs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.as_ref().map_or(0, BlobTable::len)
    }

    /// Whether no blobs are known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every blob in id order with the location [`BlobIndex::get`] gives, read sequentially
    /// from the local table: what prune and verify merge sorted id lists against.
    pub fn blobs(&self) -> impl Iterator<Item = Result<(BlobId, BlobLocation), Error>> + '_ {
        self.table.iter().flat_map(BlobTable::iter).map(|blob| blob.map(location).map_err(Error::from))
    }

    /// Names of the index objects read, in listing order.
    #[must_use]
    pub fn objects(&self) -> &[String] {
        &self.objects
    }

    /// Position in [`BlobIndex::objects`] of the index object that listed pack position `pack`.
    #[must_use]
    pub fn object_of(&self, pack: u32) -> Option<usize> {
        self.pack_objects.get(pack as usize).map(|&o| o as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ids(n: usize, salt: u8) -> Vec<BlobId> {
        (0..n).map(|i| BlobId::for_tests(&[&i.to_le_bytes()[..], &[salt]].concat())).collect()
    }

    #[test]
    fn lookups_find_every_blob_and_nothing_else() {
        for n in [0, 1, 2, 3, 17, 1000, 70_000, 300_000] {
            let stored = ids(n, 1);
            let mut expected = HashMap::new();
            let packs: Vec<IndexPack> = stored
                .chunks(5000)
                .enumerate()
                .map(|(p, chunk)| IndexPack {
                    id: format!("pack{p}"),
                    blobs: chunk
                        .iter()
                        .enumerate()
                        .map(|(i, id)| (*id, u32::try_from(i).unwrap(), u32::try_from(p).unwrap()))
                        .collect(),
                })
                .collect();
            for (p, pack) in packs.iter().enumerate() {
                for &(id, offset, length) in &pack.blobs {
                    expected.insert(id, BlobLocation { pack: u32::try_from(p).unwrap(), offset, length });
                }
            }
            let index = BlobIndex::from_files([&IndexFile { packs }]);
            assert_eq!(index.len(), n);
            for (id, location) in &expected {
                assert_eq!(index.get(id), Some(*location), "blob of {n}");
            }
            assert!(ids(2000, 2).iter().all(|id| !index.contains(id)), "foreign ids are unknown with {n} blobs");
            let mut asked: Vec<BlobId> = stored.iter().rev().copied().chain(ids(50, 3)).collect();
            asked.extend(stored.iter().take(3));
            let many = index.get_many(&asked).unwrap();
            assert!(asked.iter().zip(&many).all(|(id, found)| expected.get(id).copied() == *found), "get_many of {n}");
            let few = index.get_many(&asked[..asked.len().min(5)]).unwrap();
            assert!(asked.iter().zip(&few).all(|(id, found)| expected.get(id).copied() == *found), "few of {n}");
            let listed: Vec<_> = index.blobs().collect::<Result<_, _>>().unwrap();
            assert_eq!(listed.len(), n);
            assert!(listed.iter().all(|(id, location)| expected.get(id) == Some(location)));
        }
        assert!(!BlobIndex::default().contains(&BlobId::from_bytes([0; 32])));
    }

    #[test]
    fn a_blob_in_two_packs_resolves_to_the_first_loaded() {
        let id = BlobId::for_tests(b"twice");
        let first = IndexFile { packs: vec![IndexPack { id: "a".into(), blobs: vec![(id, 5, 1)] }] };
        let second = IndexFile { packs: vec![IndexPack { id: "b".into(), blobs: vec![(id, 9, 1)] }] };
        let index = BlobIndex::from_files([&first, &second]);
        assert_eq!(index.len(), 1);
        let location = index.get(&id).unwrap();
        assert_eq!((index.packs[location.pack as usize].as_str(), location.offset), ("a", 5));
        assert_eq!(index.objects().len(), 2);
        assert_eq!(index.object_of(1), Some(1));
    }
}
