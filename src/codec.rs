//! One stored object: a small plaintext header followed by an age ciphertext of the zstd-
//! compressed payload.
//!
//! ```text
//! magic       (8 bytes) "RADDOBJ1" | "RADDOBJ2" | "RADDOBJ3"
//! digest      (32 bytes) keyed, by version:
//!               1: the repository's id hash (id key, kind ‖ plaintext)     packs (id = digest)
//!               2: BLAKE3-keyed(derived key, kind ‖ plaintext)             WAL written before v3
//!               3: BLAKE3-keyed(derived key 3, kind ‖ len(key) u64 LE ‖ key ‖ plaintext)
//!                  key = the object's repository key (`wal/00000001/…`)     WAL, manifests
//!             lets a writer without the age identity decide "same content?" (idempotent
//!             wal-push) and leaks nothing unkeyed; version 3 also fails for an object moved or
//!             copied to another name
//! age(        kind (1 byte) ‖ plaintext length (u64 LE) ‖ zstd(plaintext) )
//! ```
//! The versions differ only in the digest (see [`Version`]); all of them open everywhere.
//! [`seal_stream`] (WAL) and [`seal_at`] (manifests) write version 3, [`seal`] (packs, whose id
//! is the digest and so is not known before it) version 1. Opening checks magic, decrypts (age
//! authenticates), checks kind and length, and recomputes the keyed digest for the key the
//! object was read from, so a returned payload is exactly what was sealed under that name. A
//! ciphertext that does not authenticate is [`Error::Corrupt`]; only an identity that matches no
//! recipient is a key problem ([`Error::Crypto`]). Knows crypto and zstd; not where the bytes are
//! stored or what they mean.

mod version;

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex, mpsc};

use crate::crypto::{Digest, IdKey, Identity, Recipients};
use crate::error::ErrorKind;
use version::check_digest;
pub use version::{Version, blob_table_digest, content_digest, header, header_digest};
/// Bytes before the age ciphertext: magic and keyed digest. A ranged read of this many bytes
/// gives an object's digest without downloading it.
pub const HEADER_LEN: usize = 8 + 32;
/// Bytes a streamed plaintext is read, digested and compressed (as one zstd frame) in at a time
/// ([`seal_stream`]). zstd level 1-3 windows are at most 1-2 MiB, so frames this large lose
/// almost nothing (0.02% on WAL) to starting afresh.
const STREAM_BLOCK: usize = 1 << 20;

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
    Ok((seal_framed((Version::V3, digest), kind, plaintext, recipients, level, key)?, digest))
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
    seal_framed((Version::V1, digest), kind, plaintext, recipients, level, object)
}

/// Seals a pack of format 3 as version 4, under the digest of its blob table
/// ([`version::blob_table_digest`], which the caller computed from the ids it already has).
pub fn seal_blob_table(
    plaintext: &[u8],
    digest: Digest,
    recipients: &Recipients,
    level: i32,
    object: &str,
) -> Result<Vec<u8>, Error> {
    seal_framed((Version::V4, digest), ObjectKind::Pack, plaintext, recipients, level, object)
}

