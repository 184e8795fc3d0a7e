//! One stored object: a small plaintext header followed by an age ciphertext of the zstd-
//! compressed payload.
//!
//! ```text
//! "RADDOBJ1"  (8 bytes magic)                       or "RADDOBJ2"
//! digest      (32 bytes) HMAC-SHA256(id key, kind ‖ plaintext)   BLAKE3-keyed(derived key, kind ‖ plaintext)
//!             lets a writer without the age identity decide "same content?" (idempotent
//!             wal-push) and leaks nothing unkeyed
//! age(        kind (1 byte) ‖ plaintext length (u64 LE) ‖ zstd(plaintext) )
//! ```
//! Version 2 differs only in the digest algorithm (see [`DigestAlg`]); [`seal_stream`] (WAL)
//! writes it, [`seal`] (packs, manifests) still writes version 1, and both open everywhere.
//! Opening checks magic, decrypts (age authenticates), checks kind and length, and recomputes the
//! keyed digest, so a returned payload is exactly what was sealed. Knows crypto and zstd; not
//! where the bytes are stored or what they mean.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex, mpsc};

pub use crate::crypto::DigestAlg;
use crate::crypto::{Digest, IdKey, Identity, Recipients};
use crate::error::ErrorKind;

const MAGIC: &[u8; 8] = b"RADDOBJ1";
/// Version 2: the same layout with a BLAKE3-keyed digest.
const MAGIC_V2: &[u8; 8] = b"RADDOBJ2";
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
    /// Encryption failed or decryption failed (wrong identity, tampered ciphertext).
    #[error("object {object}: {source}")]
    Crypto {
        /// The object's key in the repository.
        object: String,
        /// What went wrong.
        source: crate::crypto::Error,
    },
    /// The object is not in radd's format, truncated, or its content does not match its digest.
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

/// Keyed digest of an object's content, as stored in a version 1 header (HMAC-SHA256).
#[must_use]
pub fn content_digest(id_key: &IdKey, kind: ObjectKind, plaintext: &[u8]) -> Digest {
    id_key.digest_parts(&[&[kind as u8], plaintext])
}

/// Keyed digest of an object's content with `alg`, as stored in a header of that version.
#[must_use]
pub fn content_digest_with(id_key: &IdKey, alg: DigestAlg, kind: ObjectKind, plaintext: &[u8]) -> Digest {
    let mut mac = id_key.stream_with(alg);
    mac.update(&[kind as u8]);
    mac.update(plaintext);
    mac.finish()
}

/// Compresses, encrypts and frames `plaintext`. Returns the stored bytes and the content digest.
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

/// [`seal`] for a caller that already computed the content digest (e.g. to check whether the
/// object is already stored). Compresses in one shot with this thread's reused zstd context
/// (no copy into a streaming window, no context allocated per object), then encrypts the
/// compressed bytes into the output.
pub fn seal_with_digest(
    kind: ObjectKind,
    plaintext: &[u8],
    digest: Digest,
    recipients: &Recipients,
    level: i32,
    object: &str,
) -> Result<Vec<u8>, Error> {
    let crypto = |source| Error::Crypto { object: object.to_owned(), source };
    let io = |e: std::io::Error| crypto(crate::crypto::Error::Encrypt(e.to_string()));
    let compressed = compress(plaintext, level).map_err(io)?;
    let mut out = Vec::with_capacity(HEADER_LEN + compressed.len() + compressed.len() / 4096 + 4096);
    out.extend_from_slice(MAGIC);
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

/// Seals exactly `len` bytes read from `input` into `output`: the object [`seal`] makes, but
/// streamed and with a version 2 header (BLAKE3-keyed digest). This thread reads 1 MiB blocks
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
                let (blocks, free_frames, to_reader, to_writer) = (Arc::clone(&blocks), &free_frames, to_reader.clone(), to_writer.clone());
                scope.spawn(move || compress_blocks(options.level, &blocks, free_frames, &to_reader, &to_writer))
            })
            .collect();
        drop((to_reader, to_writer, blocks));
        let out = &mut *output;
        let writer = scope.spawn(move || encrypt_frames(kind, len, recipients, out, &frames, &to_compressors, object));
        let (to_hasher, unhashed) = mpsc::sync_channel::<Block>(2);
        let hasher = scope.spawn(move || digest_blocks(kind, id_key, &unhashed, &to_compress));
        let read = read_blocks(&mut input, len, threads + 2, &to_hasher, &free_blocks);
        drop(to_hasher);
        let hashed = hasher.join().unwrap_or_else(|_| Err(std::io::Error::other("digest thread panicked")));
        let mut compressed = Ok(());
        for compressor in compressors {
            let result = compressor.join().unwrap_or_else(|_| Err(std::io::Error::other("compression thread panicked")));
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
        let mut failures: Vec<Error> = [read.map_err(io), hashed.map_err(io), compressed.map_err(io), written].into_iter().filter_map(Result::err).collect();
        if !failures.is_empty() {
            let cause = failures.iter().position(|e| !e.is_ended()).unwrap_or(0);
            return Err(failures.swap_remove(cause));
        }
        digest.ok_or_else(|| io(ended("digest")))
    })?;
    output.seek(SeekFrom::Start(MAGIC_V2.len() as u64)).map_err(io)?;
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
fn read_blocks<R: Read>(input: &mut R, len: u64, buffers: usize, to_hasher: &mpsc::SyncSender<Block>, free_blocks: &mpsc::Receiver<Vec<u8>>) -> std::io::Result<()> {
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
        return Err(std::io::Error::other(format!("read {total} bytes or more where {len} were expected: the file changed while it was archived")));
    }
    Ok(())
}

