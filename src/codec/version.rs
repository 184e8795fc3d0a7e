//! Object format versions: the magic that starts a stored object and the keyed digest its
//! header holds. Only the digest differs between versions; the age payload is the same.
//!
//! Version 3 digests the object's repository key as well as its kind and content, so an
//! object moved or copied to another name no longer matches its digest there. Versions 1 and 2
//! (written before) do not: a WAL object of those versions is checked against its name by its
//! page headers (the archive layer does that; this module knows nothing of WAL).

use crate::crypto::{Digest, IdKey, KeyedStream, Purpose};

use super::{Error, HEADER_LEN, ObjectKind};

/// A stored object's format version, from its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `RADDOBJ1`: the repository's keyed id hash over kind ‖ plaintext. Packs are written so,
    /// because a pack's id is this digest (computed before its key exists).
    V1,
    /// `RADDOBJ2`: keyed BLAKE3 (derived key) over kind ‖ plaintext: WAL written before
    /// version 3.
    V2,
    /// `RADDOBJ3`: keyed BLAKE3 (its own derived key) over kind ‖ len(key) as u64 LE ‖ key ‖
    /// plaintext, where key is the object's repository key as `ObjectKey`
    /// displays it (`wal/00000001/000000010000000000000003`, `manifests/<snapshot>`): WAL and
    /// manifests.
    V3,
    /// `RADDOBJ4`: keyed BLAKE3 (its own derived key) over kind ‖ the pack's blob table
    /// (see [`blob_table_digest`]): packs of format 3. A pack's id is this digest, computed from
    /// the blob ids the backup already has instead of a second pass over the pack's bytes;
    /// the bytes are covered by the blob ids, which every reader of a pack checks.
    V4,
}

const MAGIC_V1: &[u8; 8] = b"RADDOBJ1";
const MAGIC_V2: &[u8; 8] = b"RADDOBJ2";
const MAGIC_V3: &[u8; 8] = b"RADDOBJ3";
const MAGIC_V4: &[u8; 8] = b"RADDOBJ4";

impl Version {
    /// The 8 bytes a stored object of this version starts with.
    #[must_use]
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            Version::V1 => MAGIC_V1,
            Version::V2 => MAGIC_V2,
            Version::V3 => MAGIC_V3,
            Version::V4 => MAGIC_V4,
        }
    }

    /// Whether this version's digest covers the object's key (a moved object fails it).
    #[must_use]
    pub fn binds_key(self) -> bool {
        self == Version::V3
    }

    /// Whether this version's digest covers the plaintext itself (version 4 covers the blob
    /// table; its caller checks the bytes against the blob ids).
    #[must_use]
    pub fn covers_plaintext(self) -> bool {
        self != Version::V4
    }

    fn purpose(self) -> Purpose {
        match self {
            Version::V1 => Purpose::ObjectV1,
            Version::V2 => Purpose::ObjectV2,
            Version::V3 => Purpose::ObjectV3,
            Version::V4 => Purpose::ObjectV4,
        }
    }

    /// An incremental digest of this version already fed the object's kind (and, for version
    /// 3, its key `object`); feed it the plaintext, then finish it.
    #[must_use]
    pub fn digester(self, id_key: &IdKey, kind: ObjectKind, object: &str) -> KeyedStream {
        let mut mac = id_key.hasher(self.purpose());
        mac.update(&[kind as u8]);
        if self.binds_key() {
            mac.update(&(object.len() as u64).to_le_bytes());
            mac.update(object.as_bytes());
        }
        mac
    }

    /// The keyed digest of this version of an object of `kind` stored under key `object`.
    #[must_use]
    pub fn digest(self, id_key: &IdKey, kind: ObjectKind, object: &str, plaintext: &[u8]) -> Digest {
        let mut mac = self.digester(id_key, kind, object);
        mac.update(plaintext);
        mac.finish()
    }
}

/// Keyed digest of an object's content, as stored in a version 1 header (the repository's id
/// hash; a pack's id).
#[must_use]
pub fn content_digest(id_key: &IdKey, kind: ObjectKind, plaintext: &[u8]) -> Digest {
    Version::V1.digest(id_key, kind, "", plaintext)
}

