//! Typed ids of the objects whose names are ids (snapshots, packs): each parses exactly what
//! its [`fmt::Display`] writes, so an id read back from a key is the id that was written, and
//! a string that cannot be one (a stray file's name) is refused at the listing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::crypto::Digest;

/// A snapshot's id (`<UTC start to the ms>-<8 hex>` since radd writes them; any key-safe
/// name is read). Stored as the same string as before the type existed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// The id as written in keys and records.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Accepts one non-empty key segment (no `/`): what can name `snapshots/<id>`.
impl FromStr for SnapshotId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.contains('/') {
            return Err(format!("{s:?} is not a snapshot id"));
        }
        Ok(SnapshotId(s.to_owned()))
    }
}

/// A pack's id: the keyed digest in its header, as lower-case hex (the only spelling radd
/// writes, so upper-case hex is refused: it would name another key). Serialised as that hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PackId(pub Digest);

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PackId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refused = || format!("{s:?} is not a pack id (64 lower-case hex digits)");
        let digest: Digest = s.parse().map_err(|_| refused())?;
        if digest.to_string() != s {
            return Err(refused());
        }
        Ok(PackId(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::{PackId, SnapshotId};
    use crate::crypto::Digest;

    #[test]
    fn snapshot_ids_round_trip() {
        for s in ["20260102T030405123Z-1f2e3d4c", "20250101T000000Z-abcdef01", "x"] {
            let id: SnapshotId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<SnapshotId>(&format!("\"{s}\"")).unwrap(), id);
        }
        for junk in ["", "a/b", "/"] {
            assert!(junk.parse::<SnapshotId>().is_err(), "{junk:?}");
        }
    }

    #[test]
    fn pack_ids_round_trip() {
        for seed in [&b""[..], b"a", b"pack"] {
            let id = PackId(Digest::sha256(seed));
            let spelled = id.to_string();
            assert_eq!(spelled.parse::<PackId>().unwrap(), id);
            assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{spelled}\""));
            assert!(spelled.to_uppercase().parse::<PackId>().is_err());
        }
        for junk in ["", "abc", "zz", &"0".repeat(63), &"0".repeat(65)] {
            assert!(junk.parse::<PackId>().is_err(), "{junk:?}");
        }
    }
}
