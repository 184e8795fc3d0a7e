//! Named restore points (`radd restore-point NAME`): the "before the risky migration" habit.
//! The point is a WAL record on the source (`pg_create_restore_point`, see
//! [`crate::pg::restore_point`]) plus an authenticated record in the repository under
//! `restore-points/<name>` (name, LSN, timeline, server time, who), so `restore --name` can pick
//! the snapshot that reaches it, check that its WAL is archived, and refuse a name nobody
//! created — PostgreSQL itself would replay to the end and fail only after the whole restore.
//!
//! Names are create-only: PostgreSQL stops at the *first* point of a name it replays, so a
//! second point with the same name would silently restore to the first.

use serde::{Deserialize, Serialize};

use super::Error;
use crate::pg::{self, Lsn, Timeline};
use crate::repo::{ObjectKey, PutOutcome};
use crate::repository::{self, Repository};

/// PostgreSQL's limit on a restore point name (MAXFNAMELEN - 1).
pub const MAX_NAME_BYTES: usize = 63;

/// A restore point as recorded in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// The name given to `pg_create_restore_point` (and to `restore --name`).
    pub name: String,
    /// Position of its WAL record.
    pub lsn: Lsn,
    /// The source's timeline when it was created.
    pub timeline: u32,
    /// The server's `now()` then (RFC 3339, UTC).
    pub time: String,
    /// Who created it (OS user and host).
    pub by: String,
}

/// Stored under `restore-points/<name, key-safe>` (see [`key`]).
impl repository::StoredRecord for RestorePoint {
    type Id = str;
    fn key_of(name: &str) -> ObjectKey {
        key(name)
    }
    fn key(&self) -> ObjectKey {
        key(&self.name)
    }
}

/// Refuses a name PostgreSQL would reject or that could not be told apart in a listing: empty,
/// longer than 63 bytes, or holding control characters.
///
/// # Errors
/// [`Error::BadPointName`] saying why.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!("it is {} bytes long; PostgreSQL allows at most {MAX_NAME_BYTES}", name.len()))
    } else if name.chars().any(char::is_control) {
        Some("it contains control characters".to_owned())
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::BadPointName { name: name.to_owned(), why }),
        None => Ok(()),
    }
}

/// The object key of a name: letters, digits and `-` as they are, every other byte as `_XX`
/// (hex), so `/`, `.` and spaces cannot make a path of it and distinct names get distinct keys.
fn key(name: &str) -> ObjectKey {
    let mut spelled = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            spelled.push(char::from(byte));
        } else {
            spelled.push_str(&format!("_{byte:02X}"));
        }
    }
    ObjectKey::RestorePoint(spelled)
}

/// The recorded point called `name`, if any (a record that does not authenticate, or names
/// another point, counts as none and is logged).
///
/// # Errors
/// Storage failures.
pub async fn find(repo: &Repository, name: &str) -> Result<Option<RestorePoint>, Error> {
    let key = key(name);
    if !repo.exists(&key).await? {
        return Ok(None);
    }
    Ok(read(repo, &key).await.filter(|p| p.name == name))
}

async fn read(repo: &Repository, key: &ObjectKey) -> Option<RestorePoint> {
    match repo.get_record::<RestorePoint>(key).await {
        Ok(point) if self::key(&point.name) == *key => Some(point),
        Ok(_) => {
            tracing::warn!(key = %key, "ignoring a restore-point record stored under another name's key");
            None
        }
        Err(error) => {
            tracing::warn!(key = %key, error = %error, "ignoring a restore-point record that cannot be read or does not authenticate");
            None
        }
    }
}

/// Every recorded restore point, oldest first (by LSN).
///
/// # Errors
/// Storage failures listing them.
pub async fn list(repo: &Repository) -> Result<Vec<RestorePoint>, Error> {
    let mut points = Vec::new();
    for item in repo.list_restore_points().await? {
        if let Some(point) = read(repo, &ObjectKey::RestorePoint(item.id)).await {
            points.push(point);
        }
    }
    points.sort_by_key(|p| (p.timeline, p.lsn));
    Ok(points)
}

/// The point `name` for `restore --name`.
///
/// # Errors
/// [`Error::UnknownPoint`] listing the known names.
pub async fn resolve(repo: &Repository, name: &str) -> Result<RestorePoint, Error> {
    if let Some(point) = find(repo, name).await? {
        return Ok(point);
    }
    let known: Vec<String> = list(repo).await?.into_iter().map(|p| p.name).collect();
    Err(Error::UnknownPoint {
        name: name.to_owned(),
        known: if known.is_empty() {
            "none (create one with `radd restore-point NAME`)".to_owned()
        } else {
            known.join(", ")
        },
    })
}

/// Creates restore point `name` on `client`'s server (a primary) and records it; the WAL is
/// switched so the segment holding the point is archived promptly (see
/// [`pg::restore_point::create`]). A name already recorded is refused before the server is
/// asked, so nothing is written on either side.
///
/// # Errors
/// [`Error::BadPointName`], [`Error::PointExists`], [`Error::CreatePoint`] (server),
/// [`Error::RecordPoint`] (created on the server, not recorded).
pub async fn create(
    repo: &Repository,
    client: &tokio_postgres::Client,
    name: &str,
    by: String,
) -> Result<RestorePoint, Error> {
    validate_name(name)?;
    if let Some(existing) = find(repo, name).await? {
        return Err(exists(existing));
    }
    let created = pg::restore_point::create(client, name)
        .await
        .map_err(|source| Error::CreatePoint { name: name.to_owned(), source: Box::new(source) })?;
    let point = RestorePoint {
        name: name.to_owned(),
        lsn: created.lsn,
        timeline: created.timeline.0,
        time: created.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        by,
    };
    let recorded = repo.write(&point).await;
    let unrecorded = |source| Error::RecordPoint { name: name.to_owned(), lsn: point.lsn, source: Box::new(source) };
    match recorded.map_err(unrecorded)? {
        PutOutcome::Created => {
            tracing::info!(name, lsn = %point.lsn, timeline = point.timeline, switched_to = %created.switched_at, "restore point created and recorded");
            Ok(point)
        }
        PutOutcome::AlreadyExists => {
            // Another run recorded the name between our check and our write: theirs stands.
            let theirs = find(repo, name).await?.unwrap_or_else(|| point.clone());
            Err(exists(theirs))
        }
    }
}

fn exists(existing: RestorePoint) -> Error {
    Error::PointExists(Box::new(existing))
}

impl RestorePoint {
    /// The timeline as a typed value.
    #[must_use]
    pub fn timeline(&self) -> Timeline {
        Timeline(self.timeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_postgresql_does() {
        assert!(validate_name("before-migration").is_ok());
        assert!(validate_name("vor der Migration 2.0 ✓").is_ok());
        assert!(validate_name(&"x".repeat(63)).is_ok());
        for (bad, why) in
            [("", "empty"), (&"x".repeat(64) as &str, "64 bytes"), ("a\nb", "control"), ("tab\there", "control")]
        {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("restore point name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn keys_are_single_path_segments_and_distinct() {
        assert_eq!(key("before-migration").to_string(), "restore-points/before-migration");
        assert_eq!(key("a/b").to_string(), "restore-points/a_2Fb");
        assert_eq!(key("..").to_string(), "restore-points/_2E_2E");
        assert_ne!(key("a_2Fb"), key("a/b"));
        assert_eq!(key("ü").to_string(), "restore-points/_C3_BC");
    }
}
