//! The id key and every keyed hash made with it.
//!
//! One enum, [`KeyedHash`], says how a repository format turns the id key into hashes, and one
//! enum, [`Purpose`], says what a hash is for. Every call names its purpose, so no code can
//! compute "the keyed hash" without saying which one.
//!
//! Formats 1 and 2 used the raw id key for blob ids, pack digests, record tags, key-set MACs and
//! the id-key check alike. Blob ids are in the plaintext index, so bytes someone got backed up
//! (a small file in an uploaded tree) handed them a valid tag for those bytes as a record or
//! key set (docs/design.md §13.4). Format 3 derives one key per purpose (BLAKE3's
//! `derive_key`, own context string each), so a hash obtained for one purpose never passes for
//! another, and the raw key is never used directly.

use std::fmt;
use std::path::Path;

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Digest, Error, keyfile};

/// How a repository format turns the id key into keyed hashes; fixed per repository by its
/// format version (there is no default: whoever builds an [`IdKey`] names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedHash {
    /// Format 1: HMAC-SHA256 under the raw key for every purpose but the object digests of
    /// versions 2 and 3.
    HmacSha256,
    /// Format 2: keyed BLAKE3 under the raw key, otherwise as format 1 (several times faster:
    /// SIMD over 1 KiB chunks).
    Blake3,
    /// Format 3: keyed BLAKE3 under a key derived for each [`Purpose`]; the raw key itself is
    /// never used, so no hash can be replayed as one of another purpose.
    Blake3PerPurpose,
}

impl KeyedHash {
    /// The keyed hash of repository format `format` (1, 2 or 3; higher formats are refused
    /// before a key is built, so anything else is treated as the newest).
    #[must_use]
    pub fn of_format(format: u32) -> Self {
        match format {
            1 => KeyedHash::HmacSha256,
            2 => KeyedHash::Blake3,
            _ => KeyedHash::Blake3PerPurpose,
        }
    }
}

/// What a keyed hash is computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A chunk's id (deduplication; in the plaintext index).
    BlobId,
    /// The digest in a version 1 object header: kind ‖ plaintext (packs of formats 1 and 2,
    /// whose id it is).
    ObjectV1,
    /// The digest in a version 2 object header (WAL written 2026-11).
    ObjectV2,
    /// The digest in a version 3 object header: kind, key and content (WAL and manifests).
    ObjectV3,
    /// The digest in a version 4 object header: a pack's blob table (packs of format 3, whose
    /// id it is; the blobs' bytes are covered by their ids).
    ObjectV4,
    /// The tag of an authenticated plaintext record (snapshot records, index objects, restore
    /// points, accepted gaps).
    RecordTag,
    /// The MAC of a key set (`keys/set-<n>`).
    KeySetMac,
    /// The repository config's check that a configured id key is this repository's.
    IdKeyCheck,
}

impl Purpose {
    const ALL: [Purpose; 8] = [
        Purpose::BlobId,
        Purpose::ObjectV1,
        Purpose::ObjectV2,
        Purpose::ObjectV3,
        Purpose::ObjectV4,
        Purpose::RecordTag,
        Purpose::KeySetMac,
        Purpose::IdKeyCheck,
    ];

    /// BLAKE3 key-derivation context of this purpose in format 3. Versions 2 and 3 object
    /// digests keep the contexts they have had in every format, so those objects read the same
    /// whatever the repository's format.
    fn context(self) -> &'static str {
        match self {
            Purpose::BlobId => "radd 2026-12 format 3 blob id",
            Purpose::ObjectV1 => "radd 2026-12 format 3 object digest v1",
            Purpose::ObjectV2 => "radd 2026-11 keyed object digest v2",
            Purpose::ObjectV3 => "radd 2026-12 keyed object digest v3: kind, key, content",
            Purpose::ObjectV4 => "radd 2026-12 format 3 object digest v4: kind, blob table",
            Purpose::RecordTag => "radd 2026-12 format 3 record tag: key, payload",
            Purpose::KeySetMac => "radd 2026-12 format 3 key set mac",
            Purpose::IdKeyCheck => "radd 2026-12 format 3 id key check",
        }
    }

    /// Whether formats 1 and 2 use a derived key for this purpose too (the object digests of
    /// versions 2, 3 and 4 always did or do).
    fn always_derived(self) -> bool {
        matches!(self, Purpose::ObjectV2 | Purpose::ObjectV3 | Purpose::ObjectV4)
    }
}

