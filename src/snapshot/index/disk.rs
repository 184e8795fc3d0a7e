//! Sorting and looking up records that do not fit in memory: an external sort (sorted runs of
//! a bounded size spilled to anonymous temporary files, then a k-way merge) and the on-disk
//! blob table it produces, answered with an in-memory fan-out table on the leading bits of the
//! id plus one positioned read (`pread`) of the bucket. Nothing is memory-mapped: pages of a
//! mapping that lookups touch would count in the process's memory, which must not grow with
//! the repository. The files are unlinked at creation, so they vanish with the process.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::BLOB_BYTES;
use crate::repo::BlobId;

/// A fixed-size record an [`ExternalSort`] can spill and read back.
pub trait Record: Ord + Copy + Send + 'static {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Appends the encoding to `out`.
    fn put(&self, out: &mut Vec<u8>);
    /// Decodes [`Record::SIZE`] bytes.
    fn get(bytes: &[u8]) -> Self;
}

/// A blob of the index: id, global pack number, offset and length. Ordered by id, then pack
/// number, so the first of several entries of one id is the one of the first pack loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Blob {
    /// Keyed id.
    pub id: [u8; 32],
    /// Pack number ([`BlobIndex::packs`](super::BlobIndex::packs) position).
    pub pack: u32,
    /// Offset in the pack's plaintext.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl Record for Blob {
    const SIZE: usize = BLOB_BYTES;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.pack.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes[..32]);
        Blob { id, pack: u32_at(bytes, 32), offset: u32_at(bytes, 36), length: u32_at(bytes, 40) }
    }
}

impl Record for BlobId {
    const SIZE: usize = 32;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn get(bytes: &[u8]) -> Self {
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes[..32]);
        BlobId::from_bytes(id)
    }
}

/// Records per sorted run kept in memory before it is spilled (~5.5 MiB of blobs).
pub const RUN_RECORDS: usize = 1 << 17;
/// Read buffer per run during the merge: with many runs, what the merge holds stays small.
const MERGE_BUFFER: usize = 32 << 10;

/// Where a failing temporary file was.
#[derive(Debug, thiserror::Error)]
#[error("cannot use a temporary file under {}: {source}; free space there or point TMPDIR at a disk with room", dir.display())]
pub struct ScratchError {
    /// The directory of the temporary files.
    pub dir: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// An external sort: push records in any order, then read them back sorted. Equal records
/// within a run are kept once; across runs they may come back more than once, in a row.
/// Memory: one run of `run_records` records, and one merge buffer per spilled run.
pub struct ExternalSort<R: Record> {
    dir: PathBuf,
    run: Vec<R>,
    run_records: usize,
    runs: Vec<(File, u64)>,
    total: u64,
}

impl<R: Record> ExternalSort<R> {
    /// A sort spilling runs of `run_records` records to anonymous files under `dir`.
    #[must_use]
    pub fn new(dir: &Path, run_records: usize) -> Self {
        Self { dir: dir.to_owned(), run: Vec::new(), run_records: run_records.max(1), runs: Vec::new(), total: 0 }
    }

    fn scratch(&self, source: std::io::Error) -> ScratchError {
        ScratchError { dir: self.dir.clone(), source }
    }

    /// Adds a record; spills the run once full.
    pub fn push(&mut self, record: R) -> Result<(), ScratchError> {
        if self.run.capacity() == 0 {
            self.run.reserve_exact(self.run_records);
        }
        self.run.push(record);
        self.total += 1;
        if self.run.len() >= self.run_records {
            self.spill()?;
        }
        Ok(())
    }

    /// Records pushed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was pushed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn spill(&mut self) -> Result<(), ScratchError> {
        // Equal records are identical: one is enough (ids referenced by many snapshots).
        self.run.sort_unstable();
        self.run.dedup();
        let file = tempfile::tempfile_in(&self.dir).map_err(|e| self.scratch(e))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let mut bytes = Vec::with_capacity(R::SIZE);
        for record in &self.run {
            bytes.clear();
            record.put(&mut bytes);
            out.write_all(&bytes).map_err(|e| self.scratch(e))?;
        }
        let file = out.into_inner().map_err(|e| self.scratch(e.into_error()))?;
        self.runs.push((file, self.run.len() as u64));
        self.run.clear();
        Ok(())
    }