/// Frames a header of `version` with `digest` and the age payload. Compresses in one shot with
/// this thread's reused zstd context (no copy into a streaming window, no context allocated
/// per object), then encrypts the compressed bytes into the output.
fn seal_framed(
    (version, digest): (Version, Digest),
    kind: ObjectKind,
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

thread_local! {
    /// This thread's zstd compression context and its level: a context costs about a megabyte
    /// of tables, allocated (and page-faulted in) once per thread rather than once per object.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    /// This thread's buffer for a decrypted, still compressed payload (allocating one per
    /// object on whichever pool thread opens it spreads them over every allocator arena).
    static DECRYPTED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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

/// The keys [`seal_stream`] needs: the id key for the digest, the recipients to encrypt to.
#[derive(Debug, Clone, Copy)]
pub struct SealKeys<'a> {
    /// Keys the content digest.
    pub id_key: &'a IdKey,
    /// Who can decrypt.
    pub recipients: &'a Recipients,
}

/// How [`seal_stream`] compresses.
#[derive(Debug, Clone, Copy)]
pub struct SealOptions {
    /// zstd level.
    pub level: i32,
    /// Threads compressing blocks in parallel (0 counts as 1).
    pub workers: u32,
}

/// Seals exactly `len` bytes read from `input` into `output`: the object [`seal_at`] makes
/// (version 3, the digest bound to the repository key `object`), but streamed. This thread reads 1 MiB blocks
/// into a few reused buffers, a second digests them in order; `options.workers` threads (at least one) compress
/// each block as its own zstd frame (a zstd stream may hold several frames, and every reader
/// decodes them as one; independent frames let blocks compress in parallel, straight from the
/// read buffer, ~15% faster than one streamed frame); one more thread puts the frames back in
/// order, encrypts them (age) and writes them to `output` as they come. Neither the input nor the
/// output is ever held in memory whole. The header's digest is written as zeros first and patched
/// in place at the end, so `output` must be seekable; an `output` that fails half way holds an
/// incomplete object and must not be published. Fails if `input` yields more or fewer than `len`
/// bytes (the file changed).
pub fn seal_stream<R: Read, W: Write + Seek + Send>(
    kind: ObjectKind,
    mut input: R,
    len: u64,
    keys: SealKeys<'_>,
    options: SealOptions,
    output: &mut W,
    object: &str,
) -> Result<Digest, Error> {
    let io = |source: std::io::Error| Error::Io { object: object.to_owned(), source };
    let SealKeys { id_key, recipients } = keys;
    let threads = usize::try_from(options.workers).unwrap_or(1).max(1);
    let (to_compress, blocks) = mpsc::sync_channel::<Block>(threads);
    // Shared by the compressors and dropped with the last of them, so that the reader's send
    // fails instead of blocking if they all stopped.
    let blocks = Arc::new(Mutex::new(blocks));
    let (to_reader, free_blocks) = mpsc::channel::<Vec<u8>>();
    let (to_writer, frames) = mpsc::sync_channel::<Block>(threads + 1);
    let (to_compressors, free_frames) = mpsc::channel::<Vec<u8>>();
    let free_frames = Mutex::new(free_frames);
    let digest = std::thread::scope(|scope| {
        let compressors: Vec<_> = (0..threads)
            .map(|_| {
                let (blocks, free_frames, to_reader, to_writer) =
                    (Arc::clone(&blocks), &free_frames, to_reader.clone(), to_writer.clone());
                scope.spawn(move || compress_blocks(options.level, &blocks, free_frames, &to_reader, &to_writer))
            })
            .collect();
        drop((to_reader, to_writer, blocks));
        let out = &mut *output;
        let writer = scope.spawn(move || encrypt_frames(kind, len, recipients, out, &frames, &to_compressors, object));
        let (to_hasher, unhashed) = mpsc::sync_channel::<Block>(2);
        let hasher =
            scope.spawn(move || digest_blocks(Version::V3.digester(id_key, kind, object), &unhashed, &to_compress));
        let read = read_blocks(&mut input, len, threads + 2, &to_hasher, &free_blocks);
        drop(to_hasher);
        let hashed = hasher.join().unwrap_or_else(|_| Err(std::io::Error::other("digest thread panicked")));
        let mut compressed = Ok(());
        for compressor in compressors {
            let result =
                compressor.join().unwrap_or_else(|_| Err(std::io::Error::other("compression thread panicked")));
            compressed = compressed.and(result);
        }
        let written = writer.join().unwrap_or_else(|_| Err(io(std::io::Error::other("encryption thread panicked"))));
        // A stage that fails makes the others fail with "ended early": report the cause — the
        // first failure that is not such a consequence (e.g. the output's full disk, not the
        // reader's "compression ended early").
        let (digest, hashed) = match hashed {
            Ok(digest) => (Some(digest), Ok(())),
            Err(e) => (None, Err(e)),
        };
        let mut failures: Vec<Error> = [read.map_err(io), hashed.map_err(io), compressed.map_err(io), written]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if !failures.is_empty() {
            let cause = failures.iter().position(|e| !e.is_ended()).unwrap_or(0);
            return Err(failures.swap_remove(cause));
        }
        digest.ok_or_else(|| io(ended("digest")))
    })?;
    output.seek(SeekFrom::Start(Version::V3.magic().len() as u64)).map_err(io)?;
    output.write_all(&digest.0).map_err(io)?;
    output.seek(SeekFrom::End(0)).map_err(io)?;
    Ok(digest)
}

/// A block of a streamed plaintext (or its compressed frame): sequence number, buffer, length.
type Block = (u64, Vec<u8>, usize);

/// A stage of [`seal_stream`] stopped because another one did: a consequence, never the cause.
#[derive(Debug, thiserror::Error)]
#[error("{0} ended early")]
struct Ended(&'static str);

fn ended(stage: &'static str) -> std::io::Error {
    std::io::Error::other(Ended(stage))
}

impl Error {
    /// Whether this is a stage of a streamed seal stopping because another one failed.
    fn is_ended(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.get_ref().is_some_and(|inner| inner.is::<Ended>()))
    }
}

/// The reading stage of [`seal_stream`]: reads blocks into at most `buffers` reused buffers and
/// hands them, in order, to the digest thread.
fn read_blocks<R: Read>(
    input: &mut R,
    len: u64,
    buffers: usize,
    to_hasher: &mpsc::SyncSender<Block>,
    free_blocks: &mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let (mut allocated, mut total, mut seq) = (0, 0u64, 0u64);
    loop {
        let mut buffer = match free_blocks.try_recv() {
            Ok(buffer) => buffer,
            Err(_) if allocated < buffers => {
                allocated += 1;
                vec![0u8; STREAM_BLOCK]
            }
            Err(_) => free_blocks.recv().map_err(|_| ended("compression"))?,
        };
        let n = read_full(input, &mut buffer)?;
        total += n as u64;
        if total > len {
            break;
        }
        // An empty input still gets one (empty) frame.
        if n == 0 && seq > 0 {
            break;
        }
        to_hasher.send((seq, buffer, n)).map_err(|_| ended("digest"))?;
        seq += 1;
        if n == 0 {
            break;
        }
    }
    if total != len {
        return Err(std::io::Error::other(format!(
            "read {total} bytes or more where {len} were expected: the file changed while it was archived"
        )));
    }
    Ok(())
}

/// The digest stage of [`seal_stream`]: feeds `mac` (already fed the header fields) the blocks
/// in order, each passed on to the compressors once digested.
fn digest_blocks(
    mut mac: crate::crypto::KeyedStream,
    blocks: &mpsc::Receiver<Block>,
    to_compress: &mpsc::SyncSender<Block>,
) -> std::io::Result<Digest> {
    for (seq, block, n) in blocks {
        mac.update(&block[..n]);
        to_compress.send((seq, block, n)).map_err(|_| ended("compression"))?;
    }
    Ok(mac.finish())
}

/// A compressing thread of [`seal_stream`]: compresses blocks into frames (reused buffers),
/// returns each block to the reader and sends its frame to the writer.
fn compress_blocks(
    level: i32,
    blocks: &Mutex<mpsc::Receiver<Block>>,
    free_frames: &Mutex<mpsc::Receiver<Vec<u8>>>,
    to_reader: &mpsc::Sender<Vec<u8>>,
    to_writer: &mpsc::SyncSender<Block>,
) -> std::io::Result<()> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    loop {
        let next = blocks.lock().map_err(|_| ended("compression"))?.recv();
        let Ok((seq, block, n)) = next else { return Ok(()) };
        let recycled = free_frames.lock().map_err(|_| ended("compression"))?.try_recv();
        let mut frame = recycled.unwrap_or_else(|_| Vec::with_capacity(zstd::zstd_safe::compress_bound(STREAM_BLOCK)));
        frame.clear();
        let size = compressor.compress_to_buffer(&block[..n], &mut frame)?;
        // The reader may be done and gone: then the buffer is simply freed.
        let _ = to_reader.send(block);
        to_writer.send((seq, frame, size)).map_err(|_| ended("encryption"))?;
    }
}

