//! The stored-object format in memory: [`ObjectKind`], the header length, the errors, and
//! sealing, opening and rewrapping a whole object held as bytes (packs, manifests, WAL read
//! back). The streamed writer for large plaintexts is [`super::stream`].

use std::io::{Read, Write};

use super::version::{Version, check_digest, content_digest, header};
use crate::crypto::{Digest, IdKey, Identity, Recipients};
use crate::error::ErrorKind;

/// Bytes before the age ciphertext: magic and keyed digest. A ranged read of this many bytes
/// gives an object's digest without downloading it.
pub const HEADER_LEN: usize = 8 + 32;

/// What an object holds; sealed into the ciphertext so one kind cannot be passed off as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    /// A WAL segment, history, backup-history or partial file.
    Wal = 1,
    /// A pack of chunks.
    Pack = 2,
    /// A snapshot manifest.
    Manifest = 3,
}

/// Errors from sealing or opening an object. `object` names the object for the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Encryption failed, or no identity held matches the object's recipients.
    #[error("object {object}: {source}")]
    Crypto {
        /// The object's key in the repository.
        object: String,
        /// What went wrong.
        source: crate::crypto::Error,
    },
    /// The object is not in radd's format, truncated, its ciphertext does not authenticate, or
    /// its content does not match its digest (for version 3: under the name it was read from).
    #[error("object {object} is corrupt: {reason}; run `radd verify` and restore from another snapshot")]
    Corrupt {
        /// The object's key in the repository.
        object: String,
        /// What check failed.
        reason: String,
    },
    /// The plaintext could not be read or the sealed object not written (a streamed seal), or
    /// the input changed length while it was read.
    #[error("cannot seal object {object}: {source}")]
    Io {
        /// The object's key in the repository.
        object: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// Crypto failures are key problems, I/O failures are I/O; everything else is integrity.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Crypto { source, .. } => source.kind(),
            Error::Corrupt { .. } => ErrorKind::Integrity,
            Error::Io { .. } => ErrorKind::Io,
        }
    }
}

/// Wraps a crypto failure of `object`: a ciphertext that does not authenticate is corruption
/// of that object, not a key problem.
fn crypto_error(object: &str, source: crate::crypto::Error) -> Error {
    match source {
        crate::crypto::Error::Unauthenticated(detail) => Error::Corrupt {
            object: object.to_owned(),
            reason: format!(
                "ciphertext does not authenticate ({detail}): the stored bytes were damaged or tampered with"
            ),
        },
        source => Error::Crypto { object: object.to_owned(), source },
    }
}

/// Compresses, encrypts and frames `plaintext` as version 1 (the content-addressed form:
/// packs, whose key is made from the returned digest). Returns the stored bytes and the digest.
pub fn seal(
    kind: ObjectKind,
    plaintext: &[u8],
    id_key: &IdKey,
    recipients: &Recipients,
    level: i32,
    object: &str,
) -> Result<(Vec<u8>, Digest), Error> {
    let digest = content_digest(id_key, kind, plaintext);
    Ok((seal_with_digest(kind, plaintext, digest, recipients, level, object)?, digest))
}

/// Seals `plaintext` as version 3 for storing under the repository key `key` (as
/// `ObjectKey` displays it): the digest covers kind, key and content, so the
/// object opens only under that name. Returns the stored bytes and the digest.
pub fn seal_at(
    kind: ObjectKind,
    plaintext: &[u8],
    id_key: &IdKey,
    recipients: &Recipients,
    level: i32,
    key: &str,
) -> Result<(Vec<u8>, Digest), Error> {
    let digest = Version::V3.digest(id_key, kind, key, plaintext);
    Ok((seal_framed(Frame { version: Version::V3, kind, digest }, plaintext, recipients, level, key)?, digest))
}

/// [`seal`] (version 1) for a caller that already computed the content digest (e.g. to check
/// whether the object is already stored).
pub fn seal_with_digest(
    kind: ObjectKind,
    plaintext: &[u8],
    digest: Digest,
    recipients: &Recipients,
    level: i32,
    object: &str,
) -> Result<Vec<u8>, Error> {
    seal_framed(Frame { version: Version::V1, kind, digest }, plaintext, recipients, level, object)
}

