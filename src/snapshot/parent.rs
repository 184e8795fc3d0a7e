//! The backup host's record of its last committed backup of a data directory or file tree:
//! path, size, mtime, ctime, inode, SHA-256 and chunk list of every file. An incremental backup
//! reuses an entry without reading the file when size, mtime and ctime (to the nanosecond) and
//! inode are unchanged and the file was last modified more than a second before the parent
//! backup started (so a change made while the parent was being read is never missed —
//! pgBackRest's timestamp rule), and every chunk is still in the repository. Like bupstash's
//! send log it lives on the backup host, which has no identity to read the encrypted manifests;
//! losing it only means a full read.
//!
//! When the parent snapshot is still committed in the repository ([`ParentReader::trust`]),
//! its chunks are stored (prune never deletes a pack a remaining snapshot uses, and a backup
//! holds a lock prune respects), so an unchanged file costs no index lookup at all, and a
//! changed relation file looks up only the blocks that differ from the parent's block at the
//! same position: an incremental backup reads the on-disk blob index only for what changed.
//! (An index damaged by hand is then not repaired by the next backup: `radd verify` reports
//! it, and `backup --full-read` stores what it lacks again.)
//!
//! The record is a JSON-lines file in walk order (a header line, then one line per file), read
//! with a cursor that moves forward in step with the walk (a merge join) and written line by
//! line as entries are finished: memory stays constant whatever the number of files.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FileSum;
use super::manifest::ChunkList;
use super::pack::BlobIndex;
use crate::crypto::Digest;
use crate::repo::BlobId;

/// Format version written in the header line. Format 3 writes a file's chunk ids as one base64
/// string (format 2: an array of hex strings, still read); another version means "no parent".
const FORMAT: u32 = 3;

/// The oldest format still read.
const OLDEST_READ: u32 = 2;

/// One file as last backed up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParentFile {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status-change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Checksum of the content, as the manifest holds it.
    #[serde(flatten)]
    pub sum: FileSum,
    /// Chunk ids.
    #[serde(with = "packed_ids")]
    pub chunks: Vec<BlobId>,
    /// How the manifest stores the ids of a large file (base list blob and patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ChunkList>,
    /// The ids in `list`'s base blob, to patch against next time (the backup host cannot read
    /// the blob back: it holds no identity); empty when they are `chunks` themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "packed_ids")]
    pub base_chunks: Vec<BlobId>,
}

/// A list of chunk ids as one base64 string of their bytes back to back: a 1 GiB relation
/// file's 131 072 ids parse as one string, decoded at GB/s, not as 131 072 hex strings (parsing
/// those was a sixth of an incremental backup's reading thread). Reads format 2's array of hex
/// strings too. Ids are encoded three at a time (96 bytes, 128 characters without padding), so
/// neither side ever holds the whole list twice.
mod packed_ids {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use crate::repo::BlobId;

    /// Ids per group: 3 × 32 bytes encode to 128 characters, no padding between groups.
    const GROUP: usize = 3;
    const GROUP_TEXT: usize = 128;

    pub fn serialize<S: Serializer>(ids: &[BlobId], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64(ids))
    }

    /// Displays ids as base64 group by group: written straight into the record.
    struct Base64<'a>(&'a [BlobId]);

    impl std::fmt::Display for Base64<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let (mut bytes, mut text) = ([0u8; GROUP * 32], [0u8; GROUP_TEXT]);
            for group in self.0.chunks(GROUP) {
                for (i, id) in group.iter().enumerate() {
                    bytes[i * 32..(i + 1) * 32].copy_from_slice(id.as_bytes());
                }
                let n = STANDARD.encode_slice(&bytes[..group.len() * 32], &mut text).map_err(|_| std::fmt::Error)?;
                f.write_str(std::str::from_utf8(&text[..n]).map_err(|_| std::fmt::Error)?)?;
            }
            Ok(())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<BlobId>, D::Error> {
        deserializer.deserialize_any(Ids)
    }

    struct Ids;

    impl<'de> Visitor<'de> for Ids {
        type Value = Vec<BlobId>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("chunk ids: one base64 string, or an array of hex strings")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
            let mut ids = Vec::with_capacity(text.len() / GROUP_TEXT * GROUP + GROUP);
            let mut bytes = [0u8; GROUP * 32 + 2];
            for group in text.as_bytes().chunks(GROUP_TEXT) {
                let n = STANDARD.decode_slice(group, &mut bytes).map_err(E::custom)?;
                if !n.is_multiple_of(32) {
                    return Err(E::custom("chunk ids: not a whole number of 32-byte ids"));
                }
                for id in bytes[..n].chunks_exact(32) {
                    let mut one = [0u8; 32];
                    one.copy_from_slice(id);
                    ids.push(BlobId::from_bytes(one));
                }
            }
            Ok(ids)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(id) = seq.next_element::<BlobId>()? {
                ids.push(id);
            }
            Ok(ids)
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    snapshot_id: String,
    started_ms: i64,
}

