//! Safe prune: deletes packs no remaining snapshot references and WAL no retained base backup
//! needs, without ever breaking a snapshot that is being written at the same time.
//!
//! Packs are deleted in two phases (rustic-style): a prune *condemns* an unreferenced pack by
//! writing `condemned/<pack>` with the time, and only a prune at least `grace` later deletes it
//! if it is still unreferenced. A backup running meanwhile that reused one of its chunks has
//! committed (so the pack is referenced again and the mark is dropped) long before the grace
//! period — longer than any backup — ends. Deleting follows a fixed order, so a prune killed at
//! any point leaves a repository that verifies: (1) a new index without the doomed packs is
//! written, (2) the old index objects are deleted, (3) the packs, (4) their marks. WAL is
//! deleted below the start segment of the oldest retained base backup on each timeline (all of
//! a timeline older than every retained backup's); history files are always kept. WAL names
//! are read with the repository's segment size, never an assumed one: read with another size,
//! a name means another position, and the WAL a retained backup needs would be deleted. Staging
//! files that writers killed mid-write left behind are removed once older than the grace period.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::archive;
use crate::faults::crash_point;
use crate::pg::{Timeline, WalFileName};
use crate::repo::ObjectKey;
use crate::repository::{self, Repository};
use crate::snapshot::index::{ExternalSort, IndexFile, IndexPack, RUN_RECORDS, scratch_dir};
use crate::snapshot::{self, BlobIndex, EntryKind};

/// Blobs per index object prune writes (as a backup's default `backup.index_shard_blobs`).
const SHARD_BLOBS: usize = 50_000;

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Whether anything was changed.
    pub applied: bool,
    /// Packs still referenced by a snapshot.
    pub packs_referenced: usize,
    /// Unreferenced packs newly condemned (deleted by a prune after the grace period).
    pub packs_condemned: usize,
    /// Condemned packs referenced again (a backup reused them): reprieved.
    pub packs_reprieved: usize,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// WAL files deleted.
    pub wal_deleted: usize,
    /// Bytes reclaimed (packs and WAL deleted).
    pub bytes_reclaimed: u64,
    /// The oldest WAL segment kept per timeline.
    pub wal_kept_from: BTreeMap<String, String>,
    /// Staging files (left by writers killed mid-write) older than the grace period, removed.
    pub staging_removed: usize,
}

/// How a prune runs.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// The time the prune judges ages by (now, except in tests).
    pub now: DateTime<Utc>,
    /// Unreferenced packs are deleted only this long after a prune first condemned them.
    pub grace: chrono::Duration,
    /// Report what would change; change nothing (and take no lock).
    pub dry_run: bool,
    /// How long to wait for running backups (shared locks) to finish.
    pub lock_wait: std::time::Duration,
}

/// Runs a prune. Takes the repository's exclusive lock, so it never runs beside a backup
/// (whose uploads are unreferenced until it commits) or another prune.
pub async fn prune(repo: &Repository, options: PruneOptions) -> Result<PruneReport, snapshot::Error> {
    let mut report = PruneReport { applied: !options.dry_run, ..PruneReport::default() };
    let lock = if options.dry_run { None } else { Some(repo.lock_exclusive("prune", options.lock_wait).await?) };
    let result = prune_locked(repo, options, lock.as_ref(), &mut report).await;
    if let Some(lock) = lock {
        lock.release().await.map_err(repository::Error::from)?;
    }
    result.map(|()| report)
}

