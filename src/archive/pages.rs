//! WAL page headers against names on the way in and out of the archive: `wal-push` refuses a
//! file whose pages hold another position than its name says, `wal-fetch` refuses to hand such
//! an object to PostgreSQL (which would take it for the end of WAL and promote early). Objects
//! of format versions 1 and 2 do not bind their name in their digest, so for them this is the
//! only check; for version 3 it is a second one that needs no key.

use std::io::Read;

use super::Error;
use crate::codec;
use crate::pg::{PageCheck, PageMismatch, SegmentSize, WalFileName};
use crate::repository;

/// What `wal-push` says when it refuses a file.
pub(super) const PUSH_ACTION: &str = "refusing to archive it";
/// What `wal-fetch` says when it refuses an object.
pub(super) const FETCH_ACTION: &str =
    "refusing to hand it to PostgreSQL, which would take it for the end of WAL; run `radd verify --read-data`";

/// A reader that checks the page headers of a WAL file as it passes through, failing the read
/// (an `InvalidData` error carrying the [`PageMismatch`], see [`from_read_error`]) at the first
/// page that contradicts the name, or at the end if the file is incomplete.
pub(super) struct CheckedReader<R> {
    inner: R,
    check: Option<PageCheck>,
}

impl<R: Read> CheckedReader<R> {
    /// Wraps `inner`, the content of the WAL file `name` (unchecked for names without pages).
    pub(super) fn new(inner: R, name: &WalFileName, size: Option<SegmentSize>) -> Self {
        CheckedReader { inner, check: size.and_then(|size| PageCheck::for_file(name, size)) }
    }
}

impl<R: Read> Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(check) = &mut self.check {
            let checked = if n == 0 { check.finish() } else { check.update(&buf[..n]) };
            checked.map_err(|mismatch| std::io::Error::new(std::io::ErrorKind::InvalidData, mismatch))?;
        }
        Ok(n)
    }
}

/// The [`Error::Misnamed`] of `name` when `error` is a read that [`CheckedReader`] failed, else
/// `error` as it is.
pub(super) fn from_read_error(error: codec::Error, name: &str) -> Error {
    if let codec::Error::Io { source, .. } = &error
        && let Some(mismatch) = source.get_ref().and_then(|e| e.downcast_ref::<PageMismatch>())
    {
        return misnamed(name, mismatch, PUSH_ACTION);
    }
    Error::Repository(repository::Error::from(error))
}

/// The error for WAL file or object `name` whose pages do not match it.
pub(super) fn misnamed(name: &str, mismatch: &PageMismatch, action: &'static str) -> Error {
    Error::Misnamed { name: name.to_owned(), reason: mismatch.reason.clone(), action }
}

/// Checks the first page header of the WAL file `name` (its first bytes, `start`) before
/// anything is claimed or stored; the rest is checked as it streams ([`CheckedReader`]).
pub(super) fn check_start(path: &str, name: &WalFileName, size: SegmentSize, start: &[u8]) -> Result<(), Error> {
    let Some(mut check) = PageCheck::for_file(name, size) else { return Ok(()) };
    check.update(start).map_err(|mismatch| misnamed(path, &mismatch, PUSH_ACTION))?;
    Ok(())
}
