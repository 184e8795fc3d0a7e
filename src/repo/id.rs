//! Typed ids of the format: of the objects whose names are ids (snapshots, packs), and of the
//! blobs inside packs. Each parses exactly what its [`fmt::Display`] writes, so an id read back
//! from a key is the id that was written, and a string that cannot be one (a stray file's name)
//! is refused at the listing. A blob id is not a pack id nor an object digest, though all are
//! keyed digests: the types keep one from being looked up as another.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, IdKey};

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

/// A blob's id: the keyed hash of its plaintext under the repository's id key
/// ([`IdKey::blob_id`]), which deduplicates it and, from format 3, authenticates it at
/// restore. Serialised as 64 hex digits, as the digests it replaced were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlobId(Digest);

impl BlobId {
    /// The id of a blob holding `data`.
    #[must_use]
    pub fn of(id_key: &IdKey, data: &[u8]) -> Self {
        BlobId(id_key.blob_id(data))
    }

    /// The id stored as `bytes` (index tables, chunk lists).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        BlobId(Digest(bytes))
    }

    /// The id's 32 bytes, as stored in index tables and chunk lists.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0.0
    }

    /// The id as a digest (the pack blob table's digest hashes ids as digests).
    #[must_use]
    pub const fn digest(&self) -> Digest {
        self.0
    }

    /// An id made from `seed` for unit tests (SHA-256, not the keyed hash).
    #[cfg(test)]
    #[must_use]
    pub fn for_tests(seed: &[u8]) -> Self {
        BlobId(Digest::sha256(seed))
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for BlobId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(BlobId).map_err(|_| format!("{s:?} is not a blob id (64 hex digits)"))
    }
}

#[cfg(test)]
mod tests {
    use super::{BlobId, PackId, SnapshotId};
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

    #[test]
    fn blob_ids_round_trip() {
        let id = BlobId::from_bytes(Digest::sha256(b"blob").0);
        assert_eq!(id.to_string().parse::<BlobId>().unwrap(), id);
        assert_eq!(BlobId::from_bytes(*id.as_bytes()), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<BlobId>(&format!("\"{id}\"")).unwrap(), id);
        for junk in ["", "abc", &"0".repeat(63)] {
            assert!(junk.parse::<BlobId>().is_err(), "{junk:?}");
        }
    }
}
