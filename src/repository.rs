//! An opened repository: the object store plus the keys this host holds, and the operations
//! that need both — sealing/opening encrypted objects and authenticated plaintext records.
//!
//! Plaintext records (repository config, indexes, snapshot records) hold only keyed ids, sizes,
//! times and LSNs, so a backup host with no age identity can list snapshots and deduplicate;
//! each carries a keyed digest under the id key, so tampering is detected. File names, checksums and
//! data are only ever stored encrypted (manifests, packs, WAL).

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::codec::{self, ObjectKind};
use crate::config::Config;
use crate::crypto::{self, Digest, IdKey, Identity, KeyedHash, Purpose, Recipients};
use crate::error::ErrorKind;
use crate::repo::{self, ObjectKey, PutOutcome, Repo};

mod buffers;
mod listing;
mod objects;
mod record;
pub use buffers::{BufferPool, ReadBuffers};
pub use listing::{Stored, WalKey};
pub use record::StoredRecord;

/// Records of formats 1 and 2: the tag is the repository's one keyed hash of the payload.
const RECORD_MAGIC_V1: &[u8; 8] = b"RADDREC1";
/// Records of format 3: the tag, under the record key of its own, covers the record's key too.
const RECORD_MAGIC_V2: &[u8; 8] = b"RADDREC2";
/// Format of new repositories: 3 = one derived key per purpose of the keyed hash (no hash of
/// one purpose passes for another), packs named by their blob table, files checked by CRC-32C.
/// Formats 1 (HMAC-SHA256) and 2 (keyed BLAKE3 under the raw key) are still read and written.
const FORMAT_VERSION: u32 = 3;
/// Bytes before a record's payload: 8 of magic and a 32-byte authentication tag.
pub const RECORD_HEADER: usize = 40;
const ID_KEY_CHECK: &[u8] = b"radd id key check v1";