/// The repository's secret key for keyed hashes: ids of identical data are equal, yet reveal
/// nothing about content to someone without the key. Holds the hash of its repository's format
/// and, for that format, the derived key of every purpose. Zeroed on drop.
#[derive(Clone)]
pub struct IdKey {
    raw: Zeroizing<[u8; 32]>,
    scheme: KeyedHash,
    derived: std::sync::Arc<Zeroizing<[[u8; 32]; Purpose::ALL.len()]>>,
}

impl IdKey {
    /// A fresh random key hashing with `scheme`.
    #[must_use]
    pub fn generate(scheme: KeyedHash) -> Self {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::fill(&mut raw[..]);
        Self::build(raw, scheme)
    }

    /// Rebuilds a key from its raw bytes (e.g. after decrypting the repository's copy).
    pub fn from_bytes(bytes: &[u8], scheme: KeyedHash) -> Result<Self, Error> {
        let raw: [u8; 32] =
            bytes.try_into().map_err(|_| Error::Corrupt(format!("id key has {} bytes, expected 32", bytes.len())))?;
        Ok(Self::build(Zeroizing::new(raw), scheme))
    }

    fn build(raw: Zeroizing<[u8; 32]>, scheme: KeyedHash) -> Self {
        let mut derived = Zeroizing::new([[0u8; 32]; Purpose::ALL.len()]);
        for (slot, purpose) in derived.iter_mut().zip(Purpose::ALL) {
            *slot = blake3::derive_key(purpose.context(), &raw[..]);
        }
        IdKey { raw, scheme, derived: std::sync::Arc::new(derived) }
    }

    /// The same key material hashing with `scheme` (another repository format).
    #[must_use]
    pub fn with_scheme(&self, scheme: KeyedHash) -> Self {
        Self::build(self.raw.clone(), scheme)
    }

    /// The keyed hash in use.
    #[must_use]
    pub fn scheme(&self) -> KeyedHash {
        self.scheme
    }

    /// The raw key bytes, for sealing the repository's encrypted copy.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Loads the key from a hex file with mode 0600, for a repository hashing with `scheme`.
    pub fn load(path: &Path, scheme: KeyedHash) -> Result<Self, Error> {
        let invalid = || Error::InvalidKeyFile { path: path.to_owned(), what: "radd id key (64 hex digits)" };
        let text = keyfile::read_secret_file(path)?;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default();
        let bytes = Zeroizing::new(hex::decode(line).map_err(|_| invalid())?);
        Self::from_bytes(&bytes, scheme).map_err(|_| invalid())
    }

    /// Writes the key as hex to a new file with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = Zeroizing::new(format!(
            "# radd id key: keyed ids for chunks; decrypts nothing, but keep it private\n{}\n",
            hex::encode(*self.raw)
        ));
        keyfile::write_secret_file(path, text.as_bytes())
    }

    /// A chunk's id: the hot path of every backup, so one call without a stream. Crate-private:
    /// the format takes it as a `repo::BlobId` (`BlobId::of`, the one public way to make one),
    /// which keeps it apart from other digests.
    #[must_use]
    pub(crate) fn blob_id(&self, data: &[u8]) -> Digest {
        self.hash(Purpose::BlobId, data)
    }

    /// The keyed hash of `data` for `purpose`.
    #[must_use]
    pub fn hash(&self, purpose: Purpose, data: &[u8]) -> Digest {
        match self.key_for(purpose) {
            Key::Hmac(key) => {
                let mut mac = hmac_sha256(key);
                mac.update(data);
                Digest(mac.finalize().into_bytes().into())
            }
            Key::Blake3(key) => Digest(*blake3::keyed_hash(key, data).as_bytes()),
        }
    }

    /// An incremental keyed hash for `purpose` (equal to [`IdKey::hash`] of everything fed),
    /// for data that arrives in pieces.
    #[must_use]
    pub fn hasher(&self, purpose: Purpose) -> KeyedStream {
        match self.key_for(purpose) {
            Key::Hmac(key) => KeyedStream(Keyed::Hmac(hmac_sha256(key))),
            Key::Blake3(key) => KeyedStream(Keyed::Blake3(Box::new(blake3::Hasher::new_keyed(key)))),
        }
    }

    fn key_for(&self, purpose: Purpose) -> Key<'_> {
        // `ALL` lists the purposes in declaration order, so the discriminant is the slot.
        let derived = || &self.derived[purpose as usize];
        match self.scheme {
            _ if purpose.always_derived() => Key::Blake3(derived()),
            KeyedHash::HmacSha256 => Key::Hmac(&self.raw),
            KeyedHash::Blake3 => Key::Blake3(&self.raw),
            KeyedHash::Blake3PerPurpose => Key::Blake3(derived()),
        }
    }
}