/// Seals a pack of format 3 as version 4, under the digest of its blob table
/// ([`super::blob_table_digest`], which the caller computed from the ids it already has).
pub fn seal_blob_table(
    plaintext: &[u8],
    digest: Digest,
    recipients: &Recipients,
    level: i32,
    object: &str,
) -> Result<Vec<u8>, Error> {
    seal_framed(Frame { version: Version::V4, kind: ObjectKind::Pack, digest }, plaintext, recipients, level, object)
}

/// What an object's frame says of it: the header's version and digest, and the kind inside
/// the encrypted payload.
struct Frame {
    version: Version,
    kind: ObjectKind,
    digest: Digest,
}

/// Frames a header of `version` with `digest` and the age payload. Compresses in one shot with
/// this thread's reused zstd context (no copy into a streaming window, no context allocated
/// per object), then encrypts the compressed bytes into the output.
fn seal_framed(
    Frame { version, kind, digest }: Frame,
    plaintext: &[u8],
    recipients: &Recipients,
    level: i32,
    object: &str,
) -> Result<Vec<u8>, Error> {
    let crypto = |source| Error::Crypto { object: object.to_owned(), source };
    let io = |e: std::io::Error| crypto(crate::crypto::Error::Encrypt(e.to_string()));
    let compressed = compress(plaintext, level).map_err(io)?;
    let mut out = Vec::with_capacity(HEADER_LEN + compressed.len() + compressed.len() / 4096 + 4096);
    out.extend_from_slice(version.magic());
    out.extend_from_slice(&digest.0);
    let mut encrypted = recipients.encrypting_writer(&mut out).map_err(crypto)?;
    encrypted.write_all(&[kind as u8]).map_err(io)?;
    encrypted.write_all(&(plaintext.len() as u64).to_le_bytes()).map_err(io)?;
    encrypted.write_all(&compressed).map_err(io)?;
    encrypted.finish().map_err(io)?;
    Ok(out)
}

/// Buffers for decrypted, still compressed payloads, shared by every thread that opens objects:
/// as many exist as objects were opened at once (a thread-local one per blocking thread would
/// multiply by the size of tokio's blocking pool, and allocating one per object spreads them
/// over every allocator arena).
static DECRYPTED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Decryption buffers kept in [`DECRYPTED`] for the next objects.
const KEPT_DECRYPTED_BUFFERS: usize = 4;

thread_local! {
    /// This thread's zstd compression context and its level: a context costs about a megabyte
    /// of tables, allocated (and page-faulted in) once per thread rather than once per object.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    /// This thread's zstd decompression context.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// One zstd frame of `plaintext` at `level`.
fn compress(plaintext: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some((current, compressor)) if *current == level => compressor,
            other => &mut other.insert((level, zstd::bulk::Compressor::new(level)?)).1,
        };
        let mut compressed = Vec::with_capacity(zstd::zstd_safe::compress_bound(plaintext.len()));
        compressor.compress_to_buffer(plaintext, &mut compressed)?;
        Ok(compressed)
    })
}

/// Decompresses `compressed` (one or more zstd frames) into exactly `len` bytes, straight into
/// `plaintext` (cleared; no zero-fill, no window copy), which is returned; more or fewer bytes
/// is an error.
fn decompress_exact(compressed: &[u8], len: usize, mut plaintext: Vec<u8>) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match &mut *slot {
            Some(decompressor) => decompressor,
            empty => empty.insert(zstd::bulk::Decompressor::new()?),
        };
        plaintext.clear();
        plaintext.reserve(len);
        let written = decompressor.decompress_to_buffer(compressed, &mut plaintext)?;
        if written != len {
            return Err(std::io::Error::other(format!("decompressed to {written} bytes, header says {len}")));
        }
        Ok(plaintext)
    })
}

