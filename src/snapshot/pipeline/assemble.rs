//! What commits a snapshot's content: new snapshot ids, and the last index object and the
//! manifest written once every pack is durable.

use crate::crypto::{Digest, IdKey};
use crate::snapshot::Error;

/// A new snapshot id: the UTC start time to the millisecond (ids sort by time, also for
/// snapshots taken within one second) and 8 random hex digits.
#[must_use]
pub fn new_snapshot_id(started: chrono::DateTime<chrono::Utc>) -> String {
    format!("{}-{}", started.format("%Y%m%dT%H%M%S%3fZ"), &IdKey::generate().digest(b"snapshot id").to_string()[..8])
}

/// Writes the rest of the index (if any pack was new) and the encrypted manifest; returns the
/// bytes uploaded for them and the manifest's digest. The snapshot record, written after this by
/// the caller, is what commits the snapshot.
pub async fn write_index_and_manifest(
    repo: &crate::repository::Repository,
    snapshot_id: &str,
    (upload, shard_blobs): (&mut crate::snapshot::pack::UploadReport, usize),
    manifest: &crate::snapshot::manifest::Manifest,
) -> Result<(u64, Digest), Error> {
    use crate::repo::ObjectKey;
    upload.write_index(repo, snapshot_id, shard_blobs, true).await?;
    let json = serde_json::to_vec(manifest).expect("manifest serialises");
    let (_, digest, bytes) =
        repo.seal_put(crate::codec::ObjectKind::Manifest, &ObjectKey::Manifest(snapshot_id.to_owned()), json).await?;
    Ok((bytes, digest))
}
