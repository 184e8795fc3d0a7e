//! Key rotation: the repository's recipient set, versioned, and rewrapping stored objects.
//!
//! `repo init` encrypts to the recipients in the config. `radd key add/remove` writes a new
//! version `keys/set-<n>` (create-only, authenticated by a keyed digest under the id key): the recipients
//! every new object is encrypted to, and the id key encrypted to them — from then on the set,
//! not the config, decides. `radd key rewrap` re-encrypts the age layer of every stored object
//! (packs, manifests, WAL) to the current set *without recompressing* (the zstd payload inside is
//! carried over as is), verifies each rewritten object with the identity, and replaces it
//! atomically; it records its progress so an interrupted rewrap resumes where it stopped. Once a
//! rewrap after `key remove` completes, the removed identity decrypts nothing in the repository.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{self, ObjectKind};
use crate::crypto::Recipients;
use crate::repo::{ObjectKey, PutOutcome};
use crate::repository::{Error, KeySet, Repository};

/// Writes the next key set version with `recipients` (the id key re-encrypted to them).
async fn write_set(repo: &Repository, recipients: &Recipients) -> Result<u32, Error> {
    let version = repo.latest_key_set().await?.map_or(1, |(n, _)| n + 1);
    let mut set = KeySet {
        recipients: recipients.to_strings(),
        id_key: hex::encode(recipients.encrypt(repo.id_key.as_bytes())?),
        mac: String::new(),
    };
    set.seal(&repo.id_key, version);
    let body =
        serde_json::to_vec_pretty(&set).map_err(|e| Error::Internal(format!("serialising key set {version}: {e}")))?;
    if repo.put_new(&ObjectKey::KeySet(version), body.into()).await? == PutOutcome::AlreadyExists {
        return Err(Error::AlreadyInitialised {
            location: format!("{} (key set {version} written concurrently; retry)", repo.location()),
        });
    }
    Ok(version)
}

/// Adds a recipient for new objects; returns the new set version.
pub async fn add(repo: &Repository, recipient: &str) -> Result<u32, Error> {
    let mut all = repo.recipients.to_strings();
    if !all.iter().any(|r| r == recipient) {
        all.push(recipient.to_owned());
    }
    write_set(repo, &Recipients::parse(&all)?).await
}

/// Removes a recipient for new objects (never the last one); returns the new set version.
pub async fn remove(repo: &Repository, recipient: &str) -> Result<u32, Error> {
    let all: Vec<String> = repo.recipients.to_strings().into_iter().filter(|r| r != recipient).collect();
    if all.len() == repo.recipients.to_strings().len() {
        return Err(crate::crypto::Error::InvalidRecipient {
            value: format!("{recipient} is not one of the repository's recipients"),
        }
        .into());
    }
    write_set(repo, &Recipients::parse(&all)?).await
}

/// What a rewrap did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewrapReport {
    /// Key set version the objects are now encrypted to.
    pub key_set: u32,
    /// Objects rewritten (and verified) in this run.
    pub rewrapped: u64,
    /// Objects skipped because an earlier, interrupted run already did them.
    pub resumed_past: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Progress {
    key_set: u32,
    done_through: String,
}

/// Rewraps every pack, manifest and WAL object to the current recipients, in key order,
/// resuming after the last object a previous run of the same key set completed. `progress`
/// counts objects (those done by an earlier run count as done at once).
pub async fn rewrap(
    repo: &Repository,
    state_dir: &Path,
    progress: &crate::progress::Progress,
) -> Result<RewrapReport, Error> {
    let identity = repo.identity()?;
    // Exclusive with prune (and another rewrap): both replace or delete stored objects.
    let lock = repo.lock_exclusive("key rewrap", std::time::Duration::ZERO).await?;
    let result = rewrap_locked(repo, identity, state_dir, progress).await;
    lock.release().await?;
    result
}

async fn rewrap_locked(
    repo: &Repository,
    identity: &crate::crypto::Identity,
    state_dir: &Path,
    bar: &crate::progress::Progress,
) -> Result<RewrapReport, Error> {
    let key_set = repo.latest_key_set().await?.map_or(0, |(n, _)| n);
    let progress_path: PathBuf = state_dir.join(format!("rewrap-{}.json", repo.meta.id));
    let progress: Progress = std::fs::read(&progress_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|p: &Progress| p.key_set == key_set)
        .unwrap_or_default();
    let mut report = RewrapReport { key_set, ..RewrapReport::default() };
    let mut objects = Vec::new();
    for (dir, kind) in [
        (ObjectKey::MANIFEST_DIR, ObjectKind::Manifest),
        (ObjectKey::PACK_DIR, ObjectKind::Pack),
        (ObjectKey::WAL_DIR, ObjectKind::Wal),
    ] {
        for item in repo.list_dir(dir).await? {
            objects.push((item.key, kind));
        }
    }
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    bar.set_total(objects.len() as u64);
    bar.set_message("rewrapping objects");
    for (key, kind) in objects {
        if !progress.done_through.is_empty() && key <= progress.done_through {
            report.resumed_past += 1;
            bar.advance(1);
            continue;
        }
        let object = parse_key(&key);
        let stored = repo.get_stored(&object).await?;
        let rewrapped = codec::rewrap(kind, &stored, &repo.id_key, identity, &repo.recipients, &key)?;
        repo.put_overwrite(&object, rewrapped.into()).await?;
        report.rewrapped += 1;
        bar.advance(1);
        let done = Progress { key_set, done_through: key };
        if let Some(dir) = progress_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let body =
            serde_json::to_vec(&done).map_err(|e| Error::Internal(format!("serialising rewrap progress: {e}")))?;
        std::fs::write(&progress_path, body)
            .map_err(|e| crate::crypto::Error::KeyFileIo { path: progress_path.clone(), source: e })?;
        crate::faults::crash_point("rewrap:object");
    }
    // Older encrypted copies of the id key would still open with a removed identity.
    repo.delete(&ObjectKey::IdKey).await?;
    for old in 1..key_set {
        repo.delete(&ObjectKey::KeySet(old)).await?;
    }
    Ok(report)
}

/// The typed key of a listed object under `packs/`, `manifests/` or `wal/`.
fn parse_key(key: &str) -> ObjectKey {
    let mut parts = key.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("wal"), Some(dir), Some(name)) => ObjectKey::Wal { dir: dir.to_owned(), name: name.to_owned() },
        (Some("manifests"), Some(id), None) => ObjectKey::Manifest(id.to_owned()),
        (_, Some(id), _) => ObjectKey::Pack(id.to_owned()),
        _ => ObjectKey::Pack(key.to_owned()),
    }
}