/// Re-encrypts an object's age layer to `recipients`, keeping its header and its compressed
/// payload byte for byte (not recompressed). The decrypted payload is checked in full (kind,
/// length, digest) before it is re-encrypted, so only intact content is rewrapped — the
/// identity doing it need not be among the new recipients.
pub fn rewrap(
    kind: ObjectKind,
    stored: &[u8],
    id_key: &IdKey,
    identity: &Identity,
    recipients: &Recipients,
    object: &str,
) -> Result<Vec<u8>, Error> {
    let (version, expected) = header(stored, object)?;
    let inner = identity.decrypt(&stored[HEADER_LEN..]).map_err(|source| crypto_error(object, source))?;
    let plaintext = read_payload(kind, &inner[..], inner.len(), object, Vec::new())?;
    check_digest(id_key, version, kind, &plaintext, expected, object)?;
    drop(plaintext);
    let ciphertext =
        recipients.encrypt(&inner).map_err(|source| Error::Crypto { object: object.to_owned(), source })?;
    let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    out.extend_from_slice(&stored[..HEADER_LEN]);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts, decompresses and verifies an object read from the repository key `object`;
/// returns its plaintext.
pub fn open(
    kind: ObjectKind,
    stored: &[u8],
    id_key: &IdKey,
    identity: &Identity,
    object: &str,
) -> Result<Vec<u8>, Error> {
    open_checked(kind, stored, Some(id_key), identity, object, Vec::new())
}

/// [`open`] into a reused buffer (its content is replaced): verify recycles its plaintexts, so
/// objects decrypted on one thread and freed on another do not pile up in the allocator.
pub fn open_into(
    kind: ObjectKind,
    stored: &[u8],
    id_key: &IdKey,
    identity: &Identity,
    object: &str,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, Error> {
    open_checked(kind, stored, Some(id_key), identity, object, buffer)
}

/// Like [`open`], but without recomputing the keyed digest of the content (age still
/// authenticates the ciphertext, and kind and length are still checked). Only for callers that
/// check every byte they use against an authenticated checksum anyway — restore checks each
/// file's SHA-256 from the (digest-checked) manifest — so the content is not hashed twice.
pub fn open_unhashed(kind: ObjectKind, stored: &[u8], identity: &Identity, object: &str) -> Result<Vec<u8>, Error> {
    open_checked(kind, stored, None, identity, object, Vec::new())
}

/// [`open_unhashed`] into a reused buffer (its content is replaced): restore recycles its pack
/// buffers instead of allocating one per pack, which the allocator's per-thread arenas would
/// keep long after.
pub fn open_unhashed_into(
    kind: ObjectKind,
    stored: &[u8],
    identity: &Identity,
    object: &str,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, Error> {
    open_checked(kind, stored, None, identity, object, buffer)
}

/// Reads the decrypted payload — kind, length, zstd stream — and returns the plaintext, checking
/// kind and length. A tampered ciphertext surfaces here as a read error from age, below zstd:
/// corruption of this object (the identity matched, or age would have refused earlier).
/// `size_hint` bounds the payload's size from above (the ciphertext's length).
fn read_payload(
    kind: ObjectKind,
    mut reader: impl Read,
    size_hint: usize,
    object: &str,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let corrupt = |reason: String| Error::Corrupt { object: object.to_owned(), reason };
    let unauthenticated =
        |e: std::io::Error| crypto_error(object, crate::crypto::Error::Unauthenticated(e.to_string()));
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).map_err(unauthenticated)?;
    if head[0] != kind as u8 {
        return Err(corrupt(format!("holds object kind {} where {kind:?} was expected", head[0])));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&head[1..9]);
    let len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| corrupt("length out of range".into()))?;
    // Decrypt all of the (small) compressed payload first, into a reused buffer sized for it
    // up front (no doubling copies), then decompress it in one shot.
    let mut compressed = DECRYPTED.lock().ok().and_then(|mut kept| kept.pop()).unwrap_or_default();
    compressed.clear();
    compressed.reserve(size_hint);
    let result = reader.read_to_end(&mut compressed).map_err(unauthenticated).and_then(|_| {
        decompress_exact(&compressed, len, buffer).map_err(|e| corrupt(format!("decompression failed: {e}")))
    });
    if compressed.capacity() <= KEPT_DECRYPTED
        && let Ok(mut kept) = DECRYPTED.lock()
        && kept.len() < KEPT_DECRYPTED_BUFFERS
    {
        kept.push(compressed);
    }
    result
}

/// Largest decryption buffer kept for the next object (a pack's compressed size is
/// a few MiB; an incompressible WAL segment's 16 MiB is not kept).
const KEPT_DECRYPTED: usize = 8 << 20;

fn open_checked(
    kind: ObjectKind,
    stored: &[u8],
    id_key: Option<&IdKey>,
    identity: &Identity,
    object: &str,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let (version, expected) = header(stored, object)?;
    let reader = identity.decrypting_reader(&stored[HEADER_LEN..]).map_err(|source| crypto_error(object, source))?;
    let plaintext = read_payload(kind, reader, stored.len().saturating_sub(HEADER_LEN), object, buffer)?;
    if let Some(id_key) = id_key {
        check_digest(id_key, version, kind, &plaintext, expected, object)?;
    }
    Ok(plaintext)
}
