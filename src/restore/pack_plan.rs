//! The pack plan of a restore: which packs hold the content of the files being restored, the
//! order they are read in, and where each of their blobs goes.
//!
//! A pack is sealed whole (one age stream over one zstd frame, see `snapshot::pack`), so no blob
//! can be read without decrypting and decompressing its entire pack; ranged reads of single
//! blobs would need another pack format. Writing files one after the other in manifest order
//! therefore reads a pack again whenever a later file needs it and it has left a small cache —
//! and the files of an incremental alternate between its parents' packs and its own, so a
//! restore after ten incrementals read the same packs over and over (129 s where the first full
//! snapshot of the same cluster took 1 s). Planned by pack, every pack is read once: each chunk
//! of every restored file becomes one [`Placement`] (24 bytes, no ids, no names), sorted by the
//! turn of its pack, then by file and offset, and the writer takes the packs one at a time and
//! puts each blob wherever the snapshot has it.
//!
//! Packs take their turns in the order the manifest first needs them: a file's packs are all
//! first needed by it or by a file before it, so files complete roughly in manifest order and
//! are verified while later packs are still being written.
//!
//! Memory: one placement per chunk of the restored files (24 bytes: a 500 MiB cluster of 8 KiB
//! blocks costs 1.5 MB, a 1 TiB one 3 GiB) plus 4 bytes per pack in the repository.

use super::Error;
use crate::crypto::Digest;
use crate::snapshot::BlobIndex;

/// One chunk of a restored file: where its bytes lie in a pack, and where they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placement {
    /// Turn of the pack holding the bytes (position in [`PackPlan::packs`]).
    pub turn: u32,
    /// Offset of the blob in the pack's plaintext.
    pub pack_offset: u32,
    /// Length of the blob.
    pub length: u32,
    /// Manifest entry (index in `entries`) whose file receives the bytes.
    pub file: u32,
    /// Where in that file the bytes go.
    pub file_offset: u64,
}

/// A pack to read, in its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PlannedPack {
    /// Position of the pack in [`BlobIndex::packs`].
    pub number: u32,
    /// The first manifest entry that needs it: named when the pack cannot be read.
    pub first_file: u32,
}

/// Every pack a restore reads, once each, and every chunk it writes.
#[derive(Debug, Default)]
pub(super) struct PackPlan {
    /// Packs in the order they are read (first use in manifest order); distinct.
    pub packs: Vec<PlannedPack>,
    /// Every chunk of every restored file, sorted by (turn, file, file offset).
    pub placements: Vec<Placement>,
    /// Chunks of each manifest entry (0 for entries restored without content).
    pub chunks: Vec<u32>,
}

fn too_many(path: &str) -> Error {
    Error::Io { what: "plan the restore of", path: path.into(), source: std::io::Error::other("more than 2^32 entries, or chunks in one file") }
}

impl PackPlan {
    /// Plans the restore of `files`: (manifest entry, its path, its chunk ids), for a manifest
    /// of `entries` entries.
    ///
    /// # Errors
    /// [`Error::MissingChunk`] for the first chunk no index knows, before anything is written.
    pub(super) fn new<'m>(index: &BlobIndex, entries: usize, files: impl IntoIterator<Item = (usize, &'m str, &'m [Digest])>) -> Result<Self, Error> {
        let files: Vec<(usize, &str, &[Digest])> = files.into_iter().collect();
        let mut plan = PackPlan {
            packs: Vec::new(),
            placements: Vec::with_capacity(files.iter().map(|f| f.2.len()).sum()),
            chunks: vec![0; entries],
        };
        let mut turn_of = vec![u32::MAX; index.packs.len()];
        for (entry, path, ids) in files {
            let file = u32::try_from(entry).map_err(|_| too_many(path))?;
            let mut file_offset = 0u64;
            for id in ids {
                let location = index.get(id).ok_or_else(|| Error::MissingChunk { chunk: id.to_string(), path: path.to_owned() })?;
                let turn = &mut turn_of[location.pack as usize];
                if *turn == u32::MAX {
                    *turn = u32::try_from(plan.packs.len()).map_err(|_| too_many(path))?;
                    plan.packs.push(PlannedPack { number: location.pack, first_file: file });
                }
                plan.placements.push(Placement { turn: *turn, pack_offset: location.offset, length: location.length, file, file_offset });
                file_offset += u64::from(location.length);
            }
            plan.chunks[entry] = u32::try_from(ids.len()).map_err(|_| too_many(path))?;
        }
        plan.placements.sort_unstable_by_key(|p| (p.turn, p.file, p.file_offset));
        Ok(plan)
    }

    /// Each pack in its turn with the chunks it serves (sorted by file and offset).
    pub(super) fn groups(&self) -> impl Iterator<Item = (PlannedPack, &[Placement])> {
        self.placements.chunk_by(|a, b| a.turn == b.turn).map(|group| (self.packs[group[0].turn as usize], group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{IndexFile, IndexPack};

    fn id(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    /// Three packs: "old" holds blobs 1..=4, "new" holds 5 and 6, "other" holds 7 (unused).
    fn index() -> BlobIndex {
        let pack = |name: &str, blobs: &[u8]| IndexPack {
            id: name.into(),
            blobs: blobs.iter().enumerate().map(|(i, &b)| (id(b), u32::try_from(i).unwrap() * 10, 10)).collect(),
        };
        BlobIndex::from_files([&IndexFile { packs: vec![pack("other", &[7]), pack("old", &[1, 2, 3, 4]), pack("new", &[5, 6])] }])
    }

    #[test]
    fn every_pack_once_in_first_use_order_with_every_chunk_placed() {
        let index = index();
        // Files alternate between the old and the new pack, as an incremental's do; entry 1 is
        // not restored, entry 3 repeats a chunk.
        let a = [id(1), id(5), id(2)];
        let c = [id(3), id(6), id(4), id(3)];
        let plan = PackPlan::new(&index, 4, [(0, "a", &a[..]), (2, "c", &c[..]), (3, "empty", &[][..])]).unwrap();
        let name = |p: PlannedPack| index.packs[p.number as usize].clone();
        assert_eq!(plan.packs.iter().map(|&p| name(p)).collect::<Vec<_>>(), ["old", "new"]);
        assert_eq!(plan.packs.iter().map(|p| p.first_file).collect::<Vec<_>>(), [0, 0]);
        assert_eq!(plan.chunks, [3, 0, 4, 0]);
        // (pack, [(file, file offset, pack offset)])
        type Groups = Vec<(String, Vec<(u32, u64, u32)>)>;
        let groups: Groups =
            plan.groups().map(|(p, g)| (name(p), g.iter().map(|x| (x.file, x.file_offset, x.pack_offset)).collect())).collect();
        assert_eq!(
            groups,
            [
                ("old".to_owned(), vec![(0, 0, 0), (0, 20, 10), (2, 0, 20), (2, 20, 30), (2, 30, 20)]),
                ("new".to_owned(), vec![(0, 10, 0), (2, 10, 10)]),
            ]
        );
    }

    #[test]
    fn a_chunk_no_index_knows_fails_the_plan_naming_the_file() {
        let ids = [id(1), id(9)];
        let err = PackPlan::new(&index(), 1, [(0, "base/1/1259", &ids[..])]).unwrap_err();
        assert!(matches!(&err, Error::MissingChunk { path, chunk } if path == "base/1/1259" && *chunk == id(9).to_string()), "{err}");
    }
}
