//! The repository's WAL segment size: recorded by the first segment or backup stored, checked by
//! every later one, and read by everything that parses or builds a WAL file name.
//!
//! A segment name means a WAL position only together with the segment size (4 GiB / size
//! segments per log id), and nothing in a name says which size it was spelled with: a reader
//! assuming the wrong one deletes or skips WAL that a backup needs. So the size is a fact of the
//! repository, stored once in `wal-segment-size` — an authenticated plaintext record written
//! create-only, so that a crash leaves either no record or a whole one, and two first writers
//! racing agree or one of them fails — and a segment or backup of another size is refused as
//! what it is: two clusters archiving into one repository.
//!
//! Repositories written before the record existed get it from their next push or backup;
//! until then readers learn the size from an archived segment (its decrypted length) or, for a
//! snapshot, from the size its record carries.

use serde::{Deserialize, Serialize};

use super::Error;
use crate::codec::ObjectKind;
use crate::pg::{SegmentSize, WalFileName};
use crate::repo::{self, ObjectKey, PutOutcome};
use crate::repository::{self, Repository};

/// The `wal-segment-size` record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentSizeRecord {
    /// The segment size (bytes).
    pub segment_size: SegmentSize,
    /// What stored the first WAL of this size ("segment 000000010000000000000001", "backup of
    /// /var/lib/postgresql/15/main"), for the two-clusters message.
    pub recorded_by: String,
    /// When (RFC 3339).
    pub recorded_at: String,
}

/// Stored at `wal-segment-size`: one per repository.
impl repository::StoredRecord for SegmentSizeRecord {
    type Id = ();
    fn key_of((): &()) -> ObjectKey {
        ObjectKey::SegmentSize
    }
    fn key(&self) -> ObjectKey {
        ObjectKey::SegmentSize
    }
}

/// The record, if the repository has one.
///
/// # Errors
/// Storage failures and a record that fails authentication (never taken for an absent one).
pub async fn recorded(repo: &Repository) -> Result<Option<SegmentSizeRecord>, Error> {
    match repo.read::<SegmentSizeRecord>(&()).await {
        Ok(record) => Ok(Some(record)),
        Err(repository::Error::Repo(repo::Error::NotFound { .. })) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Records `size` as the repository's segment size, or checks it against the record: `what`
/// (a segment, a backup) is about to be stored and must be of the recorded size. Create-only:
/// of two first writers racing, the second reads the first one's record and is checked
/// against it.
///
/// # Errors
/// [`Error::TwoClusters`] when the repository holds WAL of another size; storage failures.
pub async fn claim(repo: &Repository, size: SegmentSize, what: &str) -> Result<(), Error> {
    if let Some(record) = recorded(repo).await? {
        return check(repo, &record, size, what);
    }
    let record = SegmentSizeRecord {
        segment_size: size,
        recorded_by: what.to_owned(),
        recorded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    match repo.write(&record).await? {
        PutOutcome::Created => {
            tracing::info!(segment_size = %size, recorded_by = what, "recorded the repository's WAL segment size");
            Ok(())
        }
        PutOutcome::AlreadyExists => match recorded(repo).await? {
            Some(theirs) => check(repo, &theirs, size, what),
            None => Err(repository::Error::CorruptRecord {
                key: ObjectKey::SegmentSize.to_string(),
                reason: "exists but cannot be read".into(),
            }
            .into()),
        },
    }
}

fn check(repo: &Repository, record: &SegmentSizeRecord, size: SegmentSize, what: &str) -> Result<(), Error> {
    if record.segment_size == size {
        return Ok(());
    }
    Err(Error::TwoClusters(Box::new(super::TwoClusters {
        location: repo.location().to_owned(),
        recorded: record.segment_size,
        recorded_by: record.recorded_by.clone(),
        found: size,
        what: what.to_owned(),
    })))
}

/// The repository's segment size, for readers of WAL names: the record, else (a repository
/// from before the record) the length of an archived segment; `None` when the repository holds
/// no segment at all (then no segment name can be in it).
///
/// # Errors
/// Storage failures; without a record, also a missing identity or an unreadable segment.
pub async fn segment_size(repo: &Repository) -> Result<Option<SegmentSize>, Error> {
    if let Some(record) = recorded(repo).await? {
        return Ok(Some(record.segment_size));
    }
    let listed = repo.list_wal(None).await?;
    let Some(key) = listed.iter().find_map(|l| WalFileName::is_segment_name(&l.id.name).then(|| l.id.key())) else {
        return Ok(None);
    };
    let plaintext = repo.get_open(ObjectKind::Wal, &key).await?;
    let size = SegmentSize::from_bytes(plaintext.len() as u64)
        .map_err(|reason| Error::BadSegment { name: key.to_string(), reason })?;
    tracing::debug!(segment_size = %size, segment = %key, "no segment size recorded; learned it from an archived segment");
    Ok(Some(size))
}

/// The segment size to read a snapshot's WAL with: the repository's, which must be the one the
/// snapshot records (`what` names the snapshot). Without a record, the snapshot's.
///
/// # Errors
/// [`Error::TwoClusters`] when they differ; storage failures.
pub async fn for_snapshot(repo: &Repository, snapshot_size: SegmentSize, what: &str) -> Result<SegmentSize, Error> {
    match recorded(repo).await? {
        Some(record) => check(repo, &record, snapshot_size, what).map(|()| record.segment_size),
        None => Ok(snapshot_size),
    }
}
