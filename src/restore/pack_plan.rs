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
//! Memory: one placement per chunk of the restored files (40 bytes) up to a bound
//! ([`Spill`]: 512 Ki placements, 20 MiB, by default); past it, sorted runs of placements go to
//! a temporary file beside the staging directory and are merged back while the writer takes
//! them (`spill`), so a 1 TiB cluster plans in the same memory as a 10 GiB one. Packs whose
//! blobs serve more than [`MAX_GROUP`] chunks (a block deduplicated many times) are handed out
//! in several groups, each reading the pack again. Plus 4 bytes per pack in the repository and
//! per manifest entry.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::Error;
use super::spill::{self, Merge, Runs};
use crate::repo::BlobId;
use crate::snapshot::BlobIndex;

/// Placements held in memory by default before the plan spills to disk.
pub(super) const DEFAULT_SPILL_PLACEMENTS: usize = 1 << 19;
/// Most placements handed to the writer with one pack.
pub(super) const MAX_GROUP: usize = 1 << 18;
/// Environment variable overriding [`DEFAULT_SPILL_PLACEMENTS`] (a test and tuning knob: tests
/// force the spill with a small value; read once per process).
pub(super) const SPILL_ENV: &str = "RADD_RESTORE_SPILL_PLACEMENTS";

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
    /// The first 128 bits of the blob's id, which the bytes are checked against before they
    /// are written (format 3, whose file checksums are not cryptographic; a keyed hash cut to
    /// 128 bits is as hard to forge as a Poly1305 tag).
    pub id_prefix: [u8; 16],
}

impl Placement {
    /// The first 128 bits of a blob id, as [`Placement::id_prefix`] holds them.
    #[must_use]
    pub fn prefix_of(id: &BlobId) -> [u8; 16] {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&id.as_bytes()[..16]);
        prefix
    }
}

/// A pack to read, in its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PlannedPack {
    /// Position of the pack in [`BlobIndex::packs`].
    pub number: u32,
    /// The first manifest entry that needs it: named when the pack cannot be read.
    pub first_file: u32,
}

/// Where placements past the memory bound go.
#[derive(Debug, Clone)]
pub(super) struct Spill {
    /// Directory of the temporary file.
    pub dir: PathBuf,
    /// Placements held in memory before a run is written.
    pub bound: usize,
}

impl Spill {
    /// Spills into `dir` past [`SPILL_ENV`] placements, or [`DEFAULT_SPILL_PLACEMENTS`].
    pub(super) fn in_dir(dir: &Path) -> Self {
        static BOUND: OnceLock<usize> = OnceLock::new();
        let bound = *BOUND.get_or_init(|| match std::env::var(SPILL_ENV) {
            Ok(value) => value.trim().parse::<usize>().ok().filter(|&n| n > 0).unwrap_or_else(|| {
                tracing::warn!(value, "{SPILL_ENV} is not a positive number; using the default");
                DEFAULT_SPILL_PLACEMENTS
            }),
            Err(_) => DEFAULT_SPILL_PLACEMENTS,
        });
        Self { dir: dir.to_owned(), bound }
    }

    /// Never spills (tests of the plan's content).
    #[cfg(test)]
    pub(super) fn never() -> Self {
        Self { dir: PathBuf::from("/nonexistent"), bound: usize::MAX }
    }
}

/// The placements of a plan: all in memory, sorted, or merged from sorted runs on disk.
enum Placements {
    Memory(std::vec::IntoIter<Placement>),
    Spilled(Box<Merge>),
}

impl Placements {
    fn next(&mut self) -> Result<Option<Placement>, Error> {
        match self {
            Placements::Memory(all) => Ok(all.next()),
            Placements::Spilled(merge) => merge.next(),
        }
    }
}

/// Every pack a restore reads, once each (see [`MAX_GROUP`]), and every chunk it writes.
pub(super) struct PackPlan {
    /// Packs in the order they are read (first use in manifest order); distinct.
    pub packs: Vec<PlannedPack>,
    /// Chunks of each manifest entry (0 for entries restored without content).
    pub chunks: Vec<u32>,
    /// Every chunk of every restored file, in (turn, file, file offset) order.
    placements: Placements,
    /// The next placement, read ahead to find the end of a group.
    peeked: Option<Placement>,
    /// Sorted runs written to disk (0: the plan fit in memory).
    pub runs: usize,
}

