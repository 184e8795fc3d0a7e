//! The snapshot record (plaintext, authenticated, written last) and the manifest (encrypted:
//! every entry with mode, owner, size, SHA-256 and chunk list).

use serde::{Deserialize, Serialize};

use crate::crypto::Digest;
use crate::pg::{Lsn, Timeline};

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// A PostgreSQL base backup.
    Pg,
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
    /// WAL segment size in bytes.
    pub segment_size: u64,
    /// `server_version`.
    pub server_version: String,
    /// `server_version_num`.
    pub server_version_num: u32,
    /// The server's data directory at backup time.
    pub data_dir: String,
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
    /// Finish time (RFC 3339, UTC).
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
}

/// Type of an entry in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with its content.
    File {
        /// SHA-256 of the content.
        sha256: Digest,
        /// Chunk ids in order.
        chunks: Vec<Digest>,
    },
    /// A symbolic link.
    Symlink {
        /// Link target.
        target: String,
    },
}

/// One entry of the manifest; paths are relative to the backed-up root, '/'-separated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path.
    pub path: String,
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
    /// Size in bytes (files).
    pub size: u64,
}

/// The encrypted manifest of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Snapshot id this manifest belongs to.
    pub snapshot_id: String,
    /// Entries in walk order (parents before children).
    pub entries: Vec<Entry>,
    /// `backup_label` content returned by pg_backup_stop.
    pub backup_label: Option<String>,
    /// `tablespace_map` content returned by pg_backup_stop (empty: none).
    pub tablespace_map: Option<String>,
}
