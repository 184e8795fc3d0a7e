//! The stored form of index objects. New objects are binary (below); objects written before
//! it (JSON `{"packs":[{"id":…,"blobs":[["<hex id>",offset,length],…]},…]}`) are still read.
//! Both sit inside the same authenticated record envelope ([`Repository::put_record_bytes`]),
//! so a modified or foreign object fails authentication before it is decoded.
//!
//! Binary layout (little-endian):
//! ```text
//! magic "RADDIX1\n" | u32 packs | packs × (u16 length, pack id bytes)
//!                   | u32 blobs | blobs × (32-byte id, u32 pack position, u32 offset, u32 length)
//! ```
//! Blobs are sorted by id, so an object is already a sorted run for the on-disk index; the
//! packs table is written once, not once per blob. 44 bytes a blob instead of ~75 of hex JSON.
//!
//! [`Repository::put_record_bytes`]: crate::repository::Repository::put_record_bytes

use serde::{Deserialize, Serialize};

use crate::repo::BlobId;

/// First bytes of a binary index object (a JSON one starts with `{`).
pub const MAGIC: &[u8; 8] = b"RADDIX1\n";

/// Bytes of one blob in a binary index object (and in the on-disk index).
pub const BLOB_BYTES: usize = 44;

/// An index object in memory: packs and their blob tables.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IndexFile {
    /// Packs and their blob tables.
    pub packs: Vec<IndexPack>,
}

/// One pack in an index object.
#[derive(Debug, Serialize, Deserialize)]
pub struct IndexPack {
    /// Pack id (object name under `packs/`).
    pub id: String,
    /// (blob id, offset, length) in the pack's plaintext.
    pub blobs: Vec<(BlobId, u32, u32)>,
}

/// Why an index object's payload cannot be decoded (it authenticated, so it was written
/// wrongly or by a newer radd).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Neither a binary index object nor JSON.
    #[error("not an index object ({0})")]
    Json(serde_json::Error),
    /// The binary object ends early or names a pack it does not list.
    #[error("binary index object is damaged: {0}")]
    Binary(&'static str),
}

impl IndexFile {
    /// Blobs in all the blob tables.
    #[must_use]
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }

    /// Splits the blob tables into index objects of at most `limit` blobs (a pack is never
    /// split).
    #[must_use]
    pub fn shards(&self, limit: usize) -> Vec<&[IndexPack]> {
        let mut out = Vec::new();
        let (mut start, mut blobs) = (0, 0);
        for (i, pack) in self.packs.iter().enumerate() {
            if blobs > 0 && blobs + pack.blobs.len() > limit {
                out.push(&self.packs[start..i]);
                (start, blobs) = (i, 0);
            }
            blobs += pack.blobs.len();
        }
        if start < self.packs.len() {
            out.push(&self.packs[start..]);
        }
        out
    }

    /// Decodes an index object's payload, binary or the older JSON.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let object = IndexObject::decode(payload)?;
        let mut packs: Vec<IndexPack> =
            object.packs.into_iter().map(|id| IndexPack { id, blobs: Vec::new() }).collect();
        for (id, pack, offset, length) in object.blobs {
            packs[pack as usize].blobs.push((id, offset, length));
        }
        Ok(IndexFile { packs })
    }
}

/// The binary encoding of the blob tables of `packs` (see the module docs).
#[must_use]
// Invariant: an index object is written per upload shard (`shard_blobs`, thousands of blobs),
// far below the format's u32 counts.
#[allow(clippy::expect_used)]
pub fn encode(packs: &[IndexPack]) -> Vec<u8> {
    let mut blobs: Vec<(BlobId, u32, u32, u32)> = Vec::with_capacity(packs.iter().map(|p| p.blobs.len()).sum());
    for (position, pack) in (0u32..).zip(packs) {
        blobs.extend(pack.blobs.iter().map(|&(id, offset, length)| (id, position, offset, length)));
    }
    blobs.sort_unstable_by_key(|blob| (blob.0, blob.1));
    let table: usize = packs.iter().map(|p| 2 + p.id.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + table + blobs.len() * BLOB_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(packs.len()).expect("fewer than 4 billion packs an object").to_le_bytes());
    for pack in packs {
        // Pack ids are 64 hex digits: far below the u16 limit.
        let id = &pack.id.as_bytes()[..pack.id.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(id);
    }
    out.extend_from_slice(&u32::try_from(blobs.len()).expect("fewer than 4 billion blobs an object").to_le_bytes());
    for (id, pack, offset, length) in blobs {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&pack.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
    }
    out
}

/// An index object as the loader uses it: the pack ids once, the blobs with the position of
/// their pack in `packs`.
#[derive(Debug, Default)]
pub struct IndexObject {
    /// Pack ids, referenced by position.
    pub packs: Vec<String>,
    /// (blob id, pack position, offset, length).
    pub blobs: Vec<(BlobId, u32, u32, u32)>,
}

impl IndexObject {
    /// Decodes a payload: binary when it starts with [`MAGIC`], else the JSON of old objects.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut out = IndexObject::default();
        let mut blobs = Vec::new();
        visit::<DecodeError>(
            payload,
            |packs, _| out.packs = packs,
            |id, pack, offset, length| {
                blobs.push((id, pack, offset, length));
                Ok(())
            },
        )?;
        out.blobs = blobs;
        Ok(out)
    }
}