/// One file's line: read as `Line<ParentFile>`, written from a borrow (`Line<&ParentFile>`) so
/// the chunk lists of large files are not copied to be written.
#[derive(Serialize, Deserialize)]
struct Line<F> {
    /// Relative path; hex of its bytes when they are not UTF-8 (`raw`).
    path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    raw: bool,
    file: F,
}

/// The order of a walk (parents before children, names sorted by bytes): paths compared
/// component by component, so that `a/b` sorts before `a.txt` as the walk emits them.
#[must_use]
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// Where the record for `repo_id` and the backed-up `source` (a data directory, or the list of
/// fs roots) lives under `state_dir`.
#[must_use]
pub fn record_path(state_dir: &Path, repo_id: &str, source: &[u8]) -> PathBuf {
    let source_id = &Digest::sha256(source).to_string()[..16];
    state_dir.join(format!("parent-{repo_id}-{source_id}.jsonl"))
}

/// Reads the last backup's record in walk order, in step with the current walk.
pub struct ParentReader {
    snapshot_id: String,
    started_ms: i64,
    /// The lines after the header.
    lines: BufReader<File>,
    /// The line being parsed, reused: it keeps the size of the longest line (a 1 GiB relation
    /// file's, 5.6 MB of base64 ids). Parsing from a slice scans strings at memory speed; a
    /// `serde_json` reader over the file goes byte by byte and keeps a scratch copy as large.
    line: Vec<u8>,
    current: Option<(Vec<u8>, ParentFile)>,
    exhausted: bool,
    path: PathBuf,
    trusted: bool,
}

impl ParentReader {
    /// Opens the record; a missing or unreadable one means "no parent" (a full read).
    #[must_use]
    pub fn open(path: &Path) -> Option<Self> {
        let file = File::open(path).ok()?;
        let mut lines = BufReader::with_capacity(1 << 16, file);
        let mut buffer = String::new();
        let header = lines.read_line(&mut buffer).ok().and_then(|_| serde_json::from_str::<Header>(&buffer).ok());
        match header {
            Some(h) if (OLDEST_READ..=FORMAT).contains(&h.format) => Some(Self {
                snapshot_id: h.snapshot_id,
                started_ms: h.started_ms,
                lines,
                line: Vec::new(),
                current: None,
                exhausted: false,
                path: path.to_owned(),
                trusted: false,
            }),
            _ => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable parent record: every file is read");
                None
            }
        }
    }

    /// The snapshot the record describes.
    #[must_use]
    pub fn snapshot_id(&self) -> &str {
        &self.snapshot_id
    }

    /// Opens the record ([`ParentReader::open`]) and trusts it when its snapshot's record is
    /// in the repository and authenticates (call under the backup's lock).
    pub async fn open_checked(path: &Path, repo: &crate::repository::Repository) -> Option<Self> {
        let mut reader = Self::open(path)?;
        let read = match reader.snapshot_id.parse::<crate::repo::SnapshotId>() {
            Ok(id) => repo.read::<super::SnapshotRecord>(&id).await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match read {
            Ok(()) => reader.trust(),
            Err(error) => {
                tracing::info!(snapshot_id = %reader.snapshot_id, error = %error, "the parent snapshot is not in the repository: its chunks are looked up")
            }
        }
        Some(reader)
    }

    /// Declares that the parent snapshot is committed in the repository (its record read and
    /// authenticated under the backup's lock): its chunks need no lookup to be known stored.
    pub fn trust(&mut self) {
        self.trusted = true;
    }

    /// Whether [`ParentReader::trust`] was called.
    #[must_use]
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    fn advance(&mut self) -> Option<&(Vec<u8>, ParentFile)> {
        if self.current.is_none() && !self.exhausted {
            self.line.clear();
            let next = match self.lines.read_until(b'\n', &mut self.line) {
                Ok(0) => None,
                Ok(_) => Some(serde_json::from_slice::<Line<ParentFile>>(&self.line).map_err(drop)),
                Err(_) => Some(Err(())),
            };
            let (parsed, damaged) = match next {
                None => (None, false),
                Some(Ok(line)) => {
                    let path = if line.raw { hex::decode(&line.path).ok() } else { Some(line.path.into_bytes()) };
                    let parsed = path.map(|p| (p, line.file));
                    let damaged = parsed.is_none();
                    (parsed, damaged)
                }
                Some(Err(_)) => (None, true),
            };
            if damaged {
                tracing::warn!(path = %self.path.display(), "parent record is damaged: the remaining files are read");
            }
            self.exhausted = parsed.is_none();
            self.current = parsed;
        }
        self.current.as_ref()
    }

    /// The parent's entry for the file at `rel` (its exact bytes), if it had one. Calls must
    /// come in walk order; paths the walk skipped are passed over.
    pub fn find(&mut self, rel: &[u8]) -> Option<ParentFile> {
        loop {
            let (path, _) = self.advance()?;
            match walk_order(path, rel) {
                Ordering::Less => self.current = None,
                Ordering::Greater => return None,
                Ordering::Equal => return self.current.take().map(|(_, p)| p),
            }
        }
    }

    /// Whether the file is provably unchanged since the parent read it: same size, mtime,
    /// ctime and inode, last changed over a second before the parent started, every chunk
    /// (and list blob) still stored (known without lookups when the parent is trusted).
    #[must_use]
    pub fn unchanged(
        &self,
        p: &ParentFile,
        size: u64,
        mtime_ns: i128,
        ctime_ns: i128,
        ino: u64,
        known: &BlobIndex,
    ) -> bool {
        let settled = mtime_ns.max(ctime_ns) < (i128::from(self.started_ms) - 1000) * 1_000_000;
        let same = p.size == size && p.mtime_ns == mtime_ns && p.ctime_ns == ctime_ns && p.ino == ino;
        same && settled
            && (self.trusted
                || (p.chunks.iter().all(|c| known.contains(c))
                    && p.list.as_ref().is_none_or(|l| known.contains(&l.base))))
    }
}

