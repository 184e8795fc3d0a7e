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
use super::chunker::for_each_chunk;
use super::manifest::{ChunkList, Entry, EntryKind};
use super::pack::{BlobIndex, PackBuilder, PendingPack};
use crate::codec::ObjectKind;
use crate::crypto::IdKey;
use crate::repo::BlobId;
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
    pub chunks: Vec<BlobId>,
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
pub fn store(
    lines: Receiver<Vec<u8>>,
    known: &BlobIndex,
    id_key: &IdKey,
    pack_size: usize,
    packs: &mpsc::Sender<PendingPack>,
    mut pack: PackBuilder,
) -> Result<StoredStream, Error> {
    let reader = ChannelReader { rx: lines, buffer: Vec::new(), position: 0 };
    let mut out = StoredStream::default();
    for_each_chunk(
        reader,
        ENTRY_CHUNK,
        |data| {
            let id = BlobId::of(id_key, data);
            if pack.add_if_new(known, id, data) {
                out.new_bytes += data.len() as u64;
                if pack.len() >= pack_size {
                    pack.send_to(packs)?;
                }
            }
            out.chunks.push(id);
            Ok(())
        },
        |e| Error::Internal(format!("entry stream: {e}")),
    )?;
    if !pack.is_empty() {
        pack.send_to(packs)?;
    }
    Ok(out)
}

/// Appends one entry as a JSON line to `buffer`.
// Invariant: an entry (strings, numbers, and digests serialised as hex) always serialises,
// and writing into a `Vec` cannot fail.
#[allow(clippy::expect_used)]
pub fn push_line(buffer: &mut Vec<u8>, entry: &Entry) {
    serde_json::to_writer(&mut *buffer, entry).expect("an entry serialises");
    buffer.push(b'\n');
}

/// Reads blobs out of packs for manifest loading, checking each against its keyed id and
/// keeping the last pack opened (entry and list blobs of one snapshot sit together).
struct BlobReader<'a> {
    repo: &'a Repository,
    index: &'a BlobIndex,
    manifest: &'a str,
    cached: Option<(u32, Vec<u8>)>,
}

impl BlobReader<'_> {
    fn corrupt(&self, reason: String) -> Error {
        repository::Error::CorruptRecord { key: self.manifest.to_owned(), reason }.into()
    }

    async fn read(&mut self, id: &BlobId, what: &str) -> Result<&[u8], Error> {
        let location = self
            .index
            .get(id)
            .ok_or_else(|| self.corrupt(format!("{what} {id} is not in any pack; run `radd verify`")))?;
        if self.cached.as_ref().is_none_or(|(pack, _)| *pack != location.pack) {
            let key = ObjectKey::Pack(self.index.packs[location.pack as usize].clone());
            let data = match self.repo.get_open_unhashed(ObjectKind::Pack, &key).await {
                Ok(data) => data,
                // Storage that failed (down, full, timed out) is not a corrupt manifest.
                Err(e) if e.kind() == crate::error::ErrorKind::Storage => return Err(e.into()),
                Err(e) => {
                    return Err(self.corrupt(format!(
                        "its {what}s are in {key}, which cannot be read ({e}); run `radd verify --read-data`"
                    )));
                }
            };
            self.cached = Some((location.pack, data));
        }
        let (start, end) = (location.offset as usize, location.offset as usize + location.length as usize);
        let data = self.cached.as_ref().and_then(|(_, pack)| pack.get(start..end));
        match data {
            Some(data) if BlobId::of(&self.repo.id_key, data) == *id => Ok(data),
            Some(_) => Err(self.corrupt(format!("{what} {id} does not match its id; run `radd verify`"))),
            None => Err(self.corrupt(format!("{what} {id} lies outside its pack"))),
        }
    }
}