/// The digest stage of [`seal_stream`]: the keyed digest of the blocks in order, each passed on
/// to the compressors once digested.
fn digest_blocks(kind: ObjectKind, id_key: &IdKey, blocks: &mpsc::Receiver<Block>, to_compress: &mpsc::SyncSender<Block>) -> std::io::Result<Digest> {
    let mut mac = id_key.stream_with(DigestAlg::Blake3);
    mac.update(&[kind as u8]);
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
    output.write_all(MAGIC_V2).and_then(|()| output.write_all(&[0u8; 32])).map_err(io)?;
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

/// The keyed content digest with `alg` of exactly `len` bytes read from `input`, as
/// [`content_digest_with`] computes it, reading 1 MiB at a time into one reused buffer.
pub fn digest_stream<R: Read>(kind: ObjectKind, alg: DigestAlg, mut input: R, len: u64, id_key: &IdKey, object: &str) -> Result<Digest, Error> {
    let io = |source: std::io::Error| Error::Io { object: object.to_owned(), source };
    let mut mac = id_key.stream_with(alg);
    mac.update(&[kind as u8]);
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
        return Err(io(std::io::Error::other(format!("read {total} bytes where {len} were expected: the file changed while it was read"))));
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
pub fn rewrap(kind: ObjectKind, stored: &[u8], id_key: &IdKey, identity: &Identity, recipients: &Recipients, object: &str) -> Result<Vec<u8>, Error> {
    let (alg, expected) = header(stored, object)?;
    let inner = identity
        .decrypt(&stored[HEADER_LEN..])
        .map_err(|source| Error::Crypto { object: object.to_owned(), source })?;
    let plaintext = read_payload(kind, &inner[..], object, Vec::new())?;
    check_digest(id_key, alg, kind, &plaintext, expected, object)?;
    drop(plaintext);
    let ciphertext = recipients.encrypt(&inner).map_err(|source| Error::Crypto { object: object.to_owned(), source })?;
    let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    out.extend_from_slice(&stored[..HEADER_LEN]);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Reads the keyed content digest from an object's header (the first [`HEADER_LEN`] bytes),
/// whatever its algorithm; see [`header`] to learn which.
pub fn header_digest(stored: &[u8], object: &str) -> Result<Digest, Error> {
    header(stored, object).map(|(_, digest)| digest)
}

/// Reads an object's header (the first [`HEADER_LEN`] bytes): its digest algorithm and keyed
/// content digest.
pub fn header(stored: &[u8], object: &str) -> Result<(DigestAlg, Digest), Error> {
    let alg = match stored.get(..8) {
        Some(m) if m == MAGIC => DigestAlg::IdHash,
        Some(m) if m == MAGIC_V2 => DigestAlg::Blake3,
        _ => return Err(Error::Corrupt { object: object.to_owned(), reason: "missing radd object header".into() }),
    };
    let mut d = [0u8; 32];
    d.copy_from_slice(stored.get(8..HEADER_LEN).ok_or_else(|| Error::Corrupt { object: object.to_owned(), reason: "truncated radd object header".into() })?);
    Ok((alg, Digest(d)))
}

/// Decrypts, decompresses and verifies an object; returns its plaintext.
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
pub fn open_unhashed_into(kind: ObjectKind, stored: &[u8], identity: &Identity, object: &str, buffer: Vec<u8>) -> Result<Vec<u8>, Error> {
    open_checked(kind, stored, None, identity, (object, buffer))
}

/// Reads the decrypted payload — kind, length, zstd stream — and returns the plaintext, checking
/// kind and length. A tampered ciphertext surfaces here as a read error from age, below zstd.
fn read_payload(kind: ObjectKind, mut reader: impl Read, object: &str, buffer: Vec<u8>) -> Result<Vec<u8>, Error> {
    let corrupt = |reason: String| Error::Corrupt { object: object.to_owned(), reason };
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).map_err(|e| Error::Crypto {
        object: object.to_owned(),
        source: crate::crypto::Error::Decrypt(e.to_string()),
    })?;
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
        let result = reader
            .read_to_end(&mut compressed)
            .map_err(|e| corrupt(format!("authentication failed: {e}")))
            .and_then(|_| decompress_exact(&compressed, len, buffer).map_err(|e| corrupt(format!("decompression failed: {e}"))));
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
    let (alg, expected) = header(stored, object)?;
    let reader = identity
        .decrypting_reader(&stored[HEADER_LEN..])
        .map_err(|source| Error::Crypto { object: object.to_owned(), source })?;
    let plaintext = read_payload(kind, reader, object, buffer)?;
    if let Some(id_key) = id_key {
        check_digest(id_key, alg, kind, &plaintext, expected, object)?;
    }
    Ok(plaintext)
}

fn check_digest(id_key: &IdKey, alg: DigestAlg, kind: ObjectKind, plaintext: &[u8], expected: Digest, object: &str) -> Result<(), Error> {
    if content_digest_with(id_key, alg, kind, plaintext) == expected {
        Ok(())
    } else {
        Err(Error::Corrupt { object: object.to_owned(), reason: "content does not match its keyed digest".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let key = IdKey::generate();
        let id = Identity::generate();
        let (mut stored, digest) =
            seal(ObjectKind::Wal, b"segment", &key, &id.recipients(), 3, "w").unwrap();
        assert_eq!(header_digest(&stored, "w").unwrap(), digest);
        assert_eq!(open(ObjectKind::Wal, &stored, &key, &id, "w").unwrap(), b"segment");
        assert!(open(ObjectKind::Pack, &stored, &key, &id, "w").is_err());
        let last = stored.len() - 1;
        stored[last] ^= 1;
        assert!(open(ObjectKind::Wal, &stored, &key, &id, "w").is_err());
    }

    /// Takes `room` bytes, then fails as a full disk does.
    struct Full { room: usize, data: Vec<u8> }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.data.len() + buf.len() > self.room {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for Full {
        fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn a_streamed_seal_reports_the_full_output_not_the_stages_it_stopped() {
        let (key, id) = (IdKey::generate(), Identity::generate());
        let recipients = id.recipients();
        let keys = SealKeys { id_key: &key, recipients: &recipients };
        let plaintext: Vec<u8> = (0..STREAM_BLOCK * 8).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23) as u8).collect();
        let mut out = Full { room: 4096, data: Vec::new() };
        let options = SealOptions { level: 1, workers: 2 };
        let error = seal_stream(ObjectKind::Wal, &plaintext[..], plaintext.len() as u64, keys, options, &mut out, "wal/1/x").expect_err("the output is full");
        assert!(matches!(&error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull), "{error}");
    }

    #[test]
    fn streamed_seal_opens_like_a_sealed_object() {
        let key = IdKey::generate();
        let id = Identity::generate();
        let recipients = id.recipients();
        let keys = SealKeys { id_key: &key, recipients: &recipients };
        // Several blocks and a partial last one, compressible and not.
        let mut plaintext = vec![5u8; STREAM_BLOCK * 5 + 123];
        for (i, b) in plaintext.iter_mut().enumerate().skip(STREAM_BLOCK) {
            *b = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) as u8;
        }
        for workers in [0, 1, 3] {
            let mut out = std::io::Cursor::new(Vec::new());
            let options = SealOptions { level: 1, workers };
            let digest = seal_stream(ObjectKind::Wal, &plaintext[..], plaintext.len() as u64, keys, options, &mut out, "w").unwrap();
            let mut stored = out.into_inner();
            assert_eq!(digest, content_digest_with(&key, DigestAlg::Blake3, ObjectKind::Wal, &plaintext));
            assert_eq!(header(&stored, "w").unwrap(), (DigestAlg::Blake3, digest));
            assert_eq!(open(ObjectKind::Wal, &stored, &key, &id, "w").unwrap(), plaintext);
            let streamed = digest_stream(ObjectKind::Wal, DigestAlg::Blake3, &plaintext[..], plaintext.len() as u64, &key, "w").unwrap();
            assert_eq!(streamed, digest);
            let rewrapped = rewrap(ObjectKind::Wal, &stored, &key, &id, &id.recipients(), "w").unwrap();
            assert_eq!(open(ObjectKind::Wal, &rewrapped, &key, &id, "w").unwrap(), plaintext);
            // The digest is checked: a wrong one (or a version 1 magic on it) fails to open.
            stored[..8].copy_from_slice(MAGIC);
            assert!(matches!(open(ObjectKind::Wal, &stored, &key, &id, "w"), Err(Error::Corrupt { .. })));
        }
        // An empty file seals and opens too.
        let mut out = std::io::Cursor::new(Vec::new());
        seal_stream(ObjectKind::Wal, &b""[..], 0, keys, SealOptions { level: 1, workers: 2 }, &mut out, "w").unwrap();
        assert_eq!(open(ObjectKind::Wal, &out.into_inner(), &key, &id, "w").unwrap(), b"");
        // A file that is shorter or longer than announced is refused, not sealed.
        let mut out = std::io::Cursor::new(Vec::new());
        let options = SealOptions { level: 1, workers: 0 };
        assert!(seal_stream(ObjectKind::Wal, &plaintext[..], 100, keys, options, &mut out, "w").is_err());
        assert!(seal_stream(ObjectKind::Wal, &plaintext[..10], 100, keys, options, &mut out, "w").is_err());
    }
}