    /// The records in order. An in-memory run alone is sorted in place (no file at all).
    pub fn finish(mut self) -> Result<Sorted<R>, ScratchError> {
        if self.runs.is_empty() {
            self.run.sort_unstable();
            self.run.dedup();
            return Ok(Sorted { dir: self.dir, source: Source::Memory(std::mem::take(&mut self.run).into_iter()) });
        }
        if !self.run.is_empty() {
            self.spill()?;
        }
        self.run = Vec::new();
        let mut readers: Vec<RunReader<File>> =
            self.runs.drain(..).map(|(file, records)| RunReader::new(file, records * R::SIZE as u64)).collect();
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, reader) in readers.iter_mut().enumerate() {
            if let Some(bytes) = reader.next(R::SIZE).map_err(|e| ScratchError { dir: self.dir.clone(), source: e })? {
                heap.push(Reverse((R::get(bytes), i)));
            }
        }
        Ok(Sorted { dir: self.dir, source: Source::Merge { readers, heap } })
    }
}

/// Sequential reads of a file with positioned reads and a small buffer.
struct RunReader<F: std::borrow::Borrow<File>> {
    file: F,
    position: u64,
    end: u64,
    buffer: Vec<u8>,
    at: usize,
}

impl<F: std::borrow::Borrow<File>> RunReader<F> {
    fn new(file: F, end: u64) -> Self {
        Self { file, position: 0, end, buffer: Vec::new(), at: 0 }
    }

    fn next(&mut self, size: usize) -> std::io::Result<Option<&[u8]>> {
        if self.at + size > self.buffer.len() {
            let left = self.end - self.position;
            if left == 0 {
                return Ok(None);
            }
            let want = usize::try_from(left).unwrap_or(usize::MAX).min((MERGE_BUFFER / size).max(1) * size);
            self.buffer.resize(want, 0);
            self.file.borrow().read_exact_at(&mut self.buffer, self.position)?;
            self.position += want as u64;
            self.at = 0;
        }
        let out = &self.buffer[self.at..self.at + size];
        self.at += size;
        Ok(Some(out))
    }
}

enum Source<R: Record> {
    Memory(std::vec::IntoIter<R>),
    Merge { readers: Vec<RunReader<File>>, heap: BinaryHeap<Reverse<(R, usize)>> },
}

/// Sorted records from an [`ExternalSort`].
pub struct Sorted<R: Record> {
    dir: PathBuf,
    source: Source<R>,
}

impl<R: Record> Iterator for Sorted<R> {
    type Item = Result<R, ScratchError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Memory(records) => records.next().map(Ok),
            Source::Merge { readers, heap } => {
                let Reverse((record, run)) = heap.pop()?;
                match readers[run].next(R::SIZE) {
                    Ok(Some(bytes)) => heap.push(Reverse((R::get(bytes), run))),
                    Ok(None) => {}
                    Err(source) => return Some(Err(ScratchError { dir: self.dir.clone(), source })),
                }
                Some(Ok(record))
            }
        }
    }
}

/// Most fan-out bits: 2^22 buckets (16 MiB of table) serve ~130 million blobs at 32 a bucket.
const MAX_FANOUT_BITS: u32 = 22;
/// Blobs a bucket holds on average: one read of ~1.4 KiB per lookup.
const BUCKET_BLOBS: u64 = 32;

/// The blob table on disk: unique ids, sorted, 44 bytes each, plus the fan-out table in memory.
#[derive(Debug)]
pub struct BlobTable {
    file: File,
    /// `fanout[b]` is the position of the first blob whose leading `bits` bits are `>= b`.
    fanout: Vec<u32>,
    bits: u32,
    len: usize,
    dir: PathBuf,
}

fn bucket_of(id: &[u8; 32], bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    (u32::from_be_bytes([id[0], id[1], id[2], id[3]]) >> (32 - bits)) as usize
}

