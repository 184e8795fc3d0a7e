//! The backup host's record of its last committed backup of a data directory: path, size,
//! mtime, inode, SHA-256 and chunk list of every file. An incremental backup reuses an entry
//! without reading the file when size, mtime (to the nanosecond) and inode are unchanged and the
//! file was last modified more than a second before the parent backup started (so a change made
//! while the parent was being read is never missed — pgBackRest's timestamp rule), and every
//! chunk is still in the repository. Like bupstash's send log it lives on the backup host,
//! which has no identity to read the encrypted manifests; losing it only means a full read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::pack::BlobIndex;
use crate::crypto::Digest;

/// One file as last backed up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParentFile {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status-change time, nanoseconds since the epoch (0 in records written before it was kept).
    #[serde(default)]
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// SHA-256 of the content.
    pub sha256: Digest,
    /// Chunk ids.
    pub chunks: Vec<Digest>,
}

/// The last committed backup of one data directory into one repository.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ParentFiles {
    /// Snapshot the entries belong to.
    pub snapshot_id: String,
    /// Unix time (milliseconds) the parent backup started.
    pub started_ms: i64,
    /// Files by relative path.
    pub files: HashMap<String, ParentFile>,
}

impl ParentFiles {
    /// Where the record for `repo_id` and the backed-up `source` (a data directory, or the
    /// list of fs roots) lives under `state_dir`.
    #[must_use]
    pub fn path(state_dir: &Path, repo_id: &str, source: &[u8]) -> PathBuf {
        let source_id = &Digest::sha256(source).to_string()[..16];
        state_dir.join(format!("parent-{repo_id}-{source_id}.json"))
    }

    /// Loads the record; a missing or unreadable one means "no parent" (a full read).
    #[must_use]
    pub fn load(path: &Path) -> Option<Self> {
        let text = std::fs::read(path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(parent) => Some(parent),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %error, "ignoring an unreadable parent record: full read");
                None
            }
        }
    }

    /// Writes the record atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let file = std::fs::File::create(&tmp)?;
        let mut writer = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut writer, self).map_err(std::io::Error::other)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The parent's entry for `rel`, if the file is provably unchanged since it was read.
    #[must_use]
    pub fn unchanged(&self, rel: &str, size: u64, mtime_ns: i128, ctime_ns: i128, ino: u64, known: &BlobIndex) -> Option<&ParentFile> {
        let p = self.files.get(rel)?;
        let settled = mtime_ns.max(ctime_ns) < (i128::from(self.started_ms) - 1000) * 1_000_000;
        let same = p.size == size && p.mtime_ns == mtime_ns && p.ctime_ns == ctime_ns && p.ino == ino;
        (same && settled && p.chunks.iter().all(|c| known.contains(c))).then_some(p)
    }
}