/// The version 4 digest of a pack holding `blobs` (id and length of each, in pack order):
/// kind ‖ u32 LE count ‖ (id ‖ u32 LE length)*. Equal tables mean equal content as far as
/// the blob ids can tell (they are keyed hashes of the bytes), so this names a pack without
/// hashing its bytes a second time.
#[must_use]
pub fn blob_table_digest(id_key: &IdKey, blobs: impl ExactSizeIterator<Item = (Digest, u32)>) -> Digest {
    let mut mac = Version::V4.digester(id_key, ObjectKind::Pack, "");
    mac.update(&u32::try_from(blobs.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (id, length) in blobs {
        mac.update(&id.0);
        mac.update(&length.to_le_bytes());
    }
    mac.finish()
}

/// Reads the keyed content digest from an object's header (the first [`HEADER_LEN`] bytes),
/// whatever its version; see [`header`] to learn which.
pub fn header_digest(stored: &[u8], object: &str) -> Result<Digest, Error> {
    header(stored, object).map(|(_, digest)| digest)
}

/// Reads an object's header (the first [`HEADER_LEN`] bytes): its version and keyed digest.
pub fn header(stored: &[u8], object: &str) -> Result<(Version, Digest), Error> {
    let version = match stored.get(..8) {
        Some(m) if m == MAGIC_V1 => Version::V1,
        Some(m) if m == MAGIC_V2 => Version::V2,
        Some(m) if m == MAGIC_V3 => Version::V3,
        Some(m) if m == MAGIC_V4 => Version::V4,
        _ => return Err(Error::Corrupt { object: object.to_owned(), reason: "missing radd object header".into() }),
    };
    let mut d = [0u8; 32];
    d.copy_from_slice(
        stored.get(8..HEADER_LEN).ok_or_else(|| Error::Corrupt {
            object: object.to_owned(),
            reason: "truncated radd object header".into(),
        })?,
    );
    Ok((version, Digest(d)))
}

/// Checks `plaintext` (of `kind`, stored under key `object`) against the digest its header of
/// `version` holds.
pub(super) fn check_digest(
    id_key: &IdKey,
    version: Version,
    kind: ObjectKind,
    plaintext: &[u8],
    expected: Digest,
    object: &str,
) -> Result<(), Error> {
    // A version 4 digest covers the pack's blob table, not its bytes: whoever reads the pack
    // checks every blob it uses against its id (restore, verify, manifest loading).
    if !version.covers_plaintext() || version.digest(id_key, kind, object, plaintext) == expected {
        return Ok(());
    }
    let reason = if version.binds_key() {
        "content does not match its keyed digest over kind, key and content: the object was damaged, or moved or copied here from another name"
    } else {
        "content does not match its keyed digest"
    };
    Err(Error::Corrupt { object: object.to_owned(), reason: reason.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{open, seal, seal_at};
    use crate::crypto::Identity;

    #[test]
    fn version_3_binds_the_key_and_older_versions_still_open() {
        let key = IdKey::generate(crate::crypto::KeyedHash::Blake3PerPurpose);
        let id = Identity::generate();
        let recipients = id.recipients();
        let name = "wal/00000001/000000010000000000000003";
        let (stored, digest) = seal_at(ObjectKind::Wal, b"segment", &key, &recipients, 1, name).unwrap();
        assert_eq!(header(&stored, name).unwrap(), (Version::V3, digest));
        assert_eq!(digest, Version::V3.digest(&key, ObjectKind::Wal, name, b"segment"));
        assert_eq!(open(ObjectKind::Wal, &stored, &key, &id, name).unwrap(), b"segment");
        // The same bytes under another name fail, and say why.
        let moved = "wal/00000001/000000010000000000000004";
        let err = open(ObjectKind::Wal, &stored, &key, &id, moved).unwrap_err();
        assert!(matches!(&err, Error::Corrupt { object, .. } if object == moved), "{err}");
        assert!(err.to_string().contains("moved or copied here from another name"), "{err}");
        // Length-prefixed: a key cannot be shifted into the content.
        assert_ne!(
            Version::V3.digest(&key, ObjectKind::Wal, "ab", b"c"),
            Version::V3.digest(&key, ObjectKind::Wal, "a", b"bc")
        );
        // Versions 1 and 2 do not bind the key: they open under any name (their WAL is checked
        // by its page headers instead).
        let (v1, _) = seal(ObjectKind::Wal, b"segment", &key, &recipients, 1, name).unwrap();
        assert_eq!(header(&v1, moved).unwrap().0, Version::V1);
        assert_eq!(open(ObjectKind::Wal, &v1, &key, &id, moved).unwrap(), b"segment");
        let mut v2 = v1.clone();
        v2[..8].copy_from_slice(Version::V2.magic());
        v2[8..HEADER_LEN].copy_from_slice(&Version::V2.digest(&key, ObjectKind::Wal, "", b"segment").0);
        assert_eq!(open(ObjectKind::Wal, &v2, &key, &id, moved).unwrap(), b"segment");
        // Each version has its own digest of the same content.
        let digests =
            [Version::V1, Version::V2, Version::V3].map(|v| v.digest(&key, ObjectKind::Wal, name, b"segment"));
        assert!(digests[0] != digests[1] && digests[1] != digests[2] && digests[0] != digests[2]);
    }
}
