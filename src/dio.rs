//! Direct I/O (`O_DIRECT`): files read and written past the page cache, for the bulk bytes radd
//! moves once and never reads back soon — relation files a backup reads, WAL segments it
//! archives, the objects it stores on a local repository. A buffered read of a cold file fills
//! fresh page-cache pages and copies them again into the program's buffer; a buffered write
//! copies every byte into fresh cache pages. On the virtual machines SREs run, that costs as
//! much CPU as encrypting the bytes (measured on the bench VM: 0.1 to 0.9 s of system time per
//! GB read cold and 0.2 to 2 s per GB written, against 0.05 to 0.15 s direct), and terabytes
//! moved through the cache evict the pages the running database is using.
//!
//! Linux writes a file's dirty cached pages to disk before a direct read of them, so a direct
//! read sees what a buffered one would. Buffers, offsets and lengths must be aligned
//! ([`ALIGN`]). The library forbids `unsafe`, so there is no aligned allocation: buffers are
//! plain vectors with [`ALIGN`] bytes of slack, used from their first aligned address on.
//! Filesystems without `O_DIRECT` (tmpfs) refuse it at open: callers then use the page cache.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of buffers, offsets and lengths: the largest logical block size of the devices in
/// use (4 KiB; devices of 512-byte blocks accept it too).
pub const ALIGN: usize = 4096;

/// Opens `path` to read it with `O_DIRECT`, or `None` when its filesystem refuses that.
pub fn open(path: &Path) -> std::io::Result<Option<File>> {
    refused_as_none(OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path))
}

