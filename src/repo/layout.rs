//! The repository layout: every object kind and the key it lives under, in one place.
//!
//! ```text
//! config                     repository config (id, format version, id-key check)
//! keys/id-key                the id key, age-encrypted to the recipients of `repo init`
//! keys/set-<n>               after key add/remove: recipients and the id key encrypted to them
//! wal-segment-size           record: the WAL segment size of the cluster archiving here (first push or backup)
//! wal/<dir>/<name>           one object per WAL file (segment, history, .backup, .partial)
//! packs/<id>                 packs of chunks (id = keyed digest of the pack)
//! index/<id>                 blob tables of packs written by one backup
//! manifests/<snapshot>       encrypted manifest: files, modes, SHA-256, chunk lists
//! snapshots/<snapshot>       snapshot record, written last: its presence commits the snapshot
//! pins/<snapshot>            marker: the snapshot is kept whatever the retention policy says
//! locks/<id>                 a process's lock: host, pid, command, heartbeat
//! accepted-gaps/<segment>    record: an operator accepted a WAL gap as a known loss
//! restore-points/<name>      record: a named restore point (name, LSN, timeline, time, who)
//! condemned/<pack>           marker: pack unreferenced since the time inside; prune deletes it after the grace period
//! ```

use std::fmt;

/// A typed object key; [`fmt::Display`] gives the key relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKey {
    /// The repository config.
    Config,
    /// The encrypted id key.
    IdKey,
    /// A version of the recipient set.
    KeySet(u32),
    /// The record of the WAL segment size the repository's names are spelled with (outside
    /// `wal/`, so WAL listings never see it).
    SegmentSize,
    /// A WAL file, grouped in a directory chosen by the caller (the timeline).
    Wal {
        /// Grouping directory.
        dir: String,
        /// File name.
        name: String,
    },
    /// A pack.
    Pack(String),
    /// An index object.
    Index(String),
    /// A snapshot manifest.
    Manifest(String),
    /// A snapshot record.
    Snapshot(String),
    /// A pin marker.
    Pin(String),
    /// A condemned-pack marker.
    Condemned(String),
    /// A lock object.
    Lock(String),
    /// An operator's acceptance of a WAL gap, by its first missing segment's key
    /// (`wal/<dir>/<name>` with `/` as `_`), so verify stops re-reporting a known loss.
    AcceptedGap(String),
    /// A named restore point (`radd restore-point`), by its name in key-safe spelling (the
    /// caller encodes it), so `restore --name` can find the snapshot and WAL that reach it.
    RestorePoint(String),
}

impl ObjectKey {
    /// Directory prefix for WAL objects.
    pub const WAL_DIR: &'static str = "wal";
    /// Directory prefix for packs.
    pub const PACK_DIR: &'static str = "packs";
    /// Directory prefix for indexes.
    pub const INDEX_DIR: &'static str = "index";
    /// Directory prefix for snapshot records.
    pub const SNAPSHOT_DIR: &'static str = "snapshots";
    /// Directory prefix for manifests.
    pub const MANIFEST_DIR: &'static str = "manifests";
    /// Directory prefix for locks.
    pub const LOCK_DIR: &'static str = "locks";
    /// Directory prefix for condemned-pack markers.
    pub const CONDEMNED_DIR: &'static str = "condemned";
    /// Directory prefix for pins.
    pub const PIN_DIR: &'static str = "pins";
    /// Directory prefix for accepted WAL gaps.
    pub const ACCEPTED_GAP_DIR: &'static str = "accepted-gaps";
    /// Directory prefix for restore points.
    pub const RESTORE_POINT_DIR: &'static str = "restore-points";
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Config => f.write_str("config"),
            ObjectKey::IdKey => f.write_str("keys/id-key"),
            ObjectKey::KeySet(n) => write!(f, "keys/set-{n}"),
            ObjectKey::SegmentSize => f.write_str("wal-segment-size"),
            ObjectKey::Wal { dir, name } => write!(f, "{}/{dir}/{name}", Self::WAL_DIR),
            ObjectKey::Pack(id) => write!(f, "{}/{id}", Self::PACK_DIR),
            ObjectKey::Index(id) => write!(f, "{}/{id}", Self::INDEX_DIR),
            ObjectKey::Manifest(id) => write!(f, "{}/{id}", Self::MANIFEST_DIR),
            ObjectKey::Snapshot(id) => write!(f, "{}/{id}", Self::SNAPSHOT_DIR),
            ObjectKey::Pin(id) => write!(f, "{}/{id}", Self::PIN_DIR),
            ObjectKey::Condemned(id) => write!(f, "{}/{id}", Self::CONDEMNED_DIR),
            ObjectKey::Lock(id) => write!(f, "{}/{id}", Self::LOCK_DIR),
            ObjectKey::AcceptedGap(id) => write!(f, "{}/{id}", Self::ACCEPTED_GAP_DIR),
            ObjectKey::RestorePoint(id) => write!(f, "{}/{id}", Self::RESTORE_POINT_DIR),
        }
    }
}