enum Key<'a> {
    Hmac(&'a [u8; 32]),
    Blake3(&'a [u8; 32]),
}

fn hmac_sha256(key: &[u8; 32]) -> hmac::Hmac<Sha256> {
    // HMAC takes keys of any length; a 32-byte key cannot be refused.
    match hmac::Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(<redacted>)")
    }
}

/// Incremental keyed hash under the id key; see [`IdKey::hasher`].
#[derive(Clone)]
pub struct KeyedStream(Keyed);

#[derive(Clone)]
enum Keyed {
    Hmac(hmac::Hmac<Sha256>),
    Blake3(Box<blake3::Hasher>),
}

impl KeyedStream {
    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            Keyed::Hmac(mac) => mac.update(data),
            Keyed::Blake3(hasher) => {
                hasher.update(data);
            }
        }
    }

    /// The keyed hash of everything fed so far.
    #[must_use]
    pub fn finish(self) -> Digest {
        match self.0 {
            Keyed::Hmac(mac) => Digest(mac.finalize().into_bytes().into()),
            Keyed::Blake3(hasher) => Digest(*hasher.finalize().as_bytes()),
        }
    }
}

impl fmt::Debug for KeyedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyedStream(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMES: [KeyedHash; 3] = [KeyedHash::HmacSha256, KeyedHash::Blake3, KeyedHash::Blake3PerPurpose];

    #[test]
    fn hashes_depend_on_the_key_and_incremental_matches_one_shot() {
        for scheme in SCHEMES {
            let (a, b) = (IdKey::generate(scheme), IdKey::generate(scheme));
            for purpose in Purpose::ALL {
                assert_eq!(a.hash(purpose, b"x"), a.hash(purpose, b"x"));
                assert_ne!(a.hash(purpose, b"x"), b.hash(purpose, b"x"), "{scheme:?} {purpose:?}");
                let mut h = a.hasher(purpose);
                h.update(b"bl");
                h.update(b"ock");
                assert_eq!(h.finish(), a.hash(purpose, b"block"));
            }
            let d = a.blob_id(b"x");
            assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
    }

    #[test]
    fn formats_1_and_2_are_the_standard_keyed_hashes_of_the_raw_key() {
        let hmac_key = IdKey::generate(KeyedHash::HmacSha256);
        let raw = *hmac_key.as_bytes();
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&raw).unwrap();
        mac.update(b"block");
        assert_eq!(hmac_key.blob_id(b"block").0, <[u8; 32]>::from(mac.finalize().into_bytes()));
        let blake = hmac_key.with_scheme(KeyedHash::Blake3);
        assert_eq!(blake.blob_id(b"block").0, *blake3::keyed_hash(&raw, b"block").as_bytes());
        // Formats 1 and 2 share one hash between ids, record tags and key-set MACs: the weakness
        // format 3 removes.
        for old in [&hmac_key, &blake] {
            assert_eq!(old.blob_id(b"r"), old.hash(Purpose::RecordTag, b"r"));
            assert_eq!(old.blob_id(b"r"), old.hash(Purpose::KeySetMac, b"r"));
        }
        // Object digests of versions 2 and 3 are the same in every format.
        let separated = hmac_key.with_scheme(KeyedHash::Blake3PerPurpose);
        for purpose in [Purpose::ObjectV2, Purpose::ObjectV3, Purpose::ObjectV4] {
            assert_eq!(hmac_key.hash(purpose, b"o"), separated.hash(purpose, b"o"));
            assert_eq!(blake.hash(purpose, b"o"), separated.hash(purpose, b"o"));
        }
    }

    #[test]
    fn format_3_gives_every_purpose_its_own_key_and_never_uses_the_raw_one() {
        let key = IdKey::generate(KeyedHash::Blake3PerPurpose);
        let raw = *key.as_bytes();
        let hashes: Vec<Digest> = Purpose::ALL.iter().map(|p| key.hash(*p, b"same bytes")).collect();
        for (i, a) in hashes.iter().enumerate() {
            assert_ne!(
                a.0,
                *blake3::keyed_hash(&raw, b"same bytes").as_bytes(),
                "{:?} uses the raw key",
                Purpose::ALL[i]
            );
            for b in &hashes[i + 1..] {
                assert_ne!(a, b, "two purposes share a key");
            }
        }
    }
}