/// The encrypting stage of [`seal_stream`]: writes the header (digest zeroed), then age of kind,
/// length and every frame in sequence order, returning each buffer for reuse.
fn encrypt_frames<W: Write>(
    kind: ObjectKind,
    len: u64,
    recipients: &Recipients,
    output: &mut W,
    frames: &mpsc::Receiver<Block>,
    free_frames: &mpsc::Sender<Vec<u8>>,
    object: &str,
) -> Result<(), Error> {
    let crypto = |source| Error::Crypto { object: object.to_owned(), source };
    let io = |source: std::io::Error| Error::Io { object: object.to_owned(), source };
    output.write_all(Version::V3.magic()).and_then(|()| output.write_all(&[0u8; 32])).map_err(io)?;
    let mut encrypted = recipients.encrypting_writer(output).map_err(crypto)?;
    encrypted.write_all(&[kind as u8]).map_err(io)?;
    encrypted.write_all(&len.to_le_bytes()).map_err(io)?;
    let (mut pending, mut next) = (std::collections::BTreeMap::new(), 0u64);
    for (seq, frame, size) in frames {
        pending.insert(seq, (frame, size));
        while let Some((frame, size)) = pending.remove(&next) {
            encrypted.write_all(&frame[..size]).map_err(io)?;
            let _ = free_frames.send(frame);
            next += 1;
        }
    }
    if !pending.is_empty() {
        return Err(io(ended("compression")));
    }
    encrypted.finish().map_err(io)?;
    Ok(())
}

