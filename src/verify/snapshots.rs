//! Structure checks of snapshots: records authenticate, manifests match their records, every
//! chunk a manifest references is indexed, and each base backup's WAL is archived.

use std::collections::HashMap;

use super::wanted::{UsedIds, WantedBlobs};
use super::{Error, ProblemKind, VerifyReport, classify};
use crate::archive;
use crate::pg::WalFileName;
use crate::repo::BlobId;
use crate::repo::ObjectKey;
use crate::repository::{self, Repository, StoredRecord};
use crate::snapshot::{self, BlobIndex, BlobLocation, EntryKind, Manifest, SnapshotRecord};

/// A blob a snapshot uses, where the index says it is.
pub(super) type BlobRef = (BlobId, BlobLocation);

/// Every snapshot record that authenticates, oldest first. Reads them one by one (as
/// [`snapshot::list`] does) so that a damaged record is a problem, not the end of the verify.
pub(super) async fn records(repo: &Repository, report: &mut VerifyReport) -> Result<Vec<SnapshotRecord>, Error> {
    let listed = repo.list_snapshots().await?;
    report.snapshots = listed.len() as u64;
    let mut out = Vec::with_capacity(listed.len());
    for item in listed {
        let key = SnapshotRecord::key_of(&item.id);
        match repo.read::<SnapshotRecord>(&item.id).await {
            Ok(record) => {
                report.read(item.size);
                out.push(record);
            }
            Err(e) => report.push(classify(e, &key.to_string())?),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The blob index restore would use. If an index object is damaged, restores cannot build it
/// either: each damaged index object is reported and `None` returned, so chunk and pack checks
/// that depend on the index are skipped rather than reported as thousands of missing chunks.
pub(super) async fn load_index(repo: &Repository, report: &mut VerifyReport) -> Result<Option<BlobIndex>, Error> {
    let listed = repo.list_index().await?;
    let error = match BlobIndex::load(repo).await {
        Ok(index) => {
            for item in &listed {
                report.read(item.size);
            }
            return Ok(Some(index));
        }
        Err(snapshot::Error::Repository(e)) if e.kind() == crate::ErrorKind::Integrity => e,
        Err(e) => return Err(e.into()),
    };
    let before = report.problems.len();
    for item in &listed {
        let key = ObjectKey::Index(item.id.clone());
        let decoded = repo.get_record_bytes(&key).await.and_then(|payload| {
            snapshot::index::IndexObject::decode(&payload)
                .map(drop)
                .map_err(|e| repository::Error::CorruptRecord { key: key.to_string(), reason: e.to_string() })
        });
        match decoded {
            Ok(()) => report.read(item.size),
            Err(e) => report.push(classify(e, &key.to_string())?),
        }
    }
    if report.problems.len() == before {
        // Every index authenticates on its own, yet together they do not load: report that.
        report.push(classify(error, ObjectKey::INDEX_DIR)?);
    }
    for problem in &mut report.problems[before..] {
        problem.detail.push_str("; restores cannot load the blob index, so chunk and pack checks were skipped");
    }
    Ok(None)
}

/// Checks manifests' chunk lists against the index and, for `--read-data`, remembers which
/// blobs snapshots use (on local disk, see [`super::wanted`]), so each can be re-hashed when
/// its pack is read.
pub(super) struct ChunkCheck<'a> {
    index: Option<&'a BlobIndex>,
    used: Option<UsedIds>,
}

impl<'a> ChunkCheck<'a> {
    /// `collect`: remember referenced blobs (only needed when packs will be read).
    pub(super) fn new(index: Option<&'a BlobIndex>, collect: bool) -> Self {
        ChunkCheck { index, used: collect.then(UsedIds::new) }
    }

    /// The referenced blobs per pack (none unless constructed with `collect`).
    pub(super) fn into_wanted(self) -> Result<WantedBlobs, Error> {
        match (self.used, self.index) {
            (Some(used), Some(index)) => Ok(used.resolve(index)?),
            _ => Ok(WantedBlobs::default()),
        }
    }

    /// Reports, once per snapshot, the chunks no index knows (a restore would stop at the
    /// first of them). `manifest` is lean ([`snapshot::load_manifest_lean`]) when there is an
    /// index: the ids of large files are read one file at a time, from the list blobs; a list
    /// that cannot be read is the manifest's problem, reported under `key`.
    async fn check(
        &mut self,
        repo: &Repository,
        snapshot_id: &str,
        key: &str,
        manifest: &Manifest,
        report: &mut VerifyReport,
    ) -> Result<(), Error> {
        let Some(index) = self.index else { return Ok(()) };
        let (mut missing, mut files, mut first) = (0u64, 0u64, None);
        // The entry stream's chunks and the chunk lists were read to load the manifest;
        // --read-data reads their packs again like any other.
        let list_bases = manifest.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::File { list: Some(list), .. } => Some(&list.base),
            _ => None,
        });
        if let Some(used) = &mut self.used {
            for chunk in manifest.entry_chunks.iter().chain(list_bases) {
                used.push(*chunk).map_err(snapshot::Error::from)?;
            }
        }
        let mut lists = snapshot::ChunkResolver::new(repo, index, key);
        for entry in &manifest.entries {
            let EntryKind::File { chunks, list, .. } = &entry.kind else { continue };
            let chunks = match lists.file_chunks(chunks, list.as_ref(), &entry.path).await {
                Ok(chunks) => chunks,
                Err(snapshot::Error::Repository(e)) => {
                    report.push(classify(e, key)?);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            let before = missing;
            // One batch per file: a large file's blocks in one pass over the index.
            for (chunk, location) in chunks.iter().zip(index.get_many(&chunks)?) {
                if location.is_none() {
                    missing += 1;
                    first.get_or_insert_with(|| format!("chunk {chunk} of {}", entry.path));
                    continue;
                }
                if let Some(used) = &mut self.used {
                    used.push(*chunk).map_err(snapshot::Error::from)?;
                }
            }
            files += u64::from(missing > before);
        }
        if let Some(first) = first {
            report.problem(
                ProblemKind::Missing,
                ObjectKey::Snapshot(snapshot_id.to_owned()).to_string(),
                format!("{missing} chunk(s) of {files} file(s) are in no index (first: {first}); the snapshot cannot be restored"),
            );
        }
        Ok(())
    }
}

/// Per snapshot: manifest present and matching its record, chunks indexed, WAL archived.
pub(super) async fn check_all(
    repo: &Repository,
    records: &[SnapshotRecord],
    chunks: &mut ChunkCheck<'_>,
    report: &mut VerifyReport,
) -> Result<(), Error> {
    let sizes: HashMap<String, u64> = repo.list_manifests().await?.into_iter().map(|l| (l.id, l.size)).collect();
    for record in records {
        let key = ObjectKey::Manifest(record.id.clone()).to_string();
        let loaded = match chunks.index {
            Some(index) => snapshot::load_manifest_lean(repo, record, index).await,
            None => snapshot::load_manifest(repo, record).await,
        };
        match loaded {
            Ok(manifest) => {
                report.read(sizes.get(&record.id).copied().unwrap_or(0));
                chunks.check(repo, &record.id, &key, &manifest, report).await?;
            }
            Err(snapshot::Error::Repository(e)) => report.push(classify(e, &key)?),
            Err(e) => return Err(e.into()),
        }
        check_wal_range(repo, record, report).await?;
    }
    Ok(())
}

/// The WAL a base backup needs to become consistent (start to stop segment) must be archived,
/// checked exactly as restore checks it.
async fn check_wal_range(repo: &Repository, record: &SnapshotRecord, report: &mut VerifyReport) -> Result<(), Error> {
    let Some(pg) = &record.pg else { return Ok(()) };
    let size = match archive::segment_size_for_snapshot(repo, pg.segment_size, &format!("snapshot {}", record.id)).await
    {
        Ok(size) => size,
        Err(e @ archive::Error::TwoClusters(_)) => {
            report.problem(
                ProblemKind::Corrupt,
                ObjectKey::Snapshot(record.id.clone()).to_string(),
                format!("{e}; its WAL cannot be read with this repository's segment size"),
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let (first, last) = (pg.start_lsn.segment_no(size), pg.stop_lsn.segment_no(size));
    match archive::check_chain(repo, pg.timeline, first, Some(last), size).await {
        Ok(_) => Ok(()),
        Err(archive::Error::Gap { missing, timeline }) => {
            let name = |number| WalFileName::Segment { timeline, number }.to_name(size);
            report.problem(
                ProblemKind::Missing,
                ObjectKey::Wal { dir: timeline.to_string(), name: missing }.to_string(),
                format!(
                    "needed to make snapshot {} consistent (WAL {} through {}); the snapshot cannot be restored",
                    record.id,
                    name(first),
                    name(last)
                ),
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