/// `None` for an open that failed with EINVAL: the filesystem refuses `O_DIRECT` (nothing was
/// opened or created).
fn refused_as_none(opened: std::io::Result<File>) -> std::io::Result<Option<File>> {
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads `file` at `offset` (aligned) into `buffer` (aligned, a multiple of [`ALIGN`] long)
/// until it is full or the file ends; returns the bytes read and whether the file ended. A read
/// that ends off the alignment ended at the end of the file (the next one would start at an
/// unaligned offset).
fn fill(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<(usize, bool)> {
    let mut len = 0;
    while len < buffer.len() {
        match file.read_at(&mut buffer[len..], offset + len as u64) {
            Ok(0) => return Ok((len, true)),
            Ok(n) => {
                len += n;
                if !n.is_multiple_of(ALIGN) {
                    return Ok((len, true));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((len, false))
}

/// What [`read_at`] read.
pub struct Batch {
    /// Where the bytes start in the buffer (its first aligned address).
    pub start: usize,
    /// Bytes read: `want` or more (up to the next aligned length) unless the file ended.
    pub len: usize,
    /// Whether the file ended within the read.
    pub at_end: bool,
}

/// Reads `want` bytes (rounded up to [`ALIGN`]) of `file` at `offset` (a multiple of
/// [`ALIGN`]) into `data` (reserved as needed, its content replaced) from its first aligned
/// address on; `data` ends at the last byte read.
pub fn read_at(file: &File, data: &mut Vec<u8>, offset: u64, want: usize) -> std::io::Result<Batch> {
    let rounded = want.div_ceil(ALIGN).max(1) * ALIGN;
    if data.capacity() < rounded + ALIGN {
        data.reserve_exact(rounded + ALIGN - data.len());
    }
    let start = data.as_ptr().align_offset(ALIGN);
    // Within the capacity: no reallocation, the start stays aligned. A recycled buffer still
    // holds its last batch, so only what lies beyond that is zeroed.
    data.resize(start + rounded, 0);
    let (len, at_end) = fill(file, &mut data[start..], offset)?;
    data.truncate(start + len);
    Ok(Batch { start, len, at_end })
}

/// Bytes gathered before one write to the device, or read from it at a time.
const BUFFER: usize = 1 << 20;

/// Opens the existing file at `path` to write it with `O_DIRECT`, or `None` when its filesystem
/// refuses that.
pub fn open_write(path: &Path) -> std::io::Result<Option<File>> {
    refused_as_none(OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path))
}

/// Writes `data` at `offset` of `file` (opened with [`open_write`]; `offset` and the length of
/// `data` multiples of [`ALIGN`]): straight from `data` when it is aligned in memory, else
/// copied 1 MiB at a time into the aligned region of `scratch` (reserved as needed, reused by
/// the caller across writes). A copy from memory costs far less than the page-cache pages a
/// buffered write fills.
pub fn write_at(file: &File, data: &[u8], offset: u64, scratch: &mut Vec<u8>) -> std::io::Result<()> {
    if !offset.is_multiple_of(ALIGN as u64) || !data.len().is_multiple_of(ALIGN) {
        let message = format!("direct write of {} bytes at {offset}: not aligned to {ALIGN}", data.len());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, message));
    }
    if data.as_ptr().align_offset(ALIGN) == 0 {
        return file.write_all_at(data, offset);
    }
    let piece_len = data.len().min(BUFFER);
    if scratch.capacity() < piece_len + ALIGN {
        scratch.reserve_exact(piece_len + ALIGN - scratch.len());
    }
    let start = scratch.as_ptr().align_offset(ALIGN);
    if scratch.len() < start + piece_len {
        scratch.resize(start + piece_len, 0);
    }
    let mut at = offset;
    for piece in data.chunks(BUFFER) {
        let region = &mut scratch[start..start + piece.len()];
        region.copy_from_slice(piece);
        file.write_all_at(region, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Buffers of finished files, for the next ones: a process writing many objects (a backup's
/// packs, a drained WAL backlog) maps and faults in a buffer once, not once per object.
static FREE_BUFFERS: std::sync::Mutex<Vec<Aligned>> = std::sync::Mutex::new(Vec::new());

/// Buffers kept in [`FREE_BUFFERS`]: as many as objects are usually written at once.
const KEPT_BUFFERS: usize = 4;

/// Opens a new file at `path` (create-only) for direct writes, or `None` when the filesystem
/// does not support `O_DIRECT`.
pub fn create_new(path: &Path) -> std::io::Result<Option<DirectFile>> {
    let opened = OpenOptions::new().read(true).write(true).create_new(true).custom_flags(libc::O_DIRECT).open(path);
    Ok(refused_as_none(opened)?.map(DirectFile::new))
}

/// An aligned region of a plain `Vec`: the library forbids `unsafe`, so instead of an aligned
/// allocation the vector has `ALIGN` bytes of slack and the region starts at the first aligned
/// address in it.
#[derive(Debug)]
struct Aligned {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let bytes = vec![0u8; len + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        Aligned { bytes, start, len }
    }

    /// A buffer of [`BUFFER`] bytes, recycled if one is free.
    fn pooled() -> Self {
        let recycled = FREE_BUFFERS.lock().ok().and_then(|mut free| free.pop());
        recycled.unwrap_or_else(|| Aligned::new(BUFFER))
    }

    /// Hands this buffer to [`FREE_BUFFERS`] (leaving an empty one), unless enough are kept.
    fn recycle(&mut self) {
        let buffer = std::mem::replace(self, Aligned { bytes: Vec::new(), start: 0, len: 0 });
        if buffer.len == BUFFER
            && let Ok(mut free) = FREE_BUFFERS.lock()
            && free.len() < KEPT_BUFFERS
        {
            free.push(buffer);
        }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// A file written with `O_DIRECT` through one aligned buffer; see the module documentation.
/// Supports appending writes and overwriting bytes already written ([`Seek`]); nothing is
/// durable before [`DirectFile::finish`].
#[derive(Debug)]
pub struct DirectFile {
    file: File,
    buffer: Aligned,
    /// Bytes of the buffer in use; the buffer holds the file from `flushed` on.
    filled: usize,
    /// Bytes already on the device (a multiple of `ALIGN`).
    flushed: u64,
    /// Where the next write goes.
    position: u64,
    /// Whether [`DirectFile::finish`] made everything written so far durable.
    synced: bool,
}

impl DirectFile {
    fn new(file: File) -> Self {
        DirectFile { file, buffer: Aligned::pooled(), filled: 0, flushed: 0, position: 0, synced: false }
    }

    /// The file's length so far.
    fn len(&self) -> u64 {
        self.flushed + self.filled as u64
    }

    /// Writes the buffer's whole blocks to the device, keeping a partial last block buffered.
    fn flush_blocks(&mut self) -> std::io::Result<()> {
        let whole = self.filled / ALIGN * ALIGN;
        if whole == 0 {
            return Ok(());
        }
        self.file.write_all_at(&self.buffer.get()[..whole], self.flushed)?;
        self.flushed += whole as u64;
        let rest = self.filled - whole;
        self.buffer.get_mut().copy_within(whole..self.filled, 0);
        self.filled = rest;
        Ok(())
    }

    /// Overwrites bytes at `at` that are on the device already: read, patch and rewrite the
    /// aligned blocks holding them. Returns how many bytes of `data` it wrote (up to the end of
    /// what is on the device).
    fn patch_flushed(&mut self, at: u64, data: &[u8]) -> std::io::Result<usize> {
        let n = usize::try_from(self.flushed - at).unwrap_or(usize::MAX).min(data.len());
        let first = at / ALIGN as u64 * ALIGN as u64;
        let end = (at + n as u64).div_ceil(ALIGN as u64) * ALIGN as u64;
        let mut blocks = Aligned::new(usize::try_from(end - first).map_err(std::io::Error::other)?);
        self.file.read_exact_at(blocks.get_mut(), first)?;
        let offset = usize::try_from(at - first).map_err(std::io::Error::other)?;
        blocks.get_mut()[offset..offset + n].copy_from_slice(&data[..n]);
        self.file.write_all_at(blocks.get(), first)?;
        Ok(n)
    }

    /// Writes what is buffered (the last block padded with zeros), cuts the file to its length
    /// and makes it durable (`fsync`: the length and the allocation are metadata). Once done, a
    /// second call without writes in between does nothing.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.synced {
            return Ok(());
        }
        let len = self.len();
        if self.filled > 0 {
            let padded = self.filled.div_ceil(ALIGN) * ALIGN;
            self.buffer.get_mut()[self.filled..padded].fill(0);
            self.file.write_all_at(&self.buffer.get()[..padded], self.flushed)?;
            self.flushed += padded as u64;
            self.filled = 0;
            self.file.set_len(len)?;
            self.flushed = len;
        }
        self.file.sync_all()?;
        self.synced = true;
        Ok(())
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        self.buffer.recycle();
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if !self.flushed.is_multiple_of(ALIGN as u64) {
            return Err(std::io::Error::other("write after the direct file was finished"));
        }
        let end = self.len();
        self.synced = false;
        if self.position < self.flushed {
            let n = self.patch_flushed(self.position, data)?;
            self.position += n as u64;
            return Ok(n);
        }
        if self.position > end {
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "direct file: a write past its end"));
        }
        // Within or at the end of the buffered bytes.
        let at = usize::try_from(self.position - self.flushed).map_err(std::io::Error::other)?;
        if at == self.buffer.len {
            self.flush_blocks()?;
            return self.write(data);
        }
        let n = data.len().min(self.buffer.len - at);
        self.buffer.get_mut()[at..at + n].copy_from_slice(&data[..n]);
        self.filled = self.filled.max(at + n);
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for DirectFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len().checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.position)
    }
}

/// A reader of a whole file opened with `O_DIRECT` ([`open`]), for consumers that read into
/// buffers of their own: a read fills an aligned buffer of 1 MiB from the
/// device and copies from it (a copy from a buffer in the CPU's cache, not from cold page-cache
/// pages).
#[derive(Debug)]
pub struct DirectReader {
    file: File,
    buffer: Aligned,
    /// The buffered bytes are `buffer[taken..filled]`.
    taken: usize,
    filled: usize,
    /// File offset of the next read from the device.
    offset: u64,
    at_end: bool,
}

impl DirectReader {
    /// Reads `file` (opened with [`open`]) from its start.
    #[must_use]
    pub fn new(file: File) -> Self {
        DirectReader { file, buffer: Aligned::pooled(), taken: 0, filled: 0, offset: 0, at_end: false }
    }
}

impl Drop for DirectReader {
    fn drop(&mut self) {
        self.buffer.recycle();
    }
}

impl Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.taken == self.filled && !self.at_end {
            let (filled, at_end) = fill(&self.file, self.buffer.get_mut(), self.offset)?;
            self.offset += filled as u64;
            (self.taken, self.filled, self.at_end) = (0, filled, at_end);
        }
        let n = out.len().min(self.filled - self.taken);
        out[..n].copy_from_slice(&self.buffer.get()[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::{ALIGN, BUFFER, DirectReader, create_new, open, read_at};

    fn tempdir_with_direct_io() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        assert!(
            create_new(&probe).unwrap().is_some(),
            "the test directory's filesystem has no O_DIRECT: {}",
            dir.path().display()
        );
        std::fs::remove_file(probe).unwrap();
        dir
    }
    /// Writes `data` in pieces of `piece` bytes, patches `patch` at `at`, and checks the file
    /// holds exactly the patched data.
    fn round_trip(len: usize, piece: usize, at: usize, patch: &[u8]) {
        let dir = tempdir_with_direct_io();
        let path = dir.path().join("object");
        let mut file = create_new(&path).unwrap().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
        for part in data.chunks(piece) {
            file.write_all(part).unwrap();
        }
        file.seek(SeekFrom::Start(at as u64)).unwrap();
        file.write_all(patch).unwrap();
        file.seek(SeekFrom::End(0)).unwrap();
        file.finish().unwrap();
        let mut expected = data;
        expected[at..at + patch.len()].copy_from_slice(patch);
        assert_eq!(std::fs::read(&path).unwrap(), expected, "len {len}, pieces of {piece}, patch at {at}");
    }

    #[test]
    fn direct_files_hold_exactly_what_was_written_and_patched() {
        let digest = [0xabu8; 32];
        // Shorter than a block; a block and a bit; over the buffer (the patched header is then
        // on the device); an exact number of blocks.
        round_trip(100, 7, 8, &digest);
        round_trip(ALIGN + 1, 65_552, 8, &digest);
        round_trip(3 * BUFFER + 12_345, 65_552, 8, &digest);
        round_trip(3 * BUFFER + 12_345, 65_552, ALIGN - 10, &digest);
        round_trip(2 * BUFFER, BUFFER, 8, &digest);
        round_trip(0, 1, 0, &[]);
    }

    #[test]
    fn aligned_writes_land_whether_or_not_the_data_is_aligned_in_memory() {
        let dir = tempdir_with_direct_io();
        let path = dir.path().join("restored");
        let len = 3 * BUFFER + 2 * ALIGN;
        std::fs::File::create(&path).unwrap().set_len(len as u64).unwrap();
        let file = super::open_write(&path).unwrap().unwrap();
        let data: Vec<u8> = (0..len + 1).map(|i| (i % 249) as u8 | 1).collect();
        let mut scratch = Vec::new();
        // Misaligned in memory by one byte (copied through the scratch buffer), at an offset.
        super::write_at(&file, &data[1..1 + 2 * BUFFER], ALIGN as u64, &mut scratch).unwrap();
        assert!(super::write_at(&file, &data[..100], 0, &mut scratch).is_err(), "an unaligned length is refused");
        assert!(super::write_at(&file, &data[..ALIGN], 10, &mut scratch).is_err(), "an unaligned offset is refused");
        let written = std::fs::read(&path).unwrap();
        assert_eq!(&written[ALIGN..ALIGN + 2 * BUFFER], &data[1..1 + 2 * BUFFER]);
        assert!(written[..ALIGN].iter().chain(&written[ALIGN + 2 * BUFFER..]).all(|&b| b == 0));
    }

    #[test]
    fn direct_reads_return_the_file_in_aligned_batches_to_its_end() {
        let dir = tempdir_with_direct_io();
        let path = dir.path().join("relation");
        let content: Vec<u8> = (0..(3 * 8192 + 1000)).map(|i: usize| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let Some(file) = open(&path).unwrap() else {
            panic!("the test directory's filesystem has no O_DIRECT: {}", dir.path().display());
        };
        let (mut data, mut read, mut offset) = (Vec::new(), Vec::new(), 0u64);
        loop {
            let got = read_at(&file, &mut data, offset, 2 * 8192).unwrap();
            assert_eq!((data.as_ptr() as usize + got.start) % ALIGN, 0);
            read.extend_from_slice(&data[got.start..]);
            offset += got.len as u64;
            if got.at_end {
                break;
            }
        }
        assert_eq!(read, content);
    }

    #[test]
    fn a_direct_reader_reads_the_whole_file_in_any_pieces() {
        let dir = tempdir_with_direct_io();
        let path = dir.path().join("segment");
        for len in [0, 1000, ALIGN, 2 * super::BUFFER + 4097] {
            let content: Vec<u8> = (0..len).map(|i: usize| (i % 253) as u8).collect();
            std::fs::write(&path, &content).unwrap();
            let mut reader = DirectReader::new(open(&path).unwrap().unwrap());
            let (mut read, mut piece) = (Vec::new(), vec![0u8; 65_537]);
            loop {
                let n = reader.read(&mut piece).unwrap();
                if n == 0 {
                    break;
                }
                read.extend_from_slice(&piece[..n]);
            }
            assert_eq!(read, content, "{len} bytes");
        }
    }
}