/// The keyed digest of `version` of exactly `len` bytes read from `input` as the content of an
/// object of `kind` under the repository key `object`, as [`Version::digest`] computes it,
/// reading 1 MiB at a time into one reused buffer. A read error is passed through as is.
pub fn digest_stream<R: Read>(
    kind: ObjectKind,
    version: Version,
    mut input: R,
    len: u64,
    id_key: &IdKey,
    object: &str,
) -> Result<Digest, Error> {
    let io = |source: std::io::Error| Error::Io { object: object.to_owned(), source };
    let mut mac = version.digester(id_key, kind, object);
    let mut buffer = vec![0u8; STREAM_BLOCK];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut input, &mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        mac.update(&buffer[..n]);
    }
    if total != len {
        return Err(io(std::io::Error::other(format!(
            "read {total} bytes where {len} were expected: the file changed while it was read"
        ))));
    }
    Ok(mac.finish())
}

/// Reads until `buffer` is full or the input ends; returns the bytes read (short only at the
/// end of the input).
pub fn read_full<R: Read>(input: &mut R, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
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
    let plaintext = read_payload(kind, &inner[..], object, Vec::new())?;
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
    open_checked(kind, stored, Some(id_key), identity, (object, Vec::new()))
}

/// Like [`open`], but without recomputing the keyed digest of the content (age still
/// authenticates the ciphertext, and kind and length are still checked). Only for callers that
/// check every byte they use against an authenticated checksum anyway — restore checks each
/// file's SHA-256 from the (digest-checked) manifest — so the content is not hashed twice.
pub fn open_unhashed(kind: ObjectKind, stored: &[u8], identity: &Identity, object: &str) -> Result<Vec<u8>, Error> {
    open_checked(kind, stored, None, identity, (object, Vec::new()))
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
    open_checked(kind, stored, None, identity, (object, buffer))
}

/// Reads the decrypted payload — kind, length, zstd stream — and returns the plaintext, checking
/// kind and length. A tampered ciphertext surfaces here as a read error from age, below zstd:
/// corruption of this object (the identity matched, or age would have refused earlier).
fn read_payload(kind: ObjectKind, mut reader: impl Read, object: &str, buffer: Vec<u8>) -> Result<Vec<u8>, Error> {
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
    // Decrypt all of the (small) compressed payload first, into this thread's reused buffer,
    // then decompress it in one shot.
    DECRYPTED.with(|cell| {
        let mut compressed = cell.take();
        compressed.clear();
        let result = reader.read_to_end(&mut compressed).map_err(unauthenticated).and_then(|_| {
            decompress_exact(&compressed, len, buffer).map_err(|e| corrupt(format!("decompression failed: {e}")))
        });
        if compressed.capacity() <= KEPT_DECRYPTED {
            cell.replace(compressed);
        }
        result
    })
}

/// Largest decryption buffer a thread keeps for the next object (a pack's compressed size is
/// a few MiB; an incompressible WAL segment's 16 MiB is not kept).
const KEPT_DECRYPTED: usize = 8 << 20;

fn open_checked(
    kind: ObjectKind,
    stored: &[u8],
    id_key: Option<&IdKey>,
    identity: &Identity,
    (object, buffer): (&str, Vec<u8>),
) -> Result<Vec<u8>, Error> {
    let (version, expected) = header(stored, object)?;
    let reader = identity.decrypting_reader(&stored[HEADER_LEN..]).map_err(|source| crypto_error(object, source))?;
    let plaintext = read_payload(kind, reader, object, buffer)?;
    if let Some(id_key) = id_key {
        check_digest(id_key, version, kind, &plaintext, expected, object)?;
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests;
