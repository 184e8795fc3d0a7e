//! A PostgreSQL `backup_manifest` (the PG 13+ format `pg_basebackup` writes) for a restored
//! data directory, so `pg_verifybackup` — a tool radd did not write — can confirm the restore.
//!
//! Every file whose size and mtime are still those the writer gave it from the snapshot
//! manifest is listed with the checksum recorded *at backup time* (SHA-256, or CRC-32C in
//! format 3; nothing is re-read): a `pg_verifybackup` pass then re-reads every restored byte and compares it with what the
//! source held. Files radd wrote or rewrote after that (`backup_label`, `tablespace_map`,
//! rewritten configuration files) are checksummed (CRC-32C) as they are now. Paths PostgreSQL's tool ignores
//! (`pg_wal`, `postgresql.auto.conf`, `recovery.signal`, `standby.signal`) are left out.
//!
//! Written streaming (one line per file) with the manifest checksum computed on the way, and
//! through a temporary name renamed into place.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::{Error, io_err};
use crate::pg::{Lsn, Timeline};
use crate::snapshot::{Entry, EntryKind, FileSum, FileSummer, Manifest};

/// The file `pg_verifybackup` reads by default.
pub const FILE_NAME: &str = "backup_manifest";

/// Paths (relative to the data directory) PostgreSQL's verifier skips: left out here too.
const IGNORED: [&str; 5] = [FILE_NAME, "pg_wal", "postgresql.auto.conf", "recovery.signal", "standby.signal"];

/// The WAL a restore needs, for the manifest's `WAL-Ranges`.
#[derive(Debug, Clone, Copy)]
pub struct WalRange {
    /// Timeline of the backup.
    pub timeline: Timeline,
    /// Backup start (redo) LSN.
    pub start: Lsn,
    /// Backup stop LSN.
    pub end: Lsn,
}

/// Writes `data_dir/backup_manifest` describing `data_dir` (tablespaces included, through the
/// `pg_tblspc` links); returns the number of files listed.
pub fn write(data_dir: &Path, manifest: &Manifest, wal: WalRange) -> Result<u64, Error> {
    let by_path: HashMap<&str, &Entry> =
        manifest.entries.iter().filter(|e| e.raw_path.is_none()).map(|e| (e.path.as_str(), e)).collect();
    let temporary = data_dir.join(format!(".{FILE_NAME}.radd-tmp"));
    let file = std::fs::File::create(&temporary).map_err(io_err("create", &temporary))?;
    let mut out = Checksummed { inner: BufWriter::new(file), sha: Sha256::new() };
    let written = (|| {
        out.write_all(b"{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [")?;
        let mut listed = 0u64;
        walk(data_dir, std::ffi::OsStr::new(""), &mut |relative, path, meta| {
            let checksum = match recorded(&by_path, manifest, relative, meta) {
                Some(sum) => sum,
                None => checksum_of(path)?,
            };
            let (algorithm, checksum) = (checksum.pg_algorithm(), checksum.pg_hex());
            let separator = if listed == 0 { "\n" } else { ",\n" };
            let modified =
                chrono::DateTime::from_timestamp(meta.mtime(), 0).unwrap_or_default().format("%Y-%m-%d %H:%M:%S GMT");
            let path_field = match std::str::from_utf8(relative.as_bytes()) {
                Ok(text) => format!("\"Path\": {}", serde_json::Value::String(text.to_owned())),
                Err(_) => format!("\"Encoded-Path\": \"{}\"", hex::encode(relative.as_bytes())),
            };
            write!(
                out,
                "{separator}{{ {path_field}, \"Size\": {}, \"Last-Modified\": \"{modified}\", \"Checksum-Algorithm\": \"{algorithm}\", \"Checksum\": \"{checksum}\" }}",
                meta.len()
            )?;
            listed += 1;
            Ok(())
        })?;
        write!(
            out,
            " ],\n\"WAL-Ranges\": [\n{{ \"Timeline\": {}, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}\n],\n",
            wal.timeline.0, wal.start, wal.end
        )?;
        // The checksum covers everything up to and including the newline before its own line.
        let digest = hex::encode(out.sha.clone().finalize());
        writeln!(out.inner, "\"Manifest-Checksum\": \"{digest}\"}}")?;
        out.inner.flush()?;
        out.inner.get_ref().sync_all()?;
        Ok::<_, std::io::Error>(listed)
    })();
    let listed = match written {
        Ok(n) => n,
        Err(source) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(Error::Io { what: "write PostgreSQL backup manifest", path: temporary, source });
        }
    };
    let target = data_dir.join(FILE_NAME);
    std::fs::rename(&temporary, &target).map_err(io_err("move into place", &target))?;
    Ok(listed)
}

/// The backup-time SHA-256 of `relative` when the file on disk is still what the writer
/// restored (same size and mtime as in the snapshot manifest).
fn recorded(
    by_path: &HashMap<&str, &Entry>,
    manifest: &Manifest,
    relative: &std::ffi::OsStr,
    meta: &std::fs::Metadata,
) -> Option<FileSum> {
    let entry = by_path.get(relative.to_str()?)?;
    let content = match &entry.kind {
        EntryKind::Hardlink { entry: first } => manifest.entries.get(*first)?,
        _ => entry,
    };
    let EntryKind::File { sum, .. } = &content.kind else { return None };
    let unchanged = meta.len() == content.size
        && meta.mtime() == content.mtime
        && u32::try_from(meta.mtime_nsec()).ok() == Some(content.mtime_nsec);
    unchanged.then_some(*sum)
}

/// CRC-32C of a file radd wrote or changed after the backup (hashed fresh; CRC-32C because
/// it is the cheapest algorithm `pg_verifybackup` knows).
fn checksum_of(path: &Path) -> std::io::Result<FileSum> {
    let mut file = std::fs::File::open(path)?;
    let mut summer = FileSummer::Crc32c(0);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(summer.finish());
        }
        summer.update(&buffer[..n]);
    }
}

/// Calls `visit(relative path, path, metadata)` for every regular file below `dir`, in name
/// order, following the links in `pg_tblspc` (tablespaces) and no other.
fn walk(
    dir: &Path,
    relative: &std::ffi::OsStr,
    visit: &mut dyn FnMut(&std::ffi::OsStr, &Path, &std::fs::Metadata) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut names: Vec<std::ffi::OsString> =
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let mut rel = std::ffi::OsString::from(relative);
        if !relative.is_empty() {
            rel.push("/");
        }
        rel.push(&name);
        let top = relative.is_empty();
        if (top && IGNORED.iter().any(|i| name.as_bytes() == i.as_bytes())) || name.as_bytes().ends_with(b".radd-tmp") {
            continue;
        }
        let path = dir.join(&name);
        let in_tblspc = relative == "pg_tblspc";
        let meta = if in_tblspc { std::fs::metadata(&path)? } else { std::fs::symlink_metadata(&path)? };
        if meta.is_dir() {
            walk(&path, &rel, visit)?;
        } else if meta.is_file() {
            visit(&rel, &path, &meta)?;
        }
    }
    Ok(())
}

/// A writer that hashes what passes through it (the manifest checksum).
struct Checksummed<W: Write> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