fn too_many(path: &str) -> Error {
    Error::Io {
        what: "plan the restore of",
        path: path.into(),
        source: std::io::Error::other("more than 2^32 entries, or chunks in one file"),
    }
}

/// A [`PackPlan`] being built one file at a time, so that a caller reading each file's chunk
/// ids from the repository holds only that file's.
pub(super) struct PlanBuilder<'a> {
    index: &'a BlobIndex,
    spill: &'a Spill,
    packs: Vec<PlannedPack>,
    chunks: Vec<u32>,
    buffer: Vec<Placement>,
    runs: Option<Runs>,
    turn_of: Vec<u32>,
    /// Chunk ids of the files added since the last lookup, in order.
    pending_ids: Vec<BlobId>,
    /// Those files: manifest entry, path, number of ids.
    pending_files: Vec<(u32, String, usize)>,
}

/// Chunk ids looked up in the index at once (8 MiB of ids). One pass over the index's table for
/// a batch costs far less than one positioned read per chunk (~3 µs each: 0.4 s per GB of a
/// cluster, before the first pack could be fetched).
const LOOKUP_BATCH: usize = 1 << 18;
/// Files whose ids are looked up at once (bounds the paths held for errors).
const LOOKUP_FILES: usize = 1 << 14;

impl<'a> PlanBuilder<'a> {
    /// An empty plan for a manifest of `entries` entries.
    pub(super) fn new(index: &'a BlobIndex, entries: usize, spill: &'a Spill) -> Self {
        PlanBuilder {
            index,
            spill,
            packs: Vec::new(),
            chunks: vec![0; entries],
            buffer: Vec::new(),
            runs: None,
            turn_of: vec![u32::MAX; index.packs.len()],
            pending_ids: Vec::new(),
            pending_files: Vec::new(),
        }
    }

    /// Adds the file of manifest entry `entry` (at `path`) with its chunk ids; they are looked
    /// up with the next files' (see [`LOOKUP_BATCH`]).
    ///
    /// # Errors
    /// [`Error::MissingChunk`] for the first chunk no index knows, before anything is written
    /// (here or from [`PlanBuilder::finish`]); a failure to read the index or write the
    /// temporary file.
    pub(super) fn add(&mut self, entry: usize, path: &str, ids: &[BlobId]) -> Result<(), Error> {
        let file = u32::try_from(entry).map_err(|_| too_many(path))?;
        self.chunks[entry] = u32::try_from(ids.len()).map_err(|_| too_many(path))?;
        self.pending_ids.extend_from_slice(ids);
        self.pending_files.push((file, path.to_owned(), ids.len()));
        if self.pending_ids.len() >= LOOKUP_BATCH || self.pending_files.len() >= LOOKUP_FILES {
            self.resolve()?;
        }
        Ok(())
    }

    /// Looks up the pending files' chunks (one batch, see [`LOOKUP_BATCH`]) and places them, in
    /// the order the files were added (which gives the packs their turns).
    fn resolve(&mut self) -> Result<(), Error> {
        let locations = self.index.get_many(&self.pending_ids)?;
        let mut next = self.pending_ids.iter().zip(locations);
        for (file, path, count) in std::mem::take(&mut self.pending_files) {
            let mut file_offset = 0u64;
            for (id, location) in next.by_ref().take(count) {
                let location =
                    location.ok_or_else(|| Error::MissingChunk { chunk: id.to_string(), path: path.clone() })?;
                let turn = &mut self.turn_of[location.pack as usize];
                if *turn == u32::MAX {
                    *turn = u32::try_from(self.packs.len()).map_err(|_| too_many(&path))?;
                    self.packs.push(PlannedPack { number: location.pack, first_file: file });
                }
                if self.buffer.len() >= self.spill.bound {
                    match &mut self.runs {
                        Some(runs) => runs.push(&mut self.buffer)?,
                        None => self.runs.insert(Runs::new(&self.spill.dir)?).push(&mut self.buffer)?,
                    }
                }
                self.buffer.push(Placement {
                    turn: *turn,
                    pack_offset: location.offset,
                    length: location.length,
                    file,
                    file_offset,
                    id_prefix: Placement::prefix_of(id),
                });
                file_offset += u64::from(location.length);
            }
        }
        self.pending_ids.clear();
        Ok(())
    }