/// Decodes a payload (binary or the JSON of old objects) without holding its blobs: `packs`
/// receives the pack ids and the number of blobs first, then `blob` each (blob id, pack
/// position, offset, length) as it is read. Loading the index this way streams every blob of an
/// object straight into the external sort instead of first building a copy of the object.
/// A blob that names a pack the object does not list is a [`DecodeError`], before `blob` sees it.
pub fn visit<E: From<DecodeError>>(
    payload: &[u8],
    packs: impl FnOnce(Vec<String>, usize),
    mut blob: impl FnMut(BlobId, u32, u32, u32) -> Result<(), E>,
) -> Result<(), E> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
        if rest.len() < n {
            return Err(DecodeError::Binary("it ends early"));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }
    let Some(mut rest) = payload.strip_prefix(MAGIC.as_slice()) else {
        let file: IndexFile = serde_json::from_slice(payload).map_err(DecodeError::Json)?;
        let blob_count = file.blob_count();
        let (ids, tables): (Vec<String>, Vec<_>) = file.packs.into_iter().map(|p| (p.id, p.blobs)).unzip();
        packs(ids, blob_count);
        for (position, table) in (0u32..).zip(tables) {
            for (id, offset, length) in table {
                blob(id, position, offset, length)?;
            }
        }
        return Ok(());
    };
    let pack_count = u32_at(take(&mut rest, 4)?, 0) as usize;
    let mut ids = Vec::with_capacity(pack_count.min(rest.len() / 2));
    for _ in 0..pack_count {
        let len = take(&mut rest, 2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let id =
            std::str::from_utf8(take(&mut rest, len)?).map_err(|_| DecodeError::Binary("a pack id is not UTF-8"))?;
        ids.push(id.to_owned());
    }
    let blob_count = u32_at(take(&mut rest, 4)?, 0) as usize;
    let table = take(&mut rest, blob_count.checked_mul(BLOB_BYTES).ok_or(DecodeError::Binary("it ends early"))?)?;
    if !rest.is_empty() {
        return Err(DecodeError::Binary("bytes follow the blob table").into());
    }
    packs(ids, blob_count);
    for entry in table.chunks_exact(BLOB_BYTES) {
        let mut id = [0u8; 32];
        id.copy_from_slice(&entry[..32]);
        let pack = u32_at(entry, 32);
        if pack as usize >= pack_count {
            return Err(DecodeError::Binary("a blob names a pack the object does not list").into());
        }
        blob(BlobId::from_bytes(id), pack, u32_at(entry, 36), u32_at(entry, 40))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<IndexPack> {
        let id = |i: u32| BlobId::for_tests(&i.to_le_bytes());
        vec![
            IndexPack { id: "a".repeat(64), blobs: (0..300).map(|i| (id(i), i * 10, 10)).collect() },
            IndexPack { id: "b".repeat(64), blobs: vec![(id(1000), 0, 7), (id(1001), 7, 1 << 20)] },
            IndexPack { id: "c".repeat(64), blobs: Vec::new() },
        ]
    }

    type Tables = Vec<(String, Vec<(BlobId, u32, u32)>)>;

    fn sorted(file: &IndexFile) -> Tables {
        file.packs
            .iter()
            .map(|p| {
                let mut blobs = p.blobs.clone();
                blobs.sort_unstable_by_key(|b| b.0);
                (p.id.clone(), blobs)
            })
            .collect()
    }

    #[test]
    fn binary_round_trips_and_is_sorted_by_id() {
        let packs = sample();
        let bytes = encode(&packs);
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(bytes.len(), 8 + 4 + 3 * 66 + 4 + 302 * BLOB_BYTES);
        let back = IndexFile::decode(&bytes).unwrap();
        assert_eq!(sorted(&back), sorted(&IndexFile { packs }));
        let object = IndexObject::decode(&bytes).unwrap();
        assert!(object.blobs.windows(2).all(|w| w[0].0 < w[1].0), "blobs sorted by id");
    }

    #[test]
    fn old_json_objects_still_read() {
        let packs = sample();
        #[derive(Serialize)]
        struct Shard<'a> {
            packs: &'a [IndexPack],
        }
        let json = serde_json::to_vec(&Shard { packs: &packs }).unwrap();
        assert_eq!(json[0], b'{');
        let back = IndexFile::decode(&json).unwrap();
        assert_eq!(sorted(&back), sorted(&IndexFile { packs }));
    }

    #[test]
    fn damaged_binary_objects_are_errors() {
        let bytes = encode(&sample());
        for cut in [9, 20, bytes.len() - 1] {
            assert!(IndexObject::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(IndexObject::decode(&extra).is_err());
        let mut bad_pack = bytes.clone();
        let first_blob = 8 + 4 + 3 * 66 + 4;
        bad_pack[first_blob + 32..first_blob + 36].copy_from_slice(&9u32.to_le_bytes());
        assert!(matches!(IndexObject::decode(&bad_pack), Err(DecodeError::Binary(_))));
        assert!(IndexObject::decode(b"garbage").is_err());
    }
}
