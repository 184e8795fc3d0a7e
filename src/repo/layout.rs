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

use super::{PackId, SnapshotId};

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

    /// The key of a snapshot record.
    #[must_use]
    pub fn snapshot(id: &SnapshotId) -> ObjectKey {
        ObjectKey::Snapshot(id.to_string())
    }

    /// The key of a snapshot's manifest.
    #[must_use]
    pub fn manifest(id: &SnapshotId) -> ObjectKey {
        ObjectKey::Manifest(id.to_string())
    }

    /// The key of a pack.
    #[must_use]
    pub fn pack(id: &PackId) -> ObjectKey {
        ObjectKey::Pack(id.to_string())
    }

    /// The key a listing returned, back as the object it names: the exact inverse of
    /// [`fmt::Display`], so the layout is spelled in one place both ways. `None` for a key
    /// outside the layout (an unknown prefix, an empty id, an id with a `/` in it, a WAL key
    /// not exactly `wal/<dir>/<name>`): a typed listing skips such objects instead of guessing.
    #[must_use]
    pub fn parse(key: &str) -> Option<ObjectKey> {
        match key {
            "config" => return Some(ObjectKey::Config),
            "keys/id-key" => return Some(ObjectKey::IdKey),
            "wal-segment-size" => return Some(ObjectKey::SegmentSize),
            _ => {}
        }
        let (dir, rest) = key.split_once('/')?;
        let segment = |s: &str| (!s.is_empty() && !s.contains('/')).then(|| s.to_owned());
        let id = || segment(rest);
        match dir {
            "keys" => {
                let n = rest.strip_prefix("set-")?;
                // Only the canonical spelling: `u32::from_str` also takes `+1` and `01`.
                let version: u32 = n.parse().ok()?;
                (version.to_string() == n).then_some(ObjectKey::KeySet(version))
            }
            Self::WAL_DIR => {
                let (dir, name) = rest.split_once('/')?;
                Some(ObjectKey::Wal { dir: segment(dir)?, name: segment(name)? })
            }
            Self::PACK_DIR => id().map(ObjectKey::Pack),
            Self::INDEX_DIR => id().map(ObjectKey::Index),
            Self::MANIFEST_DIR => id().map(ObjectKey::Manifest),
            Self::SNAPSHOT_DIR => id().map(ObjectKey::Snapshot),
            Self::PIN_DIR => id().map(ObjectKey::Pin),
            Self::CONDEMNED_DIR => id().map(ObjectKey::Condemned),
            Self::LOCK_DIR => id().map(ObjectKey::Lock),
            Self::ACCEPTED_GAP_DIR => id().map(ObjectKey::AcceptedGap),
            Self::RESTORE_POINT_DIR => id().map(ObjectKey::RestorePoint),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::ObjectKey;

    /// Every variant over several ids: `parse(display(k)) == k`.
    #[test]
    fn parse_inverts_display() {
        let ids = ["a", "0123abcdef", "20260102T030405Z-1f2e", "000000010000000000000003.partial", "x_y-z.tmp#1"];
        let mut keys = vec![ObjectKey::Config, ObjectKey::IdKey, ObjectKey::SegmentSize];
        for n in [0, 1, 7, 10, 4_294_967_295] {
            keys.push(ObjectKey::KeySet(n));
        }
        for id in ids {
            let id = id.to_owned();
            keys.extend([
                ObjectKey::Pack(id.clone()),
                ObjectKey::Index(id.clone()),
                ObjectKey::Manifest(id.clone()),
                ObjectKey::Snapshot(id.clone()),
                ObjectKey::Pin(id.clone()),
                ObjectKey::Condemned(id.clone()),
                ObjectKey::Lock(id.clone()),
                ObjectKey::AcceptedGap(id.clone()),
                ObjectKey::RestorePoint(id.clone()),
            ]);
            for dir in ["00000001", "0000000A", "d"] {
                keys.push(ObjectKey::Wal { dir: dir.to_owned(), name: id.clone() });
            }
        }
        for key in keys {
            let spelled = key.to_string();
            assert_eq!(ObjectKey::parse(&spelled), Some(key), "{spelled}");
        }
    }

    /// Keys outside the layout are refused, not guessed at.
    #[test]
    fn parse_rejects_junk() {
        for junk in [
            "",
            "/",
            "configs",
            "config/x",
            "keys",
            "keys/",
            "keys/set-",
            "keys/set-x",
            "keys/set-01",
            "keys/set-+1",
            "keys/set-4294967296",
            "keys/other",
            "wal",
            "wal/",
            "wal/00000001",
            "wal/00000001/",
            "wal//name",
            "wal/a/b/c",
            "packs",
            "packs/",
            "packs/a/b",
            "snapshots//",
            "elsewhere/x",
            "Packs/x",
        ] {
            assert_eq!(ObjectKey::parse(junk), None, "{junk:?}");
        }
    }
}
