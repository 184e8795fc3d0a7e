//! Placements of a large restore kept on disk, so the plan's memory does not grow with the
//! cluster: sorted runs of at most a bound of placements each are appended to one unnamed
//! temporary file, and read back as one stream in (turn, file, offset) order by a k-way merge.
//!
//! The file is created with `tempfile::tempfile_in` (`O_TMPFILE` where the file system has it,
//! else created and unlinked at once): it has no name to clean up, and the kernel frees its
//! blocks when the restore ends, whether it succeeds, fails or is killed.
//!
//! Memory: the run being filled (the bound × 40 bytes) while planning; while merging, one read
//! buffer of [`MERGE_BUFFER`] placements per run (128 runs for a 1 TiB cluster of 8 KiB blocks
//! at the default bound: 6 MiB).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Error;
use super::pack_plan::Placement;

/// Bytes of one placement on disk.
const ENCODED: usize = 40;
/// Placements read at once from each run while merging.
const MERGE_BUFFER: usize = 2048;

/// (turn, file, file offset): a pack's blobs together, each file's in order.
pub(super) type Key = (u32, u32, u64);

/// The sort key of the plan.
pub(super) fn key(p: &Placement) -> Key {
    (p.turn, p.file, p.file_offset)
}

fn encode(p: &Placement, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.turn.to_le_bytes());
    out.extend_from_slice(&p.pack_offset.to_le_bytes());
    out.extend_from_slice(&p.length.to_le_bytes());
    out.extend_from_slice(&p.file.to_le_bytes());
    out.extend_from_slice(&p.file_offset.to_le_bytes());
    out.extend_from_slice(&p.id_prefix);
}

fn decode(b: &[u8]) -> Placement {
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&b[16..24]);
    let mut id_prefix = [0u8; 16];
    id_prefix.copy_from_slice(&b[24..40]);
    Placement {
        turn: u32_at(0),
        pack_offset: u32_at(4),
        length: u32_at(8),
        file: u32_at(12),
        file_offset: u64::from_le_bytes(offset),
        id_prefix,
    }
}

/// Sorted runs being written to the temporary file.
pub(super) struct Runs {
    file: File,
    dir: PathBuf,
    /// (first byte, placements) of each run.
    runs: Vec<(u64, u64)>,
    end: u64,
}

impl Runs {
    /// An empty spill file in `dir`.
    ///
    /// # Errors
    /// When no temporary file can be created there.
    pub(super) fn new(dir: &Path) -> Result<Self, Error> {
        let file = tempfile::tempfile_in(dir).map_err(|source| Error::Io {
            what: "create a temporary file for the restore plan in (free space or permissions of the target's parent)",
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self { file, dir: dir.to_owned(), runs: Vec::new(), end: 0 })
    }

    /// Sorts `placements` and appends them as one run; leaves `placements` empty.
    ///
    /// # Errors
    /// When the write fails (the disk is full, most likely).
    pub(super) fn push(&mut self, placements: &mut Vec<Placement>) -> Result<(), Error> {
        placements.sort_unstable_by_key(key);
        let start = self.end;
        let mut buffer = Vec::with_capacity(MERGE_BUFFER * 16 * ENCODED);
        for part in placements.chunks(MERGE_BUFFER * 16) {
            buffer.clear();
            part.iter().for_each(|p| encode(p, &mut buffer));
            self.file.write_all_at(&buffer, self.end).map_err(|source| Error::Io {
                what: "write the restore plan to a temporary file in (free space of the target's parent)",
                path: self.dir.clone(),
                source,
            })?;
            self.end += buffer.len() as u64;
        }
        self.runs.push((start, placements.len() as u64));
        placements.clear();
        Ok(())
    }

    /// Runs written so far.
    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }

    /// Every placement of every run, as one sorted stream.
    ///
    /// # Errors
    /// When reading a run back fails.
    pub(super) fn merge(self) -> Result<Merge, Error> {
        let mut merge = Merge {
            cursors: self
                .runs
                .iter()
                .map(|&(start, count)| Cursor { next: start, left: count, buffer: Vec::new(), position: 0 })
                .collect(),
            file: self.file,
            dir: self.dir,
            heap: BinaryHeap::with_capacity(self.runs.len()),
        };
        for run in 0..merge.cursors.len() {
            merge.refill_and_push(run)?;
        }
        Ok(merge)
    }
}

/// Where the merge is in one run.
struct Cursor {
    /// Next byte of the run not yet read.
    next: u64,
    /// Placements of the run not yet read.
    left: u64,
    buffer: Vec<Placement>,
    position: usize,
}

/// The runs merged: [`Merge::next`] returns placements in (turn, file, offset) order.
pub(super) struct Merge {
    file: File,
    dir: PathBuf,
    cursors: Vec<Cursor>,
    /// Head of each run that has one: (key, run).
    heap: BinaryHeap<Reverse<(Key, usize)>>,
}

impl Merge {
    /// The run's next placement onto the heap, reading its next buffer when needed.
    fn refill_and_push(&mut self, run: usize) -> Result<(), Error> {
        let cursor = &mut self.cursors[run];
        if cursor.position == cursor.buffer.len() {
            if cursor.left == 0 {
                return Ok(());
            }
            let count = cursor.left.min(MERGE_BUFFER as u64);
            let mut bytes = vec![0u8; usize::try_from(count).unwrap_or(MERGE_BUFFER) * ENCODED];
            self.file.read_exact_at(&mut bytes, cursor.next).map_err(|source| Error::Io {
                what: "read the restore plan back from its temporary file in",
                path: self.dir.clone(),
                source,
            })?;
            cursor.next += bytes.len() as u64;
            cursor.left -= count;
            cursor.buffer.clear();
            cursor.buffer.extend(bytes.chunks_exact(ENCODED).map(decode));
            cursor.position = 0;
        }
        let head = cursor.buffer[cursor.position];
        self.heap.push(Reverse((key(&head), run)));
        Ok(())
    }

    /// The next placement in order, `None` after the last.
    ///
    /// # Errors
    /// When reading a run back fails.
    pub(super) fn next(&mut self) -> Result<Option<Placement>, Error> {
        let Some(Reverse((_, run))) = self.heap.pop() else { return Ok(None) };
        let cursor = &mut self.cursors[run];
        let placement = cursor.buffer[cursor.position];
        cursor.position += 1;
        self.refill_and_push(run)?;
        Ok(Some(placement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_back_in_key_order_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Runs::new(dir.path()).unwrap();
        let mut all = Vec::new();
        // 5 runs of uneven sizes, some larger than a merge buffer, keys interleaved.
        for (r, size) in [3000usize, 1, 0, 4500, 17].into_iter().enumerate() {
            let mut run: Vec<Placement> = (0..size)
                .map(|i| {
                    let n = u32::try_from(i * 7 + r).unwrap();
                    Placement {
                        turn: n % 13,
                        pack_offset: n,
                        length: n ^ 0x5555,
                        file: n % 101,
                        file_offset: u64::from(n) << 20 | r as u64,
                        id_prefix: [u8::try_from(n % 251).unwrap(); 16],
                    }
                })
                .collect();
            all.extend_from_slice(&run);
            runs.push(&mut run).unwrap();
            assert!(run.is_empty());
        }
        assert_eq!(runs.len(), 5);
        let mut merge = runs.merge().unwrap();
        let mut merged = Vec::new();
        while let Some(p) = merge.next().unwrap() {
            merged.push(p);
        }
        all.sort_unstable_by_key(key);
        assert_eq!(merged, all);
    }
}
