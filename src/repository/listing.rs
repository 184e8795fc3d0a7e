//! Typed listings: each lists one prefix of the layout and turns the keys back into ids with
//! [`ObjectKey::parse`], so no caller strips a prefix by hand and an object outside the layout
//! (a stray file, a key with an extra `/`) is skipped with a warning rather than misread.
//!
//! Owns nothing but the listing: what the ids mean is the caller's business.

use chrono::{DateTime, Utc};

use super::{Error, Repository};
use crate::pg::Timeline;
use crate::repo::{ObjectKey, PackId, SnapshotId, lock};

/// One object a typed listing found: its id within its kind and what the store says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<I> {
    /// The id (the key without its kind's prefix), typed by kind.
    pub id: I,
    /// Size in bytes as stored.
    pub size: u64,
    /// When the store wrote it (its creation time: objects are never rewritten).
    pub modified: DateTime<Utc>,
}

/// Where a WAL object lives: `wal/<dir>/<name>`. The directory is what the writer chose (the
/// timeline); checking it matches the name is verify's job, so it is kept as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalKey {
    /// The grouping directory (the timeline, as written).
    pub dir: String,
    /// The WAL file name.
    pub name: String,
}

impl WalKey {
    /// The object key this names.
    #[must_use]
    pub fn key(&self) -> ObjectKey {
        ObjectKey::Wal { dir: self.dir.clone(), name: self.name.clone() }
    }
}

impl Repository {
    /// Where the repository is, for messages (a path or URL; never holds credentials).
    #[must_use]
    pub fn location(&self) -> &str {
        self.store.location()
    }

    /// Every lock held on the repository (`radd unlock` without flags).
    pub async fn locks(&self) -> Result<Vec<lock::LockInfo>, Error> {
        Ok(lock::list(&self.store).await?)
    }

    /// Removes stale locks, or all of them with `all`; returns the removed (`radd unlock`).
    pub async fn unlock(&self, all: bool) -> Result<Vec<lock::LockInfo>, Error> {
        Ok(lock::unlock(&self.store, all).await?)
    }

    /// The one listing loop: lists `prefix` and keeps the keys `pick` accepts after
    /// [`ObjectKey::parse`], sorted by key as the store listing is.
    async fn list_kind<I>(&self, prefix: &str, pick: fn(ObjectKey) -> Option<I>) -> Result<Vec<Stored<I>>, Error> {
        let listed = self.store.list(prefix).await?;
        Ok(listed
            .into_iter()
            .filter_map(|item| {
                let Some(id) = ObjectKey::parse(&item.key).and_then(pick) else {
                    tracing::warn!(key = %item.key, "ignoring an object outside the repository layout");
                    return None;
                };
                Some(Stored { id, size: item.size, modified: item.modified })
            })
            .collect())
    }

    /// Ids of the committed snapshots (`snapshots/`), by id.
    pub async fn list_snapshots(&self) -> Result<Vec<Stored<SnapshotId>>, Error> {
        self.list_kind(
            ObjectKey::SNAPSHOT_DIR,
            |k| if let ObjectKey::Snapshot(id) = k { id.parse().ok() } else { None },
        )
        .await
    }

    /// Ids of the stored manifests (`manifests/`).
    pub async fn list_manifests(&self) -> Result<Vec<Stored<String>>, Error> {
        self.list_kind(ObjectKey::MANIFEST_DIR, |k| if let ObjectKey::Manifest(id) = k { Some(id) } else { None }).await
    }

    /// Ids of the stored packs (`packs/`).
    pub async fn list_packs(&self) -> Result<Vec<Stored<PackId>>, Error> {
        self.list_kind(ObjectKey::PACK_DIR, |k| if let ObjectKey::Pack(id) = k { id.parse().ok() } else { None }).await
    }

    /// Names of the index objects (`index/`).
    pub async fn list_index(&self) -> Result<Vec<Stored<String>>, Error> {
        self.list_kind(ObjectKey::INDEX_DIR, |k| if let ObjectKey::Index(id) = k { Some(id) } else { None }).await
    }

    /// Ids of the pinned snapshots (`pins/`).
    pub async fn list_pins(&self) -> Result<Vec<Stored<String>>, Error> {
        self.list_kind(ObjectKey::PIN_DIR, |k| if let ObjectKey::Pin(id) = k { Some(id) } else { None }).await
    }

    /// Ids of the packs marked condemned (`condemned/`).
    pub async fn list_condemned(&self) -> Result<Vec<Stored<String>>, Error> {
        self.list_kind(ObjectKey::CONDEMNED_DIR, |k| if let ObjectKey::Condemned(id) = k { Some(id) } else { None })
            .await
    }

    /// Keys of the accepted WAL gaps (`accepted-gaps/`).
    pub async fn list_accepted_gaps(&self) -> Result<Vec<Stored<String>>, Error> {
        self.list_kind(
            ObjectKey::ACCEPTED_GAP_DIR,
            |k| if let ObjectKey::AcceptedGap(id) = k { Some(id) } else { None },
        )
        .await
    }

    /// Key-safe names of the restore points (`restore-points/`).
    pub async fn list_restore_points(&self) -> Result<Vec<Stored<String>>, Error> {
        self.list_kind(
            ObjectKey::RESTORE_POINT_DIR,
            |k| {
                if let ObjectKey::RestorePoint(id) = k { Some(id) } else { None }
            },
        )
        .await
    }

    /// The WAL objects (`wal/<dir>/<name>`), all of them or those under one timeline's
    /// directory.
    pub async fn list_wal(&self, timeline: Option<Timeline>) -> Result<Vec<Stored<WalKey>>, Error> {
        let prefix = match timeline {
            Some(timeline) => format!("{}/{timeline}", ObjectKey::WAL_DIR),
            None => ObjectKey::WAL_DIR.to_owned(),
        };
        self.list_kind(
            &prefix,
            |k| if let ObjectKey::Wal { dir, name } = k { Some(WalKey { dir, name }) } else { None },
        )
        .await
    }
}
