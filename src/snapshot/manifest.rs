//! The snapshot record (plaintext, authenticated, written last) and the manifest (encrypted:
//! every entry with mode, owner, size, checksum and chunk list).

use serde::{Deserialize, Serialize};

use super::FileSum;
use crate::crypto::Digest;
use crate::pg::{Lsn, SegmentSize, Tablespace, Timeline};
use crate::repo::BlobId;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// A PostgreSQL base backup.
    Pg,
    /// Plain file trees.
    Fs,
}

/// PostgreSQL facts of a base backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgInfo {
    /// Backup start LSN (redo point).
    pub start_lsn: Lsn,
    /// Backup stop LSN: replay must reach it for a consistent cluster.
    pub stop_lsn: Lsn,
    /// Timeline at backup start.
    pub timeline: Timeline,
    /// WAL segment size (stored as the byte count).
    pub segment_size: SegmentSize,
    /// `server_version`.
    pub server_version: String,
    /// `server_version_num`.
    pub server_version_num: u32,
    /// The server's data directory at backup time.
    pub data_dir: String,
    /// When `pg_backup_stop` returned (RFC 3339, ms): the earliest time a point-in-time restore
    /// from this backup can target. Absent in older snapshots (then `finished` is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_at: Option<String>,
    /// User tablespaces at backup time (OID, name, location), so `radd snapshots` shows them and
    /// a restore can remap them by name without reading the manifest; empty in snapshots taken
    /// before radd recorded them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<Tablespace>,
    /// Taken from a streaming standby (absent in records of older versions: from a primary).
    #[serde(default)]
    pub from_standby: bool,
}

/// The small, plaintext record whose presence commits a snapshot. Contains no file names or
/// content hashes, so backup hosts without an identity can list snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Snapshot id (sortable by time).
    pub id: String,
    /// Kind of snapshot.
    pub kind: SnapshotKind,
    /// Start time (RFC 3339, UTC).
    pub started: String,
    /// Finish time (RFC 3339, UTC; to the millisecond, as `started`, since 2026-12; to the
    /// second before).
    pub finished: String,
    /// Host the backup ran on.
    pub hostname: String,
    /// PostgreSQL facts (for `pg` snapshots).
    pub pg: Option<PgInfo>,
    /// Number of files.
    pub files: u64,
    /// Logical size of all files.
    pub total_bytes: u64,
    /// Bytes of chunks that were new to the repository.
    pub new_bytes: u64,
    /// Bytes of chunks already stored.
    pub reused_bytes: u64,
    /// Bytes uploaded (compressed and encrypted packs, index and manifest).
    pub uploaded_bytes: u64,
    /// Keyed digest of the manifest object.
    pub manifest_digest: Digest,
    /// Fs snapshots: the backed-up root paths (shown by `radd snapshots`; file names below
    /// them are only in the encrypted manifest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Tags given with `--tag`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Fs snapshots: files could not be read consistently (listed in the manifest); the
    /// snapshot is usable except for them, but is not "good".
    #[serde(default)]
    pub partial: bool,
    /// Consistency hooks that ran around the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRun>,
}

/// What a backup wrote, as its snapshot record states it: the parts pg and fs snapshots share
/// besides id, kind and start time.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotTotals {
    /// Number of files.
    pub files: u64,
    /// Logical size of all files.
    pub total_bytes: u64,
    /// Bytes of chunks that were new to the repository.
    pub new_bytes: u64,
    /// Bytes of chunks already stored.
    pub reused_bytes: u64,
    /// Bytes uploaded (packs, index and manifest).
    pub uploaded_bytes: u64,
    /// Keyed digest of the manifest object.
    pub manifest_digest: Digest,
}

impl SnapshotRecord {
    /// The one place a record is made (pg and fs backups), so that a new field is set in one
    /// place: this host's name, `started` to the millisecond, not finished yet (`finished`
    /// empty), no PostgreSQL facts, paths, tags or hooks and not partial — the caller sets what
    /// its kind adds with struct update syntax.
    #[must_use]
    pub fn new(id: String, kind: SnapshotKind, started: chrono::DateTime<chrono::Utc>, totals: SnapshotTotals) -> Self {
        let SnapshotTotals { files, total_bytes, new_bytes, reused_bytes, uploaded_bytes, manifest_digest } = totals;
        SnapshotRecord {
            id,
            kind,
            started: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            finished: String::new(),
            hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            pg: None,
            files,
            total_bytes,
            new_bytes,
            reused_bytes,
            uploaded_bytes,
            manifest_digest,
            paths: Vec::new(),
            tags: Vec::new(),
            partial: false,
            hooks: Vec::new(),
        }
    }
}