/// Errors opening or initialising a repository, or reading its records.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `repo init` on a location that already holds a repository.
    #[error("repository {location} is already initialised; radd never re-initialises a repository")]
    AlreadyInitialised {
        /// Where.
        location: String,
    },
    /// No repository at the configured location.
    #[error("no radd repository at {location}; create one with `radd repo init`")]
    NotInitialised {
        /// Where.
        location: String,
    },
    /// The repository was written by an incompatible radd.
    #[error(
        "repository {location} has format version {found}; this radd reads versions 1 to {FORMAT_VERSION}: upgrade radd"
    )]
    Version {
        /// Where.
        location: String,
        /// The version found.
        found: u32,
    },
    /// The configured id key does not belong to this repository.
    #[error(
        "keys.id_key_file does not belong to repository {location}; use the id key written by `radd repo init` for it, or remove the setting to recover it with the identity"
    )]
    WrongIdKey {
        /// Where.
        location: String,
    },
    /// A command that decrypts was run without an identity.
    #[error("this command needs the age identity: set keys.identity_file (restore hosts only)")]
    NoIdentity,
    /// A plaintext record failed authentication or parsing.
    #[error("record {key} is corrupt: {reason}; run `radd verify`")]
    CorruptRecord {
        /// Object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Another process holds the repository's exclusive lock.
    #[error(transparent)]
    Locked(#[from] crate::repo::lock::Error),
    /// Key loading failed.
    #[error(transparent)]
    Crypto(#[from] crypto::Error),
    /// Sealing or opening failed.
    #[error(transparent)]
    Codec(#[from] codec::Error),
    /// Storage failed.
    #[error(transparent)]
    Repo(#[from] repo::Error),
    /// A codec task was cancelled (the runtime is shutting down): a broken invariant, not the
    /// repository's fault.
    #[error("{0}; this is a bug in radd, please report it")]
    Internal(String),
}

impl Error {
    /// Category for exit codes.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::AlreadyInitialised { .. } => ErrorKind::Conflict,
            Error::NotInitialised { .. } => ErrorKind::NotFound,
            Error::Version { .. } | Error::WrongIdKey { .. } | Error::NoIdentity => ErrorKind::Config,
            Error::CorruptRecord { .. } => ErrorKind::Integrity,
            Error::Locked(e) => e.kind(),
            Error::Crypto(e) => e.kind(),
            Error::Codec(e) => e.kind(),
            Error::Repo(e) => e.kind(),
            Error::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Runs CPU-bound codec work off the async threads. A panic there is a bug in radd and is
/// re-raised on the caller's task unchanged; a task cancelled by runtime shutdown is an error.
pub(crate) async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Internal(format!("a codec task was cancelled: {e}"))),
    }
}

/// A pack's name is the digest in its (version 1) header, so a pack moved or copied to another
/// pack's name is refused here, before it is decrypted: its content digest still matches its
/// header, only the name it was read from does not. Other objects pass (version 3 objects bind
/// their key in the digest itself).
fn check_content_address(key: &ObjectKey, stored: &[u8]) -> Result<(), Error> {
    let ObjectKey::Pack(id) = key else { return Ok(()) };
    let name = key.to_string();
    let digest = codec::header_digest(stored, &name)?;
    if digest.to_string() == *id {
        return Ok(());
    }
    Err(codec::Error::Corrupt {
        object: name,
        reason: format!("its header says it is pack {digest}: moved or copied here from another name"),
    }
    .into())
}

/// The `config` object at the repository root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoMeta {
    /// Format version of the repository.
    pub format: u32,
    /// Random repository id.
    pub id: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Keyed digest of a fixed string under the id key: detects a wrong id key before anything is written.
    pub id_key_check: Digest,
}

/// Storage plus keys; what every command works with.
#[derive(Debug, Clone)]
pub struct Repository {
    /// The object store. Private: other modules list through the typed listings
    /// ([`Repository::list_snapshots`], …) and reach objects by key through `objects.rs`.
    store: Repo,
    /// The repository's id key.
    pub id_key: IdKey,
    /// Recipients new objects are encrypted to.
    pub recipients: Recipients,
    identity: Option<std::sync::Arc<Identity>>,
    /// The repository's config object.
    pub meta: RepoMeta,
    /// zstd level for new objects.
    pub compression_level: i32,
}

impl Repository {
    /// Creates a new repository: writes the encrypted id key, then the config object.
    /// Generates the id key file if it does not exist yet. Refuses an existing repository.
    pub async fn init(config: &Config) -> Result<Self, Error> {
        let store = Repo::open(&config.repository)?;
        let recipients = Recipients::parse(&config.keys.recipients)?;
        if store.exists(&ObjectKey::Config).await? {
            return Err(Error::AlreadyInitialised { location: store.location().to_owned() });
        }
        let id_key_file = config.keys.id_key_file.as_deref().ok_or(crypto::Error::KeyFileIo {
            path: "keys.id_key_file".into(),
            source: std::io::Error::other("keys.id_key_file must be set for `radd repo init`"),
        })?;
        let scheme = KeyedHash::of_format(FORMAT_VERSION);
        let id_key = if id_key_file.exists() {
            IdKey::load(id_key_file, scheme)?
        } else {
            let key = IdKey::generate(scheme);
            key.save(id_key_file)?;
            key
        };
        let sealed = recipients.encrypt(id_key.as_bytes())?;
        if store.put_new(&ObjectKey::IdKey, sealed.into()).await? == PutOutcome::AlreadyExists {
            return Err(Error::AlreadyInitialised { location: store.location().to_owned() });
        }
        let mut random = [0u8; 8];
        rand::fill(&mut random[..]);
        let meta = RepoMeta {
            format: FORMAT_VERSION,
            id: hex::encode(random),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            id_key_check: id_key.hash(Purpose::IdKeyCheck, ID_KEY_CHECK),
        };
        let body = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Internal(format!("serialising the repository config: {e}")))?;
        if store.put_new(&ObjectKey::Config, body.into()).await? == PutOutcome::AlreadyExists {
            return Err(Error::AlreadyInitialised { location: store.location().to_owned() });
        }
        Ok(Repository {
            store,
            id_key,
            recipients,
            identity: None,
            meta,
            compression_level: config.backup.compression_level,
        })
    }

    /// Opens an existing repository with the keys this host holds. `need_identity` makes a
    /// missing identity an error up front (restore, verify) rather than at the first decrypt.
    pub async fn open(config: &Config, need_identity: bool) -> Result<Self, Error> {
        let store = Repo::open(&config.repository)?;
        let meta_bytes = match store.get(&ObjectKey::Config).await {
            Ok(b) => b,
            Err(repo::Error::NotFound { .. }) => {
                return Err(Error::NotInitialised { location: store.location().to_owned() });
            }
            Err(e) => return Err(e.into()),
        };
        let meta: RepoMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| Error::CorruptRecord { key: ObjectKey::Config.to_string(), reason: e.to_string() })?;
        if !(1..=FORMAT_VERSION).contains(&meta.format) {
            return Err(Error::Version { location: store.location().to_owned(), found: meta.format });
        }
        let identity = match &config.keys.identity_file {
            Some(path) if need_identity || path.exists() => Some(std::sync::Arc::new(Identity::load(path)?)),
            _ => None,
        };
        if need_identity && identity.is_none() {
            return Err(Error::NoIdentity);
        }
        let key_set = latest_key_set(&store).await?;
        let scheme = KeyedHash::of_format(meta.format);
        let id_key = match (&config.keys.id_key_file, &identity) {
            (Some(path), _) if path.exists() => IdKey::load(path, scheme)?,
            (_, Some(identity)) => {
                let sealed = match &key_set {
                    Some((_, set)) => set.sealed_id_key()?,
                    None => store.get(&ObjectKey::IdKey).await?.to_vec(),
                };
                IdKey::from_bytes(&identity.decrypt(&sealed)?, scheme)?
            }
            _ => return Err(Error::NoIdentity),
        };
        if id_key.hash(Purpose::IdKeyCheck, ID_KEY_CHECK) != meta.id_key_check {
            return Err(Error::WrongIdKey { location: store.location().to_owned() });
        }
        // After `radd key add/remove`, the repository's key set decides the recipients.
        let recipients = match &key_set {
            Some((n, set)) => {
                set.authenticate(&id_key, *n)?;
                Recipients::parse(&set.recipients)?
            }
            None => Recipients::parse(&config.keys.recipients)?,
        };
        Ok(Repository { store, id_key, recipients, identity, meta, compression_level: config.backup.compression_level })
    }

    /// The identity, or [`Error::NoIdentity`].
    pub fn identity(&self) -> Result<&Identity, Error> {
        self.identity.as_deref().ok_or(Error::NoIdentity)
    }

    /// Compresses and encrypts `plaintext` off the async threads; returns the stored bytes and
    /// the keyed content digest (which content-addressed callers use as the object name).
    pub async fn seal(&self, kind: ObjectKind, plaintext: Vec<u8>, name: String) -> Result<(Vec<u8>, Digest), Error> {
        let id_key = self.id_key.clone();
        let recipients = self.recipients.clone();
        let level = self.compression_level;
        Ok(off_thread(move || codec::seal(kind, &plaintext, &id_key, &recipients, level, &name)).await??)
    }

    /// Like [`Repository::seal`] for a caller that already computed the content digest.
    pub async fn seal_known(
        &self,
        kind: ObjectKind,
        plaintext: Vec<u8>,
        digest: Digest,
        name: String,
    ) -> Result<Vec<u8>, Error> {
        let recipients = self.recipients.clone();
        let level = self.compression_level;
        Ok(off_thread(move || codec::seal_with_digest(kind, &plaintext, digest, &recipients, level, &name)).await??)
    }

    /// Seals `plaintext` as an object of `kind` bound to `key` (format version 3: the digest
    /// covers the key, so the object opens only under it) and writes it create-only there.
    /// Returns the outcome, the keyed digest and the stored size; on `AlreadyExists` the caller
    /// decides whether the existing object is acceptable.
    pub async fn seal_put(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        plaintext: Vec<u8>,
    ) -> Result<(PutOutcome, Digest, u64), Error> {
        let (id_key, recipients, level, name) =
            (self.id_key.clone(), self.recipients.clone(), self.compression_level, key.to_string());
        let (sealed, digest) =
            off_thread(move || codec::seal_at(kind, &plaintext, &id_key, &recipients, level, &name)).await??;
        let stored = sealed.len() as u64;
        let outcome = self.store.put_new(key, sealed.into()).await?;
        Ok((outcome, digest, stored))
    }

    /// Reads, decrypts and verifies an object of `kind`.
    pub async fn get_open(&self, kind: ObjectKind, key: &ObjectKey) -> Result<Vec<u8>, Error> {
        let stored = self.store.get(key).await?;
        self.open_bytes(kind, key, stored).await
    }

    /// Decrypts and verifies already-fetched object bytes (off the async threads).
    pub async fn open_bytes(&self, kind: ObjectKind, key: &ObjectKey, stored: Bytes) -> Result<Vec<u8>, Error> {
        self.open_stored(kind, key, stored, Vec::new(), true).await.map(|(plaintext, _)| plaintext)
    }

    /// [`Repository::open_bytes`] of bytes read with [`Repository::get_stored_into`] into a
    /// buffer of `buffers.stored`, to which it goes back; the plaintext is in a buffer of
    /// `buffers.plaintext`. A verify that reads every pack allocates a handful of buffers, not
    /// two per pack (see [`BufferPool`]).
    pub async fn open_pooled(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        stored: Vec<u8>,
        buffers: &ReadBuffers,
    ) -> Result<Vec<u8>, Error> {
        let (plaintext, stored) = self.open_stored(kind, key, stored, buffers.plaintext.get(), true).await?;
        buffers.stored.put(stored);
        Ok(plaintext)
    }

    /// Reads and decrypts an object without recomputing its keyed digest: see
    /// [`codec::open_unhashed`] for when that is sound (restore, which checks file SHA-256s).
    pub async fn get_open_unhashed(&self, kind: ObjectKind, key: &ObjectKey) -> Result<Vec<u8>, Error> {
        let stored = self.store.get(key).await?;
        self.open_stored(kind, key, stored, Vec::new(), false).await.map(|(plaintext, _)| plaintext)
    }

    /// [`Repository::get_open_unhashed`] with the stored bytes in a buffer of
    /// `buffers.stored` (given back) and the plaintext in one of `buffers.plaintext`: a restore
    /// reads every pack into memory it already holds. Decrypts once it has a permit of
    /// `opening`, returned with the plaintext: a caller can read more objects ahead than it
    /// decrypts at once (reading waits for the disk or the network, decrypting for a core) and
    /// hold the permit while it works on the plaintext, the large buffer.
    pub async fn get_open_unhashed_pooled(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        buffers: &ReadBuffers,
        opening: std::sync::Arc<tokio::sync::Semaphore>,
    ) -> Result<(Vec<u8>, tokio::sync::OwnedSemaphorePermit), Error> {
        let stored = self.store.get_into(key, buffers.stored.get()).await?;
        let permit = opening.acquire_owned().await.map_err(|e| Error::Internal(e.to_string()))?;
        let (plaintext, stored) = self.open_stored(kind, key, stored, buffers.plaintext.get(), false).await?;
        buffers.stored.put(stored);
        Ok((plaintext, permit))
    }

    /// Opens `stored` into `buffer` on a blocking thread, checking the keyed digest of the
    /// content when `check_digest`; gives the stored bytes back beside the plaintext.
    async fn open_stored<S: AsRef<[u8]> + Send + 'static>(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        stored: S,
        buffer: Vec<u8>,
        check_digest: bool,
    ) -> Result<(Vec<u8>, S), Error> {
        let identity = self.identity.clone().ok_or(Error::NoIdentity)?;
        check_content_address(key, stored.as_ref())?;
        let id_key = check_digest.then(|| self.id_key.clone());
        let name = key.to_string();
        let opened = off_thread(move || {
            let opened = match &id_key {
                Some(id_key) => codec::open_into(kind, stored.as_ref(), id_key, &identity, &name, buffer),
                None => codec::open_unhashed_into(kind, stored.as_ref(), &identity, &name, buffer),
            };
            opened.map(|plaintext| (plaintext, stored))
        })
        .await??;
        Ok(opened)
    }

    /// Keyed digest stored in an object's header, read with a ranged GET.
    pub async fn object_digest(&self, key: &ObjectKey) -> Result<Digest, Error> {
        let header = self.store.get_prefix(key, codec::HEADER_LEN as u64).await?;
        Ok(codec::header_digest(&header, &key.to_string())?)
    }

    /// Writes a plaintext record authenticated with the id key (create-only).
    pub async fn put_record<T: Serialize>(&self, key: &ObjectKey, record: &T) -> Result<PutOutcome, Error> {
        let json = serde_json::to_vec(record).map_err(|e| Error::Internal(format!("serialising record {key}: {e}")))?;
        self.put_record_bytes(key, &json).await
    }

    /// Writes `payload` as a plaintext record authenticated with the id key (create-only): the
    /// envelope of [`Repository::put_record`] around bytes the caller encoded (binary index
    /// objects).
    pub async fn put_record_bytes(&self, key: &ObjectKey, payload: &[u8]) -> Result<PutOutcome, Error> {
        let body = record_envelope(&self.id_key, self.meta.format, &key.to_string(), payload);
        Ok(self.store.put_new(key, body.into()).await?)
    }

    /// Reads and authenticates a plaintext record.
    pub async fn get_record<T: DeserializeOwned>(&self, key: &ObjectKey) -> Result<T, Error> {
        let payload = self.get_record_bytes(key).await?;
        serde_json::from_slice(&payload)
            .map_err(|e| Error::CorruptRecord { key: key.to_string(), reason: e.to_string() })
    }

    /// Reads a plaintext record and authenticates it with the id key; returns its payload
    /// (JSON, or what [`Repository::put_record_bytes`] wrote). A record that is not radd's or
    /// does not authenticate is [`Error::CorruptRecord`], never retried.
    pub async fn get_record_bytes(&self, key: &ObjectKey) -> Result<Bytes, Error> {
        let body = self.store.get(key).await?;
        self.check_record(key, &body)?;
        Ok(body.slice(RECORD_HEADER..))
    }

    /// [`Repository::get_record_bytes`] read into `buffer` (one of a [`BufferPool`], so that
    /// loading hundreds of index objects reuses a few buffers): the authenticated payload is
    /// `buffer[RECORD_HEADER..]`.
    pub async fn get_record_into(&self, key: &ObjectKey, buffer: Vec<u8>) -> Result<Vec<u8>, Error> {
        let body = self.store.get_into(key, buffer).await?;
        self.check_record(key, &body)?;
        Ok(body)
    }

    /// Checks a record's magic and authentication tag (`body` is the whole stored object).
    fn check_record(&self, key: &ObjectKey, body: &[u8]) -> Result<(), Error> {
        let corrupt = |reason: &str| Error::CorruptRecord { key: key.to_string(), reason: reason.to_owned() };
        let (magic, tag) =
            record_tag(&self.id_key, self.meta.format, &key.to_string(), body.get(RECORD_HEADER..).unwrap_or_default());
        if body.len() < RECORD_HEADER || &body[..8] != magic {
            return Err(corrupt(&format!(
                "not a radd record of this repository's format {} (expected magic {})",
                self.meta.format,
                String::from_utf8_lossy(magic)
            )));
        }
        if tag.0[..] != body[8..RECORD_HEADER] {
            return Err(corrupt(
                "authentication failed (modified, written with another id key, or copied here from another name)",
            ));
        }
        Ok(())
    }
}

