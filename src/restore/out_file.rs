//! A restored file as the writer holds it open: aligned runs of blobs go to the disk with
//! direct writes ([`crate::dio`]), the rest (a file's unaligned tail, a small file's bytes)
//! through the page cache.
//!
//! A buffered write of a restore's gigabytes fills fresh page-cache pages with bytes nobody
//! reads soon, and on the virtual machines SREs run that costs as much CPU as decrypting them;
//! the writer's copy into an aligned buffer costs a tenth of it. Relation files are 8 KiB blocks
//! at 8 KiB offsets, so every long run of a cluster's blobs takes the direct path; short runs
//! (what incrementals changed) go through the cache, where a write costs no device wait. Only files checked
//! by the CRC-32C of what was written are written direct: a file the hashers read back (an
//! older format's SHA-256) is better left in the cache they read it from.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::dio;

/// The shortest run written directly. A direct write returns once the device has the bytes,
/// and ext4 allocates the blocks of a file created sparse as it goes: a restore of a snapshot
/// after many incrementals (runs of a few blocks) took twice as long written directly, 8 KiB
/// at a time. From 512 KiB up the wait is the transfer's own (bench: 4.9 s against 5.7 s
/// buffered, the same at 1 and 4 MiB; 11 s with every aligned run direct).
const MIN_DIRECT_RUN: usize = 512 << 10;

/// Environment variable that turns direct restore writes off (`RADD_RESTORE_DIRECT=0`): a bench
/// knob, read once per process.
const DIRECT_ENV: &str = "RADD_RESTORE_DIRECT";

/// Whether restores write with `O_DIRECT` where they can (on unless [`DIRECT_ENV`] is `0`).
fn direct_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var(DIRECT_ENV).as_deref() != Ok("0"))
}

/// One restored file open for writing: a direct handle where the filesystem and the file's
/// check allow it, a buffered one opened when first needed.
pub(super) struct OutFile {
    direct: Option<File>,
    buffered: Option<File>,
}

impl OutFile {
    /// Opens the file at `path` (created at its full size already); `direct` says whether its
    /// check allows direct writes (the file is not read back).
    pub(super) fn open(path: &Path, direct: bool) -> std::io::Result<Self> {
        let direct = if direct && direct_enabled() { dio::open_write(path)? } else { None };
        let buffered = match direct {
            Some(_) => None,
            None => Some(std::fs::OpenOptions::new().write(true).open(path)?),
        };
        Ok(OutFile { direct, buffered })
    }

    /// Writes `bytes` at `offset`: the whole aligned blocks of a run of at least
    /// [`MIN_DIRECT_RUN`] bytes that starts aligned directly (through `scratch` when `bytes` is
    /// not aligned in memory), the rest buffered.
    pub(super) fn write_at(
        &mut self,
        path: &Path,
        mut bytes: &[u8],
        mut offset: u64,
        scratch: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        if let Some(direct) = &self.direct
            && offset.is_multiple_of(dio::ALIGN as u64)
            && bytes.len() >= MIN_DIRECT_RUN
        {
            let whole = bytes.len() / dio::ALIGN * dio::ALIGN;
            if whole > 0 {
                dio::write_at(direct, &bytes[..whole], offset, scratch)?;
                bytes = &bytes[whole..];
                offset += whole as u64;
            }
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let buffered = match &mut self.buffered {
            Some(file) => file,
            empty => empty.insert(std::fs::OpenOptions::new().write(true).open(path)?),
        };
        buffered.write_all_at(bytes, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::OutFile;
    use crate::dio::ALIGN;

    #[test]
    fn runs_aligned_or_not_land_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("restored");
        let len = 2 * super::MIN_DIRECT_RUN + 5 * ALIGN + 123;
        std::fs::File::create(&path).unwrap().set_len(len as u64).unwrap();
        let content: Vec<u8> = (0..len).map(|i| (i % 241) as u8 | 1).collect();
        let mut file = OutFile::open(&path, true).unwrap();
        let mut scratch = Vec::new();
        // A long aligned run with an unaligned tail (direct, then buffered), a run starting
        // unaligned, a short aligned run (buffered), the file's long tail (direct, buffered).
        let long = super::MIN_DIRECT_RUN;
        let runs = [
            (0, long + 10),
            (long + 10, long + 2 * ALIGN),
            (long + 2 * ALIGN, long + 3 * ALIGN),
            (long + 3 * ALIGN, len),
        ];
        for (start, end) in runs {
            file.write_at(&path, &content[start..end], start as u64, &mut scratch).unwrap();
        }
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }
}