/// Writes the next record line by line into a temporary file; it replaces the current record
/// only once the snapshot is committed ([`PendingParent::commit`]).
pub struct ParentWriter {
    out: BufWriter<File>,
    pending: PendingParent,
}

impl ParentWriter {
    /// Starts the record of snapshot `snapshot_id` (started at `started_ms`) for `path`.
    pub fn create(path: &Path, snapshot_id: &str, started_ms: i64) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        // The record holds every file's path and digest: readable by radd's user only.
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!("{name}.{snapshot_id}.tmp"));
        let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let pending = PendingParent { tmp, path: path.to_owned(), committed: false };
        serde_json::to_writer(&mut out, &Header { format: FORMAT, snapshot_id: snapshot_id.to_owned(), started_ms })?;
        out.write_all(b"\n")?;
        Ok(Self { out, pending })
    }

    /// Appends a file (calls in walk order).
    pub fn add(&mut self, rel: &[u8], file: &ParentFile) -> std::io::Result<()> {
        let (path, raw) = match std::str::from_utf8(rel) {
            Ok(s) => (s.to_owned(), false),
            Err(_) => (hex::encode(rel), true),
        };
        serde_json::to_writer(&mut self.out, &Line { path, raw, file })?;
        self.out.write_all(b"\n")
    }

    /// Flushes and fsyncs the temporary file.
    pub fn finish(self) -> std::io::Result<PendingParent> {
        let Self { out, pending } = self;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(pending)
    }
}