/// The stored bytes of a record holding `payload` under the repository key `key` (as
/// `ObjectKey` displays it) in a repository of format `format`: magic ‖ tag ‖ payload. Public
/// so tests can write records as a given format does.
#[must_use]
pub fn record_envelope(id_key: &IdKey, format: u32, key: &str, payload: &[u8]) -> Vec<u8> {
    let (magic, tag) = record_tag(id_key, format, key, payload);
    let mut body = Vec::with_capacity(payload.len() + RECORD_HEADER);
    body.extend_from_slice(magic);
    body.extend_from_slice(&tag.0);
    body.extend_from_slice(payload);
    body
}

/// The record magic of format `format` and the tag of `payload` stored under `key`. Format 3
/// binds the key (length-prefixed, so key and payload cannot be shifted into each other): a
/// record copied to another name fails there.
fn record_tag(id_key: &IdKey, format: u32, key: &str, payload: &[u8]) -> (&'static [u8; 8], Digest) {
    if format < 3 {
        return (RECORD_MAGIC_V1, id_key.hash(Purpose::RecordTag, payload));
    }
    let mut tag = id_key.hasher(Purpose::RecordTag);
    tag.update(&(key.len() as u64).to_le_bytes());
    tag.update(key.as_bytes());
    tag.update(payload);
    (RECORD_MAGIC_V2, tag.finish())
}