    /// The plan: placements sorted in memory, or merged back from the runs on disk.
    ///
    /// # Errors
    /// A failure to write or reopen the temporary file.
    pub(super) fn finish(mut self) -> Result<PackPlan, Error> {
        self.resolve()?;
        let PlanBuilder { packs, chunks, mut buffer, runs, .. } = self;
        let (placements, runs) = match runs {
            None => {
                buffer.sort_unstable_by_key(spill::key);
                (Placements::Memory(buffer.into_iter()), 0)
            }
            Some(mut runs) => {
                if !buffer.is_empty() {
                    runs.push(&mut buffer)?;
                }
                drop(buffer);
                let count = runs.len();
                tracing::debug!(runs = count, "restore plan spilled to disk");
                (Placements::Spilled(Box::new(runs.merge()?)), count)
            }
        };
        Ok(PackPlan { packs, chunks, placements, peeked: None, runs })
    }
}

impl PackPlan {
    /// Plans the restore of `files`: (manifest entry, its path, its chunk ids), for a manifest
    /// of `entries` entries, spilling placements past `spill.bound` into `spill.dir`.
    ///
    /// # Errors
    /// As [`PlanBuilder::add`] and [`PlanBuilder::finish`].
    #[cfg(test)]
    pub(super) fn new<'m>(
        index: &BlobIndex,
        entries: usize,
        files: impl IntoIterator<Item = (usize, &'m str, &'m [BlobId])>,
        spill: &Spill,
    ) -> Result<Self, Error> {
        let mut builder = PlanBuilder::new(index, entries, spill);
        for (entry, path, ids) in files {
            builder.add(entry, path, ids)?;
        }
        builder.finish()
    }

    /// The next pack in its turn with (at most [`MAX_GROUP`] of) the chunks it serves, sorted
    /// by file and offset, into `group` (cleared first); `None` after the last.
    ///
    /// # Errors
    /// When a spilled run cannot be read back.
    pub(super) fn next_group(&mut self, group: &mut Vec<Placement>) -> Result<Option<PlannedPack>, Error> {
        group.clear();
        let first = match self.peeked.take() {
            Some(p) => p,
            None => match self.placements.next()? {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        group.push(first);
        while group.len() < MAX_GROUP {
            match self.placements.next()? {
                Some(p) if p.turn == first.turn => group.push(p),
                next => {
                    self.peeked = next;
                    break;
                }
            }
        }
        Ok(Some(self.packs[first.turn as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{IndexFile, IndexPack};

    fn id(n: u8) -> BlobId {
        BlobId::for_tests(&[n])
    }

    fn groups(plan: &mut PackPlan) -> Vec<(PlannedPack, Vec<Placement>)> {
        let mut out = Vec::new();
        let mut group = Vec::new();
        while let Some(pack) = plan.next_group(&mut group).unwrap() {
            out.push((pack, group.clone()));
        }
        out
    }

    /// Three packs: "old" holds blobs 1..=4, "new" holds 5 and 6, "other" holds 7 (unused).
    fn index() -> BlobIndex {
        let pack = |name: &str, blobs: &[u8]| IndexPack {
            id: name.into(),
            blobs: blobs.iter().enumerate().map(|(i, &b)| (id(b), u32::try_from(i).unwrap() * 10, 10)).collect(),
        };
        BlobIndex::from_files([&IndexFile {
            packs: vec![pack("other", &[7]), pack("old", &[1, 2, 3, 4]), pack("new", &[5, 6])],
        }])
    }

    #[test]
    fn every_pack_once_in_first_use_order_with_every_chunk_placed() {
        let index = index();
        // Files alternate between the old and the new pack, as an incremental's do; entry 1 is
        // not restored, entry 3 repeats a chunk.
        let a = [id(1), id(5), id(2)];
        let c = [id(3), id(6), id(4), id(3)];
        let mut plan =
            PackPlan::new(&index, 4, [(0, "a", &a[..]), (2, "c", &c[..]), (3, "empty", &[][..])], &Spill::never())
                .unwrap();
        let name = |p: PlannedPack| index.packs[p.number as usize].clone();
        assert_eq!(plan.packs.iter().map(|&p| name(p)).collect::<Vec<_>>(), ["old", "new"]);
        assert_eq!(plan.packs.iter().map(|p| p.first_file).collect::<Vec<_>>(), [0, 0]);
        assert_eq!(plan.chunks, [3, 0, 4, 0]);
        // (pack, [(file, file offset, pack offset)])
        type Groups = Vec<(String, Vec<(u32, u64, u32)>)>;
        let groups: Groups = groups(&mut plan)
            .into_iter()
            .map(|(p, g)| (name(p), g.iter().map(|x| (x.file, x.file_offset, x.pack_offset)).collect()))
            .collect();
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
        let err = PackPlan::new(&index(), 1, [(0, "base/1/1259", &ids[..])], &Spill::never()).err().unwrap();
        assert!(
            matches!(&err, Error::MissingChunk { path, chunk } if path == "base/1/1259" && *chunk == id(9).to_string()),
            "{err}"
        );
    }

    /// Many files over many packs, blobs repeated: spilled after every few placements, the plan
    /// hands out exactly the groups, in exactly the order, of the plan kept in memory.
    #[test]
    fn a_spilled_plan_hands_out_what_the_plan_in_memory_does() {
        let blobs: Vec<u8> = (0..=255).collect();
        let packs: Vec<IndexPack> = blobs
            .chunks(16)
            .enumerate()
            .map(|(p, part)| IndexPack {
                id: format!("pack{p}"),
                blobs: part
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| (id(b), u32::try_from(i).unwrap() * 100, 100 + u32::from(b)))
                    .collect(),
            })
            .collect();
        let index = BlobIndex::from_files([&IndexFile { packs }]);
        // 300 files of 0..40 chunks each, picked all over the packs (and repeating).
        let files: Vec<Vec<BlobId>> = (0..300u32)
            .map(|f| (0..(f * 7) % 41).map(|c| id(u8::try_from((f * 31 + c * 17) % 256).unwrap())).collect())
            .collect();
        let names: Vec<String> = (0..files.len()).map(|f| format!("f{f}")).collect();
        let input = || files.iter().enumerate().map(|(f, ids)| (f, names[f].as_str(), &ids[..]));
        let mut memory = PackPlan::new(&index, files.len(), input(), &Spill::never()).unwrap();
        assert_eq!(memory.runs, 0);
        let expected = groups(&mut memory);
        assert_eq!(expected.iter().map(|g| g.1.len()).sum::<usize>(), files.iter().map(Vec::len).sum::<usize>());
        let dir = tempfile::tempdir().unwrap();
        for bound in [1, 7, 1000] {
            let mut spilled =
                PackPlan::new(&index, files.len(), input(), &Spill { dir: dir.path().to_owned(), bound }).unwrap();
            assert!(spilled.runs > 1, "bound {bound} spills: {} runs", spilled.runs);
            assert_eq!(spilled.packs, memory.packs);
            assert_eq!(spilled.chunks, memory.chunks);
            assert_eq!(groups(&mut spilled), expected, "bound {bound}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spill file has no name to leave behind");
    }

    #[test]
    fn a_pack_serving_more_than_a_group_is_handed_out_in_several() {
        let index = index();
        let ids = vec![id(1); MAX_GROUP + 5];
        let mut plan = PackPlan::new(&index, 1, [(0, "zeros", &ids[..])], &Spill::never()).unwrap();
        let sizes: Vec<(u32, usize)> = groups(&mut plan).iter().map(|(p, g)| (p.number, g.len())).collect();
        assert_eq!(sizes.len(), 2);
        assert_eq!((sizes[0].1, sizes[1].1), (MAX_GROUP, 5));
        assert_eq!(sizes[0].0, sizes[1].0);
    }
}
