//! The blobs snapshots use, per pack, for `verify --read-data` to re-hash when it reads each
//! pack — kept on local disk, not in memory. Referenced ids go through an external sort, are
//! merged with the blob index's sorted table (giving each the location a restore would read),
//! sorted again by pack and written to an anonymous temporary file with one offset per pack
//! in memory; a pack's blobs are read back only when that pack is read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

use super::snapshots::BlobRef;
use crate::repo::BlobId;
use crate::snapshot::index::{ExternalSort, RUN_RECORDS, Record, ScratchError, scratch_dir};
use crate::snapshot::{self, BlobIndex, BlobLocation};

/// A used blob keyed by where it is: sorts by pack, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ByPack {
    pack: u32,
    offset: u32,
    length: u32,
    id: [u8; 32],
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl Record for ByPack {
    const SIZE: usize = 44;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pack.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.id);
    }
    fn get(bytes: &[u8]) -> Self {
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes[12..44]);
        ByPack { pack: u32_at(bytes, 0), offset: u32_at(bytes, 4), length: u32_at(bytes, 8), id }
    }
}

/// Ids some snapshot uses, collected in any order (duplicates welcome).
pub(super) struct UsedIds {
    ids: ExternalSort<BlobId>,
}

impl UsedIds {
    pub(super) fn new() -> Self {
        Self { ids: ExternalSort::new(&scratch_dir(), RUN_RECORDS) }
    }

    pub(super) fn push(&mut self, id: BlobId) -> Result<(), ScratchError> {
        self.ids.push(id)
    }

    /// Resolves every id through the index (ids it does not know were reported missing) and
    /// groups them by pack.
    pub(super) fn resolve(self, index: &BlobIndex) -> Result<WantedBlobs, snapshot::Error> {
        let mut by_pack = ExternalSort::<ByPack>::new(&scratch_dir(), RUN_RECORDS);
        let mut stored = index.blobs();
        let mut current = stored.next().transpose()?;
        let mut last = None;
        for id in self.ids.finish()? {
            let id = id?;
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            while let Some((stored_id, _)) = &current
                && *stored_id < id
            {
                current = stored.next().transpose()?;
            }
            if let Some((stored_id, l)) = &current
                && *stored_id == id
            {
                by_pack.push(ByPack { pack: l.pack, offset: l.offset, length: l.length, id: *id.as_bytes() })?;
            }
        }
        let dir = scratch_dir();
        let scratch = |source| ScratchError { dir: dir.clone(), source };
        let mut out = BufWriter::with_capacity(1 << 16, tempfile::tempfile_in(&dir).map_err(scratch)?);
        let mut starts = vec![0u64; index.packs.len() + 1];
        let mut bytes = Vec::with_capacity(ByPack::SIZE);
        for blob in by_pack.finish()? {
            let blob = blob?;
            bytes.clear();
            blob.put(&mut bytes);
            out.write_all(&bytes).map_err(scratch)?;
            if let Some(count) = starts.get_mut(blob.pack as usize + 1) {
                *count += 1;
            }
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let file = out.into_inner().map_err(|e| scratch(e.into_error()))?;
        let mut positions: HashMap<String, Vec<u32>> = HashMap::new();
        for (position, id) in (0u32..).zip(&index.packs) {
            positions.entry(id.clone()).or_default().push(position);
        }
        Ok(WantedBlobs { file: Some(file), starts, positions })
    }
}

/// The blobs snapshots use, by pack (see the module docs).
#[derive(Default)]
pub(super) struct WantedBlobs {
    file: Option<File>,
    /// Record number of each pack position's first blob (and the end).
    starts: Vec<u64>,
    positions: HashMap<String, Vec<u32>>,
}

impl WantedBlobs {
    /// The blobs snapshots use from pack `id`, in offset order per pack position.
    pub(super) fn of(&self, id: &str) -> Result<Vec<BlobRef>, ScratchError> {
        let (Some(file), Some(positions)) = (&self.file, self.positions.get(id)) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for &p in positions {
            let (start, end) = (self.starts[p as usize], self.starts[p as usize + 1]);
            let mut bytes = vec![0u8; usize::try_from((end - start) * ByPack::SIZE as u64).unwrap_or(0)];
            file.read_exact_at(&mut bytes, start * ByPack::SIZE as u64)
                .map_err(|source| ScratchError { dir: scratch_dir(), source })?;
            out.extend(bytes.chunks_exact(ByPack::SIZE).map(|b| {
                let blob = ByPack::get(b);
                (
                    BlobId::from_bytes(blob.id),
                    BlobLocation { pack: blob.pack, offset: blob.offset, length: blob.length },
                )
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{IndexFile, IndexPack};

    #[test]
    fn used_blobs_come_back_per_pack_once() {
        let id = |i: u32| BlobId::for_tests(&i.to_le_bytes());
        let pack = |name: &str, range: std::ops::Range<u32>| IndexPack {
            id: name.into(),
            blobs: range.map(|i| (id(i), i * 10, 10)).collect(),
        };
        let index = BlobIndex::from_files([
            &IndexFile { packs: vec![pack("a", 0..100), pack("b", 100..300)] },
            &IndexFile { packs: vec![pack("a", 0..100)] },
        ]);
        let mut used = UsedIds::new();
        for i in (0..250).chain(0..50).chain(1000..1010) {
            used.push(id(i)).unwrap();
        }
        let wanted = used.resolve(&index).unwrap();
        let a = wanted.of("a").unwrap();
        assert_eq!(a.len(), 100);
        assert!(a.iter().all(|(blob, l)| index.get(blob) == Some(*l)));
        assert!(a.windows(2).all(|w| w[0].1.offset < w[1].1.offset));
        assert_eq!(wanted.of("b").unwrap().len(), 150);
        assert!(wanted.of("c").unwrap().is_empty());
    }
}
