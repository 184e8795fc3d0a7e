//! Object access by key for the layers above: markers (pins, condemned packs), records deleted
//! by key, locks and streamed (staged) puts. The object store itself stays private to
//! [`Repository`], so every caller gets this module's errors and no caller can reach storage
//! around the repository's keys; decrypting access is [`Repository::get_open`] and kin.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{Error, Repository};
use crate::repo::lock::{self, ExclusiveLock, SharedLock};
use crate::repo::{Listed, NewObject, ObjectKey, PutOutcome};

impl Repository {
    /// Whether an object exists at `key`.
    pub async fn exists(&self, key: &ObjectKey) -> Result<bool, Error> {
        Ok(self.store.exists(key).await?)
    }

    /// The stored bytes at `key`, as they are (markers and records; sealed objects open with
    /// [`Repository::get_open`]).
    pub async fn get_stored(&self, key: &ObjectKey) -> Result<Bytes, Error> {
        Ok(self.store.get(key).await?)
    }

    /// The stored bytes at `key`, read into `buffer` (its content replaced; see
    /// [`repo::Repo::get_into`]).
    pub async fn get_stored_into(&self, key: &ObjectKey, buffer: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(self.store.get_into(key, buffer).await?)
    }

    /// The first `len` stored bytes at `key` (an object header), with a ranged GET.
    pub async fn get_stored_prefix(&self, key: &ObjectKey, len: u64) -> Result<Bytes, Error> {
        Ok(self.store.get_prefix(key, len).await?)
    }

    /// Writes `body` at `key` unless an object is there already (create-only).
    pub async fn put_new(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, Error> {
        Ok(self.store.put_new(key, body).await?)
    }

    /// Replaces the object at `key` (key rewrapping only: every other write is create-only).
    pub async fn put_overwrite(&self, key: &ObjectKey, body: Bytes) -> Result<(), Error> {
        Ok(self.store.put_overwrite(key, body).await?)
    }

    /// Deletes the object at `key` (absent is fine).
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), Error> {
        Ok(self.store.delete(key).await?)
    }

    /// Every object under the directory `dir` (key rewrapping, which visits every object).
    pub async fn list_dir(&self, dir: &str) -> Result<Vec<Listed>, Error> {
        Ok(self.store.list(dir).await?)
    }

    /// A streamed object to be written at `key` and published with [`Repository::publish`]
    /// (blocking: the local backend creates its staging file).
    pub fn new_object(&self, key: &ObjectKey, size_hint: usize) -> Result<NewObject, Error> {
        Ok(self.store.new_object(key, size_hint)?)
    }

    /// Publishes a streamed object create-only.
    pub async fn publish(&self, object: NewObject) -> Result<PutOutcome, Error> {
        Ok(self.store.publish(object).await?)
    }

    /// Removes what a killed writer of `key` left in staging; returns how many (blocking).
    pub fn remove_abandoned_staging(&self, key: &ObjectKey) -> Result<usize, Error> {
        Ok(self.store.remove_abandoned_staging(key)?)
    }

    /// Removes staging objects older than `cutoff` (counts only, when `dry_run`; blocking).
    pub fn remove_stale_staging(&self, cutoff: SystemTime, dry_run: bool) -> Result<usize, Error> {
        Ok(self.store.remove_stale_staging(cutoff, dry_run)?)
    }

    /// Takes the shared lock that backups hold (many at once), for `command`.
    pub async fn lock_shared(&self, command: &str, wait: Duration) -> Result<SharedLock, Error> {
        Ok(lock::shared(&self.store, command, wait).await?)
    }

    /// Takes the exclusive lock that prune and key rewrapping hold, for `command`.
    pub async fn lock_exclusive(&self, command: &str, wait: Duration) -> Result<ExclusiveLock, Error> {
        Ok(lock::exclusive(&self.store, command, wait).await?)
    }

    /// The newest key set's version and contents, if any was written.
    pub async fn latest_key_set(&self) -> Result<Option<(u32, super::KeySet)>, Error> {
        super::latest_key_set(&self.store).await
    }
}