// Long on purpose: mark and sweep in their crash-safe order (blob index, marks, then new index, old indexes, packs, marks) as one sequence under the lock.
async fn prune_locked(
    repo: &Repository,
    options: PruneOptions,
    lock: Option<&crate::repo::lock::ExclusiveLock>,
    report: &mut PruneReport,
) -> Result<(), snapshot::Error> {
    let PruneOptions { now, grace, dry_run, .. } = options;
    let records = snapshot::list(repo).await?;

    // The blob index, on local disk (it also locates the manifests' entry streams).
    let index = snapshot::BlobIndex::load(repo).await?;
    let referenced_packs = referenced_packs(repo, &records, &index).await?;
    let stored: HashMap<String, u64> =
        repo.list_packs().await?.into_iter().map(|l| (l.id.to_string(), l.size)).collect();
    report.packs_referenced = referenced_packs.len();

    // Marks: reprieve the referenced, find the expired.
    let marks: HashMap<String, DateTime<Utc>> = {
        let mut m = HashMap::new();
        for item in repo.list_condemned().await? {
            let name = item.id;
            let text = repo.get_stored(&ObjectKey::Condemned(name.clone())).await?;
            let at = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
                .map_or(now, |t| t.with_timezone(&Utc));
            m.insert(name, at);
        }
        m
    };
    // Every stored pack no snapshot references is a candidate, indexed or not (a backup that
    // was interrupted leaves unindexed packs).
    let unreferenced: Vec<&String> = stored.keys().filter(|p| !referenced_packs.contains(*p)).collect();
    let mut expired: HashSet<String> = HashSet::new();
    for pack in &unreferenced {
        match marks.get(*pack) {
            Some(at) if now - *at >= grace => {
                expired.insert((*pack).clone());
            }
            Some(_) => {}
            None => {
                report.packs_condemned += 1;
                if !dry_run {
                    let body = bytes::Bytes::from(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    repo.put_new(&ObjectKey::Condemned((*pack).clone()), body).await?;
                }
            }
        }
    }
    crash_point("prune:condemned");
    crate::faults::pause_point("prune:condemned").await;
    for pack in marks.keys().filter(|p| referenced_packs.contains(*p) || !stored.contains_key(*p)) {
        report.packs_reprieved += usize::from(referenced_packs.contains(pack));
        if !dry_run {
            repo.delete(&ObjectKey::Condemned(pack.clone())).await?;
        }
    }

    // (1) new index without the expired packs, (2) old indexes, (3) packs, (4) marks.
    if !expired.is_empty() {
        // Nothing is deleted unless the lock held all along (no backup can have started).
        if let Some(lock) = lock {
            lock.check().await?;
        }
        report.packs_deleted = expired.len();
        report.bytes_reclaimed += expired.iter().filter_map(|p| stored.get(p)).sum::<u64>();
        if !dry_run {
            let touched = rewrite_index(repo, &index, &expired, now).await?;
            crash_point("prune:new-index");
            for name in touched {
                repo.delete(&ObjectKey::Index(name)).await?;
                crash_point("prune:old-index");
            }
            for pack in &expired {
                repo.delete(&ObjectKey::Pack(pack.clone())).await?;
                crash_point("prune:pack");
                repo.delete(&ObjectKey::Condemned(pack.clone())).await?;
            }
            crash_point("prune:packs-done");
        }
    }

    prune_wal(repo, &records, dry_run, report).await?;
    let (repository, cutoff) = (repo.clone(), std::time::SystemTime::from(now - grace));
    report.staging_removed = tokio::task::spawn_blocking(move || repository.remove_stale_staging(cutoff, dry_run))
        .await
        .map_err(|e| snapshot::Error::Internal(format!("staging sweep: {e}")))??;
    Ok(())
}

/// Packs holding a blob some remaining snapshot uses, where the index resolves it (the pack a
/// restore reads). The referenced ids of all snapshots go through an external sort and are
/// merged with the index's sorted table, so memory stays flat however many blobs there are:
/// one manifest at a time, a sort run and a flag per pack.
async fn referenced_packs(
    repo: &Repository,
    records: &[snapshot::SnapshotRecord],
    index: &BlobIndex,
) -> Result<HashSet<String>, snapshot::Error> {
    let mut ids = ExternalSort::new(&scratch_dir(), RUN_RECORDS);
    for record in records {
        // Lean: a large file's ids are read from its list blob when it comes, not all at once.
        let manifest = snapshot::load_manifest_lean(repo, record, index).await?;
        let key = ObjectKey::Manifest(record.id.clone()).to_string();
        let mut lists = snapshot::ChunkResolver::new(repo, index, &key);
        for id in manifest.entry_chunks {
            ids.push(id)?;
        }
        for entry in manifest.entries {
            if let EntryKind::File { chunks, list, .. } = entry.kind {
                let chunks = lists.file_chunks(&chunks, list.as_ref(), &entry.path).await?;
                for id in chunks.iter().copied().chain(list.map(|l| l.base)) {
                    ids.push(id)?;
                }
            }
        }
    }
    let mut used = vec![false; index.packs.len()];
    let mut stored = index.blobs();
    let mut current = stored.next().transpose()?;
    for id in ids.finish()? {
        let id = id?;
        while let Some((stored_id, _)) = &current
            && *stored_id < id
        {
            current = stored.next().transpose()?;
        }
        if let Some((stored_id, location)) = &current
            && *stored_id == id
        {
            used[location.pack as usize] = true;
        }
    }
    Ok(index.packs.iter().zip(used).filter(|(_, used)| *used).map(|(id, _)| id.clone()).collect())
}

/// Step (1) of deleting: writes the blob tables of every index object that lists an expired
/// pack, without the expired packs, as new index objects (a shard at a time); returns the
/// names of the objects they replace, for step (2).
async fn rewrite_index(
    repo: &Repository,
    index: &BlobIndex,
    expired: &HashSet<String>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, snapshot::Error> {
    let mut touched: Vec<usize> = (0u32..)
        .zip(&index.packs)
        .filter(|(_, id)| expired.contains(*id))
        .filter_map(|(p, _)| index.object_of(p))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let id = format!("prune-{}", snapshot::new_snapshot_id(now));
    let (mut merged, mut written) = (Vec::<IndexPack>::new(), 0usize);
    let mut names = Vec::with_capacity(touched.len());
    for object in touched {
        let name = index.objects()[object].clone();
        let key = ObjectKey::Index(name.clone());
        let payload = repo.get_record_bytes(&key).await?;
        let file = IndexFile::decode(&payload)
            .map_err(|e| repository::Error::CorruptRecord { key: key.to_string(), reason: e.to_string() })?;
        merged.extend(file.packs.into_iter().filter(|p| !expired.contains(&p.id)));
        if merged.iter().map(|p| p.blobs.len()).sum::<usize>() >= SHARD_BLOBS {
            repo.put_record_bytes(
                &ObjectKey::Index(snapshot::index_name(&id, written)),
                &snapshot::index::encode(&merged),
            )
            .await?;
            (merged, written) = (Vec::new(), written + 1);
        }
        names.push(name);
    }
    if !merged.is_empty() {
        repo.put_record_bytes(&ObjectKey::Index(snapshot::index_name(&id, written)), &snapshot::index::encode(&merged))
            .await?;
    }
    Ok(names)
}

/// Deletes WAL below the oldest retained base backup's start segment on each timeline.
/// Every retained backup must be of the repository's segment size (else two clusters share
/// the repository, and no WAL is deleted).
async fn prune_wal(
    repo: &Repository,
    records: &[snapshot::SnapshotRecord],
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<(), snapshot::Error> {
    let Some(first) = records.iter().find_map(|r| r.pg.as_ref()) else {
        return Ok(()); // no base backup retained: keep all WAL (nothing says what is needed)
    };
    // Without a record and without any segment archived, the backups' own size spells names.
    let size = archive::segment_size(repo).await?.unwrap_or(first.segment_size);
    let mut keep_from: BTreeMap<Timeline, u64> = BTreeMap::new();
    for record in records {
        let Some(pg) = &record.pg else { continue };
        if pg.segment_size != size {
            return Err(archive::Error::TwoClusters(Box::new(archive::TwoClusters {
                location: repo.location().to_owned(),
                recorded: size,
                recorded_by: "the WAL archived".into(),
                found: pg.segment_size,
                what: format!("snapshot {}", record.id),
            }))
            .into());
        }
        let start = pg.start_lsn.segment_no(size);
        keep_from.entry(pg.timeline).and_modify(|s| *s = (*s).min(start)).or_insert(start);
    }
    let Some(oldest_timeline) = keep_from.keys().next().copied() else {
        return Ok(());
    };
    for item in repo.list_wal(None).await? {
        let name = item.id.name;
        let wal = match WalFileName::parse(&name, size) {
            Ok(w) => w,
            Err(_) => continue,
        };
        let number = match &wal {
            WalFileName::Segment { number, .. } => *number,
            WalFileName::History(_) => continue,
            // .backup and .partial files belong to the segment their name starts with.
            WalFileName::Other { name, .. } => match name.get(..24).map(|base| WalFileName::parse(base, size)) {
                Some(Ok(WalFileName::Segment { number, .. })) => number,
                _ => continue,
            },
        };
        let timeline = wal.timeline();
        let doomed = match keep_from.get(&timeline) {
            Some(from) => number < *from,
            None => timeline < oldest_timeline,
        };
        if doomed {
            report.wal_deleted += 1;
            report.bytes_reclaimed += item.size;
            if !dry_run {
                repo.delete(&ObjectKey::Wal { dir: timeline.to_string(), name }).await?;
                crash_point("prune:wal");
            }
        }
    }
    for (timeline, from) in keep_from {
        report
            .wal_kept_from
            .insert(timeline.to_string(), WalFileName::Segment { timeline, number: from }.to_name(size));
    }
    Ok(())
}