/// A complete record waiting for its snapshot to commit; dropped uncommitted, it is removed.
pub struct PendingParent {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl PendingParent {
    /// Makes the record the parent of the next backup (rename, then fsync of the directory).
    pub fn commit(mut self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Where the record goes.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PendingParent {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_compares_components() {
        assert_eq!(walk_order(b"a/b", b"a.txt"), Ordering::Less);
        assert_eq!(walk_order(b"", b"a"), Ordering::Less);
        assert_eq!(walk_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(walk_order(b"b", b"a/z"), Ordering::Greater);
        assert_eq!(walk_order(b"x/y", b"x/y"), Ordering::Equal);
    }

    #[test]
    fn reader_merges_with_the_walk_and_skips_vanished_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path(), "repo", b"/src");
        let file = |size| ParentFile {
            size,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: size,
            sum: FileSum::Sha256(Digest::sha256(b"x")),
            chunks: Vec::new(),
            list: None,
            base_chunks: Vec::new(),
        };
        let mut writer = ParentWriter::create(&path, "snap", 10_000).unwrap();
        for (rel, size) in [(&b"a"[..], 1), (b"a/b", 2), (b"a/\xff", 3), (b"a.txt", 4), (b"c", 5)] {
            writer.add(rel, &file(size)).unwrap();
        }
        let pending = writer.finish().unwrap();
        assert!(ParentReader::open(&path).is_none(), "not committed yet");
        pending.commit().unwrap();
        let mut reader = ParentReader::open(&path).unwrap();
        assert_eq!(reader.snapshot_id(), "snap");
        let known = BlobIndex::default();
        let mut unchanged = |rel: &[u8], size, ino| {
            reader.find(rel).filter(|p| reader.unchanged(p, size, 1, 1, ino, &known)).map(|p| p.size)
        };
        assert_eq!(unchanged(b"a/b", 2, 2), Some(2));
        assert_eq!(unchanged(b"a/\xff", 3, 3), Some(3));
        assert_eq!(unchanged(b"a/zz", 9, 9), None, "not in the parent");
        assert_eq!(unchanged(b"a.txt", 4, 99), None, "other inode");
        assert_eq!(unchanged(b"c", 5, 5), Some(5));
        assert_eq!(unchanged(b"d", 5, 5), None);
    }

    #[test]
    fn chunk_ids_are_one_hex_string_and_format_2_arrays_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path(), "repo", b"/src");
        // Two groups of three and a partial one (the chunks), two whole groups (the base).
        let ids: Vec<BlobId> = (0..7u8).map(|i| BlobId::for_tests(&[i])).collect();
        let file = ParentFile {
            size: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 1,
            sum: FileSum::Crc32c(7),
            chunks: ids.clone(),
            list: None,
            base_chunks: ids[1..].to_vec(),
        };
        let mut writer = ParentWriter::create(&path, "snap", 10_000).unwrap();
        writer.add(b"f", &file).unwrap();
        writer.finish().unwrap().commit().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        use base64::Engine;
        let bytes: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
        let packed = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(text.contains(&format!(r#""chunks":"{packed}""#)), "{text}");
        let read = ParentReader::open(&path).unwrap().find(b"f").unwrap();
        assert_eq!((read.chunks, read.base_chunks), (ids.clone(), ids[1..].to_vec()));
        // Format 2, as the previous release wrote it.
        let old = format!(
            "{{\"format\":2,\"snapshot_id\":\"old\",\"started_ms\":10000}}\n\
             {{\"path\":\"f\",\"file\":{{\"size\":1,\"mtime_ns\":1,\"ctime_ns\":1,\"ino\":1,\"crc32c\":7,\"chunks\":{}}}}}\n",
            serde_json::to_string(&ids).unwrap()
        );
        std::fs::write(&path, old).unwrap();
        let mut reader = ParentReader::open(&path).unwrap();
        assert_eq!(reader.snapshot_id(), "old");
        assert_eq!(reader.find(b"f").unwrap().chunks, ids);
        std::fs::write(&path, text.replace(r#""format":3"#, r#""format":4"#)).unwrap();
        assert!(ParentReader::open(&path).is_none(), "a newer format is no parent");
    }

    #[test]
    fn a_trusted_parent_needs_no_lookup_an_untrusted_one_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path(), "repo", b"/src");
        let file = ParentFile {
            size: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 1,
            sum: FileSum::Sha256(Digest::sha256(b"x")),
            chunks: vec![BlobId::for_tests(b"chunk")],
            list: None,
            base_chunks: Vec::new(),
        };
        let mut writer = ParentWriter::create(&path, "snap", 10_000).unwrap();
        writer.add(b"f", &file).unwrap();
        writer.finish().unwrap().commit().unwrap();
        let known = BlobIndex::default();
        let mut reader = ParentReader::open(&path).unwrap();
        assert!(!reader.trusted());
        let p = reader.find(b"f").unwrap();
        assert!(!reader.unchanged(&p, 1, 1, 1, 1, &known), "its chunk is in no index");
        reader.trust();
        assert!(reader.unchanged(&p, 1, 1, 1, 1, &known), "the committed parent's chunks are stored");
        assert!(!reader.unchanged(&p, 2, 1, 1, 1, &known), "another size is a change all the same");
    }
}
