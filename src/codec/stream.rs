//! The threaded streaming sealer: [`seal_stream`] reads a plaintext in 1 MiB blocks, digests
//! them in order, compresses them on worker threads and encrypts and writes the frames in order,
//! patching the header's digest at the end; [`digest_stream`] computes the same digest without
//! sealing. The object written is the one [`super::seal_at`] makes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex, mpsc};

use super::{Error, ObjectKind, Version};
use crate::crypto::{Digest, IdKey, Recipients};

/// Bytes a streamed plaintext is read, digested and compressed (as one zstd frame) in at a time
/// ([`seal_stream`]). zstd level 1-3 windows are at most 1-2 MiB, so frames this large lose
/// almost nothing (0.02% on WAL) to starting afresh.
pub(super) const STREAM_BLOCK: usize = 1 << 20;

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

/// Seals exactly `len` bytes read from `input` into `output`: the object [`super::seal_at`] makes
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
