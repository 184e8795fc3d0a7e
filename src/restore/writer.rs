//! Writing manifest entries into a directory: chunks fetched pack by pack (a small cache of
//! decrypted packs, since consecutive chunks usually share one), each file hashed while written
//! and compared with its manifest SHA-256, metadata applied, everything fsync'd.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use super::{Error, io_err};
use crate::codec::ObjectKind;
use crate::crypto::Sha256Stream;
use crate::repo::ObjectKey;
use crate::repository::Repository;
use crate::snapshot::{BlobIndex, EntryKind, Manifest};

/// Decrypted packs kept in memory; bounds restore memory to a few packs.
const PACK_CACHE: usize = 3;

struct PackCache {
    packs: VecDeque<(u32, Arc<Vec<u8>>)>,
}

impl PackCache {
    async fn get(&mut self, repo: &Repository, index: &BlobIndex, pack: u32) -> Result<Arc<Vec<u8>>, Error> {
        if let Some((_, data)) = self.packs.iter().find(|(p, _)| *p == pack) {
            return Ok(Arc::clone(data));
        }
        let key = ObjectKey::Pack(index.packs[pack as usize].clone());
        let data = Arc::new(repo.get_open(ObjectKind::Pack, &key).await?);
        if self.packs.len() == PACK_CACHE {
            self.packs.pop_front();
        }
        self.packs.push_back((pack, Arc::clone(&data)));
        Ok(data)
    }
}

/// Writes every entry under `root`; returns (files, bytes).
pub async fn write_entries(
    repo: &Repository,
    index: &BlobIndex,
    manifest: &Manifest,
    root: &Path,
) -> Result<(u64, u64), Error> {
    let as_root = nix::unistd::geteuid().is_root();
    let mut cache = PackCache { packs: VecDeque::new() };
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in &manifest.entries {
        let path = root.join(&entry.path);
        match &entry.kind {
            EntryKind::Dir if entry.path.is_empty() => {}
            EntryKind::Dir => {
                std::fs::create_dir(&path).map_err(io_err("create directory", &path))?;
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path).map_err(io_err("create symlink", &path))?;
            }
            EntryKind::File { sha256, chunks } => {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err("create", &path))?;
                let mut sha = Sha256Stream::default();
                for chunk in chunks {
                    let location = index.get(chunk).ok_or_else(|| Error::MissingChunk {
                        chunk: chunk.to_string(),
                        path: entry.path.clone(),
                    })?;
                    let pack = cache.get(repo, index, location.pack).await?;
                    let start = location.offset as usize;
                    let data = pack
                        .get(start..start + location.length as usize)
                        .ok_or_else(|| Error::MissingChunk { chunk: chunk.to_string(), path: entry.path.clone() })?;
                    sha.update(data);
                    file.write_all(data).map_err(io_err("write", &path))?;
                }
                let actual = sha.finish();
                if actual != *sha256 {
                    return Err(Error::Checksum {
                        path: entry.path.clone(),
                        expected: sha256.to_string(),
                        actual: actual.to_string(),
                    });
                }
                let mtime = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(entry.mtime).unwrap_or(0));
                file.set_modified(mtime).map_err(io_err("set mtime of", &path))?;
                file.sync_all().map_err(io_err("fsync", &path))?;
                files += 1;
                bytes += entry.size;
            }
        }
        if !matches!(entry.kind, EntryKind::Symlink { .. }) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
                .map_err(io_err("set mode of", &path))?;
        }
        if as_root {
            std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid))
                .map_err(io_err("set owner of", &path))?;
        }
    }
    Ok((files, bytes))
}

/// fsyncs one directory, making the names in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// fsyncs every directory under `root` (files were synced as they were written).
pub fn sync_tree(root: &Path) -> Result<(), Error> {
    sync_dir(root)?;
    for entry in std::fs::read_dir(root).map_err(io_err("read", root))? {
        let entry = entry.map_err(io_err("read", root))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            sync_tree(&entry.path())?;
        }
    }
    Ok(())
}