impl BlobTable {
    /// Writes the sorted blobs, one per id (the first), to a temporary file under `dir`;
    /// `bound` (at least the number of blobs) sizes the fan-out table.
    pub fn write(
        dir: &Path,
        blobs: impl Iterator<Item = Result<Blob, ScratchError>>,
        bound: u64,
    ) -> Result<Self, ScratchError> {
        let scratch = |source| ScratchError { dir: dir.to_owned(), source };
        let bits = (u64::BITS - (bound / BUCKET_BLOBS).leading_zeros()).min(MAX_FANOUT_BITS);
        let mut counts = vec![0u32; (1usize << bits) + 1];
        let file = tempfile::tempfile_in(dir).map_err(scratch)?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let (mut last, mut len, mut bytes) = (None, 0usize, Vec::with_capacity(BLOB_BYTES));
        for blob in blobs {
            let blob = blob?;
            if last == Some(blob.id) {
                continue;
            }
            last = Some(blob.id);
            bytes.clear();
            blob.put(&mut bytes);
            out.write_all(&bytes).map_err(scratch)?;
            counts[bucket_of(&blob.id, bits) + 1] += 1;
            len += 1;
        }
        let file = out.into_inner().map_err(|e| scratch(e.into_error()))?;
        if u32::try_from(len).is_err() {
            return Err(scratch(std::io::Error::other("more than 4 billion blobs")));
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        Ok(Self { file, fanout: counts, bits, len, dir: dir.to_owned() })
    }

    /// Number of (unique) blobs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The blob with this id, if any: one positioned read of its bucket.
    pub fn get(&self, id: &[u8; 32]) -> Result<Option<Blob>, ScratchError> {
        let bucket = bucket_of(id, self.bits);
        let (start, end) = (self.fanout[bucket] as usize, self.fanout[bucket + 1] as usize);
        if start == end {
            return Ok(None);
        }
        let mut stack = [0u8; 64 * BLOB_BYTES];
        let mut heap = Vec::new();
        let want = (end - start) * BLOB_BYTES;
        let buffer: &mut [u8] = if want <= stack.len() {
            &mut stack[..want]
        } else {
            heap.resize(want, 0);
            &mut heap
        };
        self.file
            .read_exact_at(buffer, (start * BLOB_BYTES) as u64)
            .map_err(|source| ScratchError { dir: self.dir.clone(), source })?;
        let (mut low, mut high) = (0usize, end - start);
        while low < high {
            let mid = usize::midpoint(low, high);
            let probe = &buffer[mid * BLOB_BYTES..mid * BLOB_BYTES + 32];
            match probe.cmp(&id[..]) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => {
                    return Ok(Some(Blob::get(&buffer[mid * BLOB_BYTES..(mid + 1) * BLOB_BYTES])));
                }
            }
        }
        Ok(None)
    }

    /// Every blob in id order, read sequentially.
    pub fn iter(&self) -> impl Iterator<Item = Result<Blob, ScratchError>> + '_ {
        let mut reader = RunReader::new(&self.file, (self.len * BLOB_BYTES) as u64);
        std::iter::from_fn(move || match reader.next(BLOB_BYTES) {
            Ok(Some(bytes)) => Some(Ok(Blob::get(bytes))),
            Ok(None) => None,
            Err(source) => Some(Err(ScratchError { dir: self.dir.clone(), source })),
        })
    }

    /// Bytes of memory the table holds (the fan-out table).
    #[must_use]
    pub fn memory(&self) -> usize {
        self.fanout.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn blob(i: u64, pack: u32) -> Blob {
        Blob {
            id: *BlobId::for_tests(&i.to_le_bytes()).as_bytes(),
            pack,
            offset: u32::try_from(i % 1000).unwrap(),
            length: 7,
        }
    }

    #[test]
    fn external_sort_merges_runs_in_order_with_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut sort = ExternalSort::new(dir.path(), 100);
        let ids: Vec<BlobId> = (0..1050u64).map(|i| BlobId::for_tests(&(i % 700).to_le_bytes())).collect();
        for id in &ids {
            sort.push(*id).unwrap();
        }
        assert_eq!(sort.len(), 1050);
        let out: Vec<BlobId> = sort.finish().unwrap().collect::<Result<_, _>>().unwrap();
        let mut expected = ids.clone();
        expected.sort_unstable();
        let mut unique = out.clone();
        unique.dedup();
        expected.dedup();
        assert_eq!(unique, expected);
        assert!(out.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "runs are anonymous files");
    }

    #[test]
    fn table_answers_like_a_hash_map() {
        let dir = tempfile::tempdir().unwrap();
        for (n, run) in [(0u64, 10), (1, 10), (5, 2), (3000, 257), (200_000, RUN_RECORDS)] {
            let mut sort = ExternalSort::new(dir.path(), run);
            let mut map = HashMap::new();
            for i in 0..n {
                // Every tenth id stored twice: the first pack (lower number) wins.
                let b = blob(i, u32::try_from(i % 3 + 1).unwrap());
                sort.push(b).unwrap();
                map.insert(b.id, b);
                if i % 10 == 0 {
                    let mut again = b;
                    again.pack = 99;
                    sort.push(again).unwrap();
                }
            }
            let bound = sort.len();
            let table = BlobTable::write(dir.path(), sort.finish().unwrap(), bound).unwrap();
            assert_eq!(table.len(), map.len(), "{n} blobs");
            for (id, b) in &map {
                assert_eq!(table.get(id).unwrap(), Some(*b), "blob of {n}");
            }
            for i in n..n + 2000 {
                assert_eq!(table.get(&blob(i, 0).id).unwrap(), None, "absent id of {n}");
            }
            let all: Vec<Blob> = table.iter().collect::<Result<_, _>>().unwrap();
            assert_eq!(all.len(), map.len());
            assert!(all.windows(2).all(|w| w[0].id < w[1].id));
            assert!(
                table.memory() <= 4 * ((n as usize / 32).next_power_of_two() * 2 + 2),
                "fan-out stays small: {}",
                table.memory()
            );
        }
    }
}
