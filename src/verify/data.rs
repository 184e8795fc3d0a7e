//! Packs: presence against the index (one listing of `packs/`, not a request per pack) and,
//! with `--read-data`, the full read of every pack and WAL object through the restore path
//! (`get_stored_into` then `open_pooled`, which checks age authentication and the keyed digest), plus a
//! re-hash of every blob a snapshot uses against its id, which catches an index that points at
//! the wrong bytes of an intact pack, and a check of every WAL segment's page headers against
//! its name, which catches a segment moved to another name whatever its format version.

use std::collections::HashSet;

use futures::{StreamExt, stream};

use super::snapshots::BlobRef;
use super::wanted::WantedBlobs;
use super::{Error, Problem, ProblemKind, VerifyReport, classify};
use crate::codec::ObjectKind;
use crate::crypto::IdKey;
use crate::pg::PageCheck;
use crate::repo::{BlobId, ObjectKey};
use crate::repository::{ReadBuffers, Repository};
use crate::snapshot::BlobIndex;

/// Objects read at once: two keeps a slow store busy while bounding memory to about two
/// packs (stored and opened), whatever the repository size.
pub(super) const CONCURRENCY: usize = 2;

/// Lists `packs/` once and reports every pack an index names that is not stored. Returns the
/// ids of the stored packs with their sizes.
pub(super) async fn check_packs(
    repo: &Repository,
    index: Option<&BlobIndex>,
    report: &mut VerifyReport,
) -> Result<Vec<(String, u64)>, Error> {
    let stored: Vec<(String, u64)> = repo.list_packs().await?.into_iter().map(|l| (l.id.to_string(), l.size)).collect();
    report.packs = stored.len() as u64;
    let Some(index) = index else { return Ok(stored) };
    let present: HashSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    let named: HashSet<&str> = index.packs.iter().map(String::as_str).collect();
    let mut missing: Vec<&str> = named.difference(&present).copied().collect();
    missing.sort_unstable();
    for id in missing {
        report.problem(
            ProblemKind::Missing,
            ObjectKey::Pack(id.to_owned()).to_string(),
            "named by an index but not in storage; snapshots using its chunks cannot be restored",
        );
    }
    report.unreferenced_packs = present.difference(&named).count() as u64;
    Ok(stored)
}

/// One object to read in full.
pub(super) struct Job {
    key: ObjectKey,
    kind: ObjectKind,
    /// Blobs to re-hash against their ids (packs only; read from [`WantedBlobs`] when the
    /// pack is read, so jobs waiting hold none).
    blobs: Vec<BlobRef>,
    /// The page-header check of a WAL segment or `.partial` file against its name.
    pages: Option<PageCheck>,
    /// Stored size, as listed (for the progress total).
    pub(super) size: u64,
}

impl Job {
    /// The object's key as text.
    pub(super) fn key_string(&self) -> String {
        self.key.to_string()
    }
}

/// A read of every stored pack (the blobs snapshots use from it are looked up when it is read).
pub(super) fn pack_jobs(packs: Vec<(String, u64)>) -> impl Iterator<Item = Job> {
    packs.into_iter().map(|(id, size)| Job {
        key: ObjectKey::Pack(id),
        kind: ObjectKind::Pack,
        blobs: Vec::new(),
        pages: None,
        size,
    })
}

/// A read of every WAL object, with its page-header check.
pub(super) fn wal_jobs(objects: Vec<(ObjectKey, Option<PageCheck>, u64)>) -> impl Iterator<Item = Job> {
    objects.into_iter().map(|(key, pages, size)| Job { key, kind: ObjectKind::Wal, blobs: Vec::new(), pages, size })
}

