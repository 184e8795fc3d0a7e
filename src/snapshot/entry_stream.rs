//! A manifest's entries as a stream: one JSON line per entry, cut into content-defined chunks
//! that are stored as blobs in packs like file content (keyed ids, dedup, zstd, age). The
//! manifest object itself then holds only the list of those chunk ids.
//!
//! Two things follow: writing a snapshot of a million files needs no more memory than a few
//! chunks (the entries are never all held at once), and a snapshot whose entries barely
//! changed re-uses almost every entry chunk of its parent, so it uploads kilobytes, not the
//! whole manifest again (Borg's item stream works the same way).

use std::io::Read;
use std::sync::mpsc::Receiver;

use tokio::sync::mpsc;

use super::Error;
use super::chunker::{Chunking, for_each_chunk};
use super::manifest::Entry;
use super::pack::{BlobIndex, PackBuilder, PendingPack};
use crate::codec::ObjectKind;
use crate::crypto::{Digest, IdKey};
use crate::repo::ObjectKey;
use crate::repository::{self, Repository};

/// Average size of an entry chunk: small enough that one changed entry re-uploads little,
/// large enough that a million entries make only a few thousand chunks.
pub const ENTRY_CHUNK: usize = 64 * 1024;

/// Serialised entry lines are handed to the stream in buffers of about this size.
pub const LINE_BUFFER: usize = 256 * 1024;

/// What storing an entry stream produced.
#[derive(Debug, Default)]
pub struct StoredStream {
    /// The chunk ids, in order.
    pub chunks: Vec<Digest>,
    /// Bytes of chunks new to the repository.
    pub new_bytes: u64,
}

/// Reads buffers from a channel as one byte stream (ends when every sender is gone).
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    buffer: Vec<u8>,
    position: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.buffer.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.buffer = next;
                    self.position = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buffer.len() - self.position);
        out[..n].copy_from_slice(&self.buffer[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Cuts the entry lines arriving on `lines` into chunks and packs the new ones (sent to the
/// uploader on `packs`). Runs on its own thread until the senders of `lines` are dropped.
pub fn store(lines: Receiver<Vec<u8>>, known: &BlobIndex, id_key: &IdKey, pack_size: usize, packs: &mpsc::Sender<PendingPack>, mut pack: PackBuilder) -> Result<StoredStream, Error> {
    let reader = ChannelReader { rx: lines, buffer: Vec::new(), position: 0 };
    let mut out = StoredStream::default();
    let send = |pack: &mut PackBuilder| packs.blocking_send(pack.take()).map_err(|_| Error::Internal("pack uploader stopped".into()));
    for_each_chunk(
        reader,
        Chunking::ContentDefined(ENTRY_CHUNK),
        |data| {
            let id = id_key.digest(data);
            if !known.contains(&id) && !pack.has(&id) {
                pack.add(id, data);
                out.new_bytes += data.len() as u64;
                if pack.len() >= pack_size {
                    send(&mut pack)?;
                }
            }
            out.chunks.push(id);
            Ok(())
        },
        |e| Error::Internal(format!("entry stream: {e}")),
    )?;
    if !pack.is_empty() {
        send(&mut pack)?;
    }
    Ok(out)
}

/// Appends one entry as a JSON line to `buffer`.
pub fn push_line(buffer: &mut Vec<u8>, entry: &Entry) {
    serde_json::to_writer(&mut *buffer, entry).expect("an entry serialises");
    buffer.push(b'\n');
}

/// Reads the entries of a stream back, in order, checking every chunk against its keyed id.
pub async fn load(repo: &Repository, index: &BlobIndex, chunks: &[Digest], manifest: &str) -> Result<Vec<Entry>, Error> {
    let corrupt = |reason: String| -> Error { repository::Error::CorruptRecord { key: manifest.to_owned(), reason }.into() };
    let mut entries = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut cached: Option<(u32, Vec<u8>)> = None;
    for id in chunks {
        let location = index.get(id).ok_or_else(|| corrupt(format!("entry chunk {id} is not in any pack; run `radd verify`")))?;
        if cached.as_ref().is_none_or(|(pack, _)| *pack != location.pack) {
            let key = ObjectKey::Pack(index.packs[location.pack as usize].clone());
            let data = repo
                .get_open_unhashed(ObjectKind::Pack, &key)
                .await
                .map_err(|e| corrupt(format!("its entries are in {key}, which cannot be read ({e}); run `radd verify --read-data`")))?;
            cached = Some((location.pack, data));
        }
        let pack = cached.as_ref().map(|(_, data)| data.as_slice()).unwrap_or_default();
        let (start, end) = (location.offset as usize, location.offset as usize + location.length as usize);
        let data = pack.get(start..end).ok_or_else(|| corrupt(format!("entry chunk {id} lies outside its pack")))?;
        if repo.id_key.digest(data) != *id {
            return Err(corrupt(format!("entry chunk {id} does not match its id; run `radd verify`")));
        }
        carry.extend_from_slice(data);
        let complete = carry.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in carry[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            entries.push(serde_json::from_slice(line).map_err(|e| corrupt(format!("entry {}: {e}", entries.len())))?);
        }
        carry.drain(..complete);
    }
    if !carry.is_empty() {
        return Err(corrupt("the entry stream ends inside an entry".into()));
    }
    Ok(entries)
}