/// Stored under `snapshots/<id>`, the id it carries.
impl crate::repository::StoredRecord for SnapshotRecord {
    type Id = crate::repo::SnapshotId;
    fn key_of(id: &Self::Id) -> crate::repo::ObjectKey {
        crate::repo::ObjectKey::snapshot(id)
    }
    fn key(&self) -> crate::repo::ObjectKey {
        crate::repo::ObjectKey::Snapshot(self.id.clone())
    }
}

/// One run of a pre/post hook, as recorded in the snapshot record (the command itself stays in
/// the config: it may name things that should not be stored in plaintext).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookRun {
    /// `pre` or `post`.
    pub phase: String,
    /// Exit code (`None` when killed by a signal or not startable).
    pub exit_code: Option<i32>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Type of an entry in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with its content.
    File {
        /// Checksum of the content: SHA-256 (formats 1 and 2) or CRC-32C (format 3), stored
        /// as the field `sha256` or `crc32c`.
        #[serde(flatten)]
        sum: FileSum,
        /// Chunk ids in order (in a stored manifest: empty when `list` is set; loading fills
        /// them in from the list).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chunks: Vec<BlobId>,
        /// For files of many blocks: the chunk ids stored out of line, as a patch of a list
        /// blob.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list: Option<ChunkList>,
    },
    /// A symbolic link.
    Symlink {
        /// Link target (lossy UTF-8 when `raw_target` is set).
        target: String,
        /// Hex of the target's bytes when they are not valid UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_target: Option<String>,
    },
    /// A further name of a file already in the manifest (same inode).
    Hardlink {
        /// Index in `entries` of the first name, which holds the content.
        entry: usize,
    },
}

/// The chunk ids of a large file, kept out of the entry stream: a *base* list stored as a blob
/// (the ids, 32 bytes each, like any chunk: keyed id, dedup, packs) and a patch of the places
/// where this snapshot's ids differ. An incremental backup of a 1 GB relation file with a
/// thousand changed pages then stores a thousand (index, id) pairs, not 131 072 ids. The base
/// is a blob, not another snapshot: forgetting snapshots never breaks a list (prune keeps every
/// base a remaining snapshot names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkList {
    /// Blob id of the base list.
    pub base: BlobId,
    /// Number of chunks of the file.
    pub count: u32,
    /// (position, id) where the file differs from the base (positions past the base's end
    /// extend it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patch: Vec<(u32, BlobId)>,
}

impl ChunkList {
    /// Files with at least this many chunks keep them in a list blob.
    pub const MIN_CHUNKS: usize = 256;

    /// The list for `ids` given a stored base list: a patch when few ids differ (at most an
    /// eighth), otherwise `None` (store `ids` as a new base).
    #[must_use]
    pub fn patch_of(base: BlobId, base_ids: &[BlobId], ids: &[BlobId]) -> Option<Self> {
        let count = u32::try_from(ids.len()).ok()?;
        let patch: Vec<(u32, BlobId)> = ids
            .iter()
            .enumerate()
            .filter(|(i, id)| base_ids.get(*i) != Some(*id))
            .filter_map(|(i, id)| Some((u32::try_from(i).ok()?, *id)))
            .collect();
        (patch.len() <= ids.len() / 8).then_some(ChunkList { base, count, patch })
    }

    /// The file's ids from its base list's ids; `None` if the list does not fit the base.
    #[must_use]
    pub fn apply(&self, base_ids: &[BlobId]) -> Option<Vec<BlobId>> {
        let count = self.count as usize;
        let mut ids: Vec<Option<BlobId>> = (0..count).map(|i| base_ids.get(i).copied()).collect();
        for (position, id) in &self.patch {
            *ids.get_mut(*position as usize)? = Some(*id);
        }
        ids.into_iter().collect()
    }