/// Reads every job, [`CONCURRENCY`] at a time, in order; damage becomes problems. Each
/// object's listed size advances `progress` once it is read.
pub(super) async fn read_all(
    repo: &Repository,
    jobs: impl Iterator<Item = Job>,
    wanted: &WantedBlobs,
    report: &mut VerifyReport,
    progress: &crate::progress::Progress,
) -> Result<(), Error> {
    // The stored objects and buffers in flight, reused: read and decrypted on blocking
    // threads and dropped here, fresh buffers would each stay behind in the allocator arena of
    // the thread that made them.
    let buffers = &ReadBuffers::default();
    let mut results = stream::iter(jobs)
        .map(|mut job| async move {
            if let ObjectKey::Pack(id) = &job.key {
                job.blobs = wanted.of(id).map_err(crate::snapshot::Error::from)?;
            }
            let key = job.key_string();
            let size = job.size;
            read_one(repo, job, buffers).await.map(|(bytes, problem)| (key, bytes, problem, size))
        })
        .buffered(CONCURRENCY);
    while let Some(result) = results.next().await {
        let (key, bytes, problem, size) = result?;
        progress.advance(size);
        if let Some(bytes) = bytes {
            report.read(bytes);
            report.data_objects_read.push(key);
        }
        if let Some(problem) = problem {
            report.push(problem);
        }
    }
    Ok(())
}

/// Downloads and opens one object; returns the bytes downloaded (`None` if it vanished) and
/// what is wrong with it, if anything. Only failures unrelated to the object are errors.
/// `buffers` lends the buffers each object is read and decrypted into.
async fn read_one(repo: &Repository, job: Job, buffers: &ReadBuffers) -> Result<(Option<u64>, Option<Problem>), Error> {
    let object = job.key.to_string();
    let stored = match repo.get_stored_into(&job.key, buffers.stored.get()).await {
        Ok(stored) => stored,
        Err(e) => return Ok((None, Some(classify(e, &object)?))),
    };
    let bytes = stored.len() as u64;
    tracing::debug!(object, bytes, "read");
    let plaintext = match repo.open_pooled(job.kind, &job.key, stored, buffers).await {
        Ok(plaintext) => plaintext,
        Err(e) => return Ok((Some(bytes), Some(classify(e, &object)?))),
    };
    if let Some(mut pages) = job.pages {
        let checked = pages.update(&plaintext).and_then(|()| pages.finish());
        let problem = checked.err().map(|mismatch| Problem {
            object,
            kind: ProblemKind::Corrupt,
            detail: format!("does not hold the WAL its name says: {mismatch}; wal-fetch refuses it, so recovery stops here until the right segment is restored"),
        });
        buffers.plaintext.put(plaintext);
        return Ok((Some(bytes), problem));
    }
    if job.blobs.is_empty() {
        buffers.plaintext.put(plaintext);
        return Ok((Some(bytes), None));
    }
    let id_key = repo.id_key.clone();
    let (detail, plaintext) = crate::repository::off_thread(move || {
        let detail = check_blobs(&id_key, &plaintext, &job.blobs);
        (detail, plaintext)
    })
    .await?;
    buffers.plaintext.put(plaintext);
    Ok((Some(bytes), detail.map(|detail| Problem { object, kind: ProblemKind::Corrupt, detail })))
}

/// Re-hashes each blob at the place the index gives; describes the mismatches, if any.
fn check_blobs(id_key: &IdKey, plaintext: &[u8], blobs: &[BlobRef]) -> Option<String> {
    let mut bad = 0usize;
    let mut first = None;
    for (id, location) in blobs {
        let start = location.offset as usize;
        let data = plaintext.get(start..start + location.length as usize);
        if data.is_none_or(|data| BlobId::of(id_key, data) != *id) {
            bad += 1;
            first.get_or_insert_with(|| format!("blob {id} at offset {} length {}", location.offset, location.length));
        }
    }
    first.map(|first| {
        format!(
            "{bad} of the {} blobs snapshots use from this pack do not match their ids (first: {first}); the index does not describe this pack",
            blobs.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::BlobLocation;

    #[test]
    fn blobs_are_rehashed_at_their_index_location() {
        let key = IdKey::generate(crate::crypto::KeyedHash::Blake3PerPurpose);
        let pack = b"hello world".to_vec();
        let at = |offset, length| BlobLocation { pack: 0, offset, length };
        let good = vec![(BlobId::of(&key, b"hello"), at(0, 5)), (BlobId::of(&key, b"world"), at(6, 5))];
        assert_eq!(check_blobs(&key, &pack, &good), None);
        let bad = vec![(BlobId::of(&key, b"hello"), at(1, 5)), (BlobId::of(&key, b"world"), at(6, 50)), good[1]];
        let detail = check_blobs(&key, &pack, &bad).expect("mismatch reported");
        assert!(detail.starts_with("2 of the 3 blobs"), "{detail}");
        assert!(detail.contains("offset 1 length 5"), "{detail}");
    }
}
