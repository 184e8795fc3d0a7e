//! Plaintext records tied to their object kind: a record type names the key its id maps to,
//! so [`Repository::read`] of a snapshot record can only look under `snapshots/` (reading one
//! from an index key does not compile), and [`Repository::write`] takes the key from the
//! record itself. See rustic_core's `RepoFile`.

use serde::{Serialize, de::DeserializeOwned};

use super::{Error, Repository};
use crate::repo::{ObjectKey, PutOutcome};

/// A plaintext, authenticated record stored under one object kind.
pub trait StoredRecord: Serialize + DeserializeOwned {
    /// What names one record of this kind (`()` for a record there is one of).
    type Id: ?Sized;

    /// The key the record named `id` is stored under.
    fn key_of(id: &Self::Id) -> ObjectKey;

    /// The key this record is stored under (from the id it carries).
    fn key(&self) -> ObjectKey;
}

impl Repository {
    /// Reads and authenticates the record of kind `R` named `id` (see
    /// [`Repository::get_record`] for the failure modes).
    pub async fn read<R: StoredRecord>(&self, id: &R::Id) -> Result<R, Error> {
        self.get_record(&R::key_of(id)).await
    }

    /// Writes `record` create-only under its own key (see [`Repository::put_record`]).
    pub async fn write<R: StoredRecord>(&self, record: &R) -> Result<PutOutcome, Error> {
        self.put_record(&record.key(), record).await
    }
}