    /// A base list's blob content.
    #[must_use]
    pub fn encode(ids: &[BlobId]) -> Vec<u8> {
        ids.iter().flat_map(|id| *id.as_bytes()).collect()
    }

    /// Ids from a base list's blob content.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Vec<BlobId>> {
        if !bytes.len().is_multiple_of(32) {
            return None;
        }
        Some(bytes.chunks_exact(32).map(|c| BlobId::from_bytes(c.try_into().unwrap_or([0; 32]))).collect())
    }
}

/// One entry of the manifest; paths are relative to the backed-up root, '/'-separated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path (lossy UTF-8 when `raw_path` is set).
    pub path: String,
    /// Hex of the path's bytes when they are not valid UTF-8 (file names are bytes on Unix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    /// Type and content.
    #[serde(flatten)]
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    #[serde(default)]
    pub mtime_nsec: u32,
    /// Size in bytes (files).
    pub size: u64,
}

/// Encodes a path (or link target) as manifest text: the string itself when it is UTF-8,
/// otherwise its lossy form plus the exact bytes in hex.
#[must_use]
pub fn encode_os(value: &std::ffi::OsStr) -> (String, Option<String>) {
    match value.to_str() {
        Some(s) => (s.to_owned(), None),
        None => (value.to_string_lossy().into_owned(), Some(hex::encode(value.as_encoded_bytes()))),
    }
}

/// The exact bytes of a manifest path or target.
#[must_use]
pub fn decode_os(text: &str, raw: Option<&String>) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    match raw.and_then(|r| hex::decode(r).ok()) {
        Some(bytes) => std::ffi::OsString::from_vec(bytes),
        None => std::ffi::OsString::from(text),
    }
}

impl Entry {
    /// The exact relative path.
    #[must_use]
    pub fn os_path(&self) -> std::path::PathBuf {
        decode_os(&self.path, self.raw_path.as_ref()).into()
    }
}

/// The encrypted manifest of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Snapshot id this manifest belongs to.
    pub snapshot_id: String,
    /// Entries in walk order (parents before children). Stored manifests keep them in
    /// `entry_chunks` instead; [`load_manifest`](super::load_manifest) fills this in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<Entry>,
    /// The chunks of the entry stream (see `entry_stream`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_chunks: Vec<BlobId>,
    /// `backup_label` content returned by pg_backup_stop.
    pub backup_label: Option<String>,
    /// `tablespace_map` content returned by pg_backup_stop (empty: none).
    pub tablespace_map: Option<String>,
    /// Files that could not be read consistently (fs snapshots): the snapshot is partial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Base backups: where the server's configuration files were (those outside the data
    /// directory are stored under `.radd-config/`); absent in older snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_files: Option<super::server_files::ServerFiles>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<BlobId> {
        (0..n).map(|i| BlobId::for_tests(&[i])).collect()
    }

    #[test]
    fn chunk_lists_patch_few_changes_and_round_trip() {
        let base_ids = ids(64);
        let base = BlobId::for_tests(&ChunkList::encode(&base_ids));
        assert_eq!(ChunkList::decode(&ChunkList::encode(&base_ids)).unwrap(), base_ids);
        let mut changed = base_ids.clone();
        changed[3] = BlobId::for_tests(b"new");
        changed.push(BlobId::for_tests(b"grown"));
        let list = ChunkList::patch_of(base, &base_ids, &changed).expect("two changes fit a patch");
        assert_eq!(list.patch.len(), 2);
        assert_eq!(list.apply(&base_ids).unwrap(), changed);
        let shrunk = &base_ids[..10];
        assert_eq!(ChunkList::patch_of(base, &base_ids, shrunk).unwrap().apply(&base_ids).unwrap(), shrunk);
        let rewritten: Vec<BlobId> = ids(64).iter().map(|d| BlobId::for_tests(d.as_bytes())).collect();
        assert!(ChunkList::patch_of(base, &base_ids, &rewritten).is_none(), "a rewritten file gets a new base");
        let short = ChunkList { base, count: 80, patch: Vec::new() };
        assert!(short.apply(&base_ids).is_none(), "a list longer than its base without a patch is corrupt");
    }
}