const SET_PREFIX: &str = "keys/set-";

/// One version of the recipient set (`keys/set-<n>`): read here, because opening a repository
/// needs the newest one; written by `keyset` (key add/remove), above this layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySet {
    /// age recipients (`age1…`).
    pub recipients: Vec<String>,
    /// The id key, age-encrypted to `recipients`, hex.
    pub id_key: String,
    /// Keyed digest of the above under the id key, hex (set by [`KeySet::seal`]).
    pub mac: String,
}

impl KeySet {
    fn mac_input(&self, version: u32) -> Vec<u8> {
        format!("radd key set {version}\n{}\n{}", self.recipients.join("\n"), self.id_key).into_bytes()
    }

    /// Sets the authentication tag of version `version` of the set under `id_key`.
    pub fn seal(&mut self, id_key: &IdKey, version: u32) {
        self.mac = id_key.hash(Purpose::KeySetMac, &self.mac_input(version)).to_string();
    }

    /// The encrypted id key.
    pub fn sealed_id_key(&self) -> Result<Vec<u8>, Error> {
        hex::decode(&self.id_key).map_err(|e| Error::CorruptRecord { key: "keys/set".into(), reason: e.to_string() })
    }

    /// Checks the set was written by a holder of the id key.
    pub fn authenticate(&self, id_key: &IdKey, version: u32) -> Result<(), Error> {
        if id_key.hash(Purpose::KeySetMac, &self.mac_input(version)).to_string() == self.mac {
            Ok(())
        } else {
            Err(Error::CorruptRecord { key: format!("{SET_PREFIX}{version}"), reason: "authentication failed".into() })
        }
    }
}

/// The newest key set, if any (`None`: the config's recipients and `keys/id-key` apply).
async fn latest_key_set(store: &Repo) -> Result<Option<(u32, KeySet)>, Error> {
    let listed = store.list("keys").await?;
    let newest = listed.iter().filter_map(|l| l.key.strip_prefix(SET_PREFIX).and_then(|n| n.parse::<u32>().ok())).max();
    let Some(version) = newest else { return Ok(None) };
    let body = store.get(&ObjectKey::KeySet(version)).await?;
    let set: KeySet = serde_json::from_slice(&body)
        .map_err(|e| Error::CorruptRecord { key: format!("{SET_PREFIX}{version}"), reason: e.to_string() })?;
    Ok(Some((version, set)))
}