/// Reads the entries of a stream back, in order, checking every chunk against its keyed id,
/// and fills in the chunk ids of files stored as a [`ChunkList`].
pub async fn load(
    repo: &Repository,
    index: &BlobIndex,
    chunks: &[BlobId],
    manifest: &str,
) -> Result<Vec<Entry>, Error> {
    let mut reader = BlobReader { repo, index, manifest, cached: None };
    let mut entries = read_entries(&mut reader, chunks).await?;
    for entry in &mut entries {
        if let EntryKind::File { chunks, list: Some(list), .. } = &mut entry.kind {
            *chunks = resolve_list(&mut reader, list, &entry.path).await?;
        }
    }
    Ok(entries)
}

/// Like [`load`], but leaves the chunk ids of files stored as a [`ChunkList`] out (their
/// `chunks` stay empty; [`ChunkResolver`] reads them one file at a time): a restore of a
/// 40 GB cluster would otherwise hold all of its 5 million block ids (160 MB) at once.
pub async fn load_lean(
    repo: &Repository,
    index: &BlobIndex,
    chunks: &[BlobId],
    manifest: &str,
) -> Result<Vec<Entry>, Error> {
    read_entries(&mut BlobReader { repo, index, manifest, cached: None }, chunks).await
}

/// Reads the chunk ids of files stored as a [`ChunkList`] (for entries of [`load_lean`]),
/// keeping the last pack it opened (a snapshot's list blobs sit together).
pub struct ChunkResolver<'a> {
    reader: BlobReader<'a>,
}

impl<'a> ChunkResolver<'a> {
    /// A resolver for the manifest named `manifest` (for error messages).
    #[must_use]
    pub fn new(repo: &'a Repository, index: &'a BlobIndex, manifest: &'a str) -> Self {
        Self { reader: BlobReader { repo, index, manifest, cached: None } }
    }

    /// The chunk ids of the file at `path` stored as `list`, each list blob checked against
    /// its keyed id.
    ///
    /// # Errors
    /// A list blob that is missing, damaged or does not fit its patch.
    pub async fn chunks(&mut self, list: &ChunkList, path: &str) -> Result<Vec<BlobId>, Error> {
        resolve_list(&mut self.reader, list, path).await
    }

    /// The chunk ids of a file entry of a lean manifest (`chunks` and `list` of its
    /// [`EntryKind::File`]): its inline ids, or those of its list when they were left out.
    ///
    /// # Errors
    /// As [`ChunkResolver::chunks`].
    pub async fn file_chunks<'e>(
        &mut self,
        chunks: &'e [BlobId],
        list: Option<&ChunkList>,
        path: &str,
    ) -> Result<std::borrow::Cow<'e, [BlobId]>, Error> {
        match list.filter(|_| chunks.is_empty()) {
            Some(list) => Ok(std::borrow::Cow::Owned(self.chunks(list, path).await?)),
            None => Ok(std::borrow::Cow::Borrowed(chunks)),
        }
    }
}

async fn resolve_list(reader: &mut BlobReader<'_>, list: &ChunkList, path: &str) -> Result<Vec<BlobId>, Error> {
    let base = reader.read(&list.base, "chunk list").await?;
    let ids = ChunkList::decode(base).and_then(|base_ids| list.apply(&base_ids));
    ids.ok_or_else(|| reader.corrupt(format!("the chunk list of {path} does not fit its base {}", list.base)))
}

/// The entries of the stream of `chunks`, as stored (list-backed files without their ids).
async fn read_entries(reader: &mut BlobReader<'_>, chunks: &[BlobId]) -> Result<Vec<Entry>, Error> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    for id in chunks {
        carry.extend_from_slice(reader.read(id, "entry chunk").await?);
        let complete = carry.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in carry[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let entry =
                serde_json::from_slice(line).map_err(|e| reader.corrupt(format!("entry {}: {e}", entries.len())))?;
            entries.push(entry);
        }
        carry.drain(..complete);
    }
    if !carry.is_empty() {
        return Err(reader.corrupt("the entry stream ends inside an entry".into()));
    }
    Ok(entries)
}
