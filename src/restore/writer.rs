//! Writing manifest entries into a directory, in three passes:
//!
//! 1. the tree, in manifest order: directories, symlinks, hard links, and every file created at
//!    its full size (`set_len`: sparse, so blobs never written stay holes);
//! 2. the content, pack by pack (`pack_plan`, `content`): each pack is fetched and decrypted once
//!    and its blobs are written wherever the snapshot has them, so a restore reads what the
//!    snapshot references, not what its history made it alternate between; each file is read
//!    back and checked against its manifest SHA-256 once its last chunk is written;
//! 3. owner, mode and mtime, in manifest order once every byte is in place (directories last,
//!    deepest first: writing into a directory changes its mtime; owner before mode: `chown`
//!    clears the set-id bits).
//!
//! A chunk no index knows fails before anything is written; a mismatch fails the restore before
//! anything leaves the staging directory. Files and directories are fsync'd once, at the end, in
//! parallel ([`sync_tree`]), after the hashers have already started their writeback.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::content::{self, Target};
use super::pack_plan::{PlanBuilder, Spill};
use super::{Error, io_err};
use crate::progress::Progress;
use crate::repo::BlobId;
use crate::repository::Repository;
use crate::snapshot::FileSum;
use crate::snapshot::{BlobIndex, ChunkList, ChunkResolver, EntryKind, Manifest};

/// What writing the entries did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    /// Files written and verified.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Packs fetched and decrypted for the files' content.
    pub packs_read: u64,
    /// Distinct packs holding the files' content.
    pub packs_distinct: u64,
}

/// The content an entry is restored with: its own, or, for a hard link whose first name is
/// not restored, the first name's. Its chunk ids are inline, or in the list (of a lean
/// manifest, see [`snapshot::load_manifest_lean`]).
fn content<'m>(manifest: &'m Manifest, wanted: &[bool], index: usize) -> Option<Content<'m>> {
    let of = |kind: &'m EntryKind| match kind {
        EntryKind::File { sum, chunks, list } => Some(Content { sum, chunks, list: list.as_ref() }),
        _ => None,
    };
    match &manifest.entries[index].kind {
        EntryKind::Hardlink { entry } if !wanted.get(*entry).copied().unwrap_or(false) => {
            of(&manifest.entries.get(*entry)?.kind)
        }
        kind => of(kind),
    }
}

/// What [`content`] finds.
struct Content<'m> {
    sum: &'m FileSum,
    chunks: &'m [BlobId],
    list: Option<&'m ChunkList>,
}

/// Whether an entry is a further name of a file restored under its first name.
fn linked(manifest: &Manifest, wanted: &[bool], index: usize) -> bool {
    matches!(manifest.entries[index].kind, EntryKind::Hardlink { entry } if wanted.get(entry).copied().unwrap_or(false))
}

/// Writes every entry under `root`.
/// `progress` gets the files' total size, then each pack's bytes as they are written;
/// `manifest_key` names the manifest in errors about its chunk lists.
pub async fn write_entries(
    repo: &Repository,
    index: &BlobIndex,
    manifest: &Manifest,
    manifest_key: &str,
    root: &Path,
    include: Option<&globset::GlobSet>,
    progress: &Progress,
) -> Result<Written, Error> {
    let wanted = wanted(manifest, include);
    let with_content = || {
        (0..manifest.entries.len()).filter(|&i| wanted[i]).filter_map(|i| content(manifest, &wanted, i).map(|c| (i, c)))
    };
    // Planned first: a chunk missing from the index fails the restore before anything is written.
    // Spilled placements go beside the staging directory, not into what becomes the target.
    // Ids stored out of line are read one file at a time, only to be planned.
    let spill = Spill::in_dir(root.parent().unwrap_or(root));
    let mut builder = PlanBuilder::new(index, manifest.entries.len(), &spill);
    let mut lists = ChunkResolver::new(repo, index, manifest_key);
    for (i, content) in with_content() {
        let path = manifest.entries[i].path.as_str();
        builder.add(i, path, &lists.file_chunks(content.chunks, content.list, path).await?)?;
    }
    drop(lists);
    let plan = builder.finish()?;
    let paths = create_tree(manifest, root, &wanted)?;
    let mut targets: Vec<Option<Target>> = vec![None; manifest.entries.len()];
    let mut written = Written { packs_distinct: plan.packs.len() as u64, ..Written::default() };
    for (i, Content { sum, .. }) in with_content() {
        let path = paths[i].as_deref().ok_or_else(|| Error::Io {
            what: "restore: no file was created for",
            path: manifest.entries[i].os_path(),
            source: std::io::Error::other("internal error"),
        })?;
        targets[i] = Some(Target {
            path: path.to_owned(),
            name: manifest.entries[i].path.clone(),
            expected: *sum,
            length: manifest.entries[i].size,
        });
        written.files += 1;
        written.bytes += manifest.entries[i].size;
    }
    progress.set_total(written.bytes);
    written.packs_read = content::write(repo, index, plan, targets, progress).await?;
    set_metadata(manifest, &wanted, &paths)?;
    Ok(written)
}

/// Which entries to write: all, or those matching an `--include` glob, everything below a
/// matching directory, and the directories above them.
fn wanted(manifest: &Manifest, include: Option<&globset::GlobSet>) -> Vec<bool> {
    let Some(globs) = include else {
        return vec![true; manifest.entries.len()];
    };
    let matched: Vec<bool> = manifest
        .entries
        .iter()
        .map(|e| {
            let path = e.os_path();
            path.ancestors().any(|a| !a.as_os_str().is_empty() && globs.is_match(a))
        })
        .collect();
    let needed_dirs: HashSet<PathBuf> = manifest
        .entries
        .iter()
        .zip(&matched)
        .filter(|(_, m)| **m)
        .flat_map(|(e, _)| e.os_path().ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>())
        .collect();
    manifest.entries.iter().zip(matched).map(|(e, m)| m || needed_dirs.contains(&e.os_path())).collect()
}

/// Creates every wanted entry (files empty, at their full size); returns each one's path.
fn create_tree(manifest: &Manifest, root: &Path, wanted: &[bool]) -> Result<Vec<Option<PathBuf>>, Error> {
    let mut paths: Vec<Option<PathBuf>> = vec![None; manifest.entries.len()];
    for (index, entry) in manifest.entries.iter().enumerate() {
        if !wanted[index] {
            continue;
        }
        let path = root.join(entry.os_path());
        match &entry.kind {
            EntryKind::Dir if entry.path.is_empty() => {}
            EntryKind::Dir => std::fs::create_dir(&path).map_err(io_err("create directory", &path))?,
            EntryKind::Symlink { target, raw_target } => {
                let target = crate::snapshot::decode_os(target, raw_target.as_ref());
                std::os::unix::fs::symlink(target, &path).map_err(io_err("create symlink", &path))?;
            }
            EntryKind::Hardlink { entry: first } if linked(manifest, wanted, index) => {
                let original = paths.get(*first).cloned().flatten().ok_or_else(|| Error::Io {
                    what: "create hard link (its first name comes later in the manifest)",
                    path: path.clone(),
                    source: std::io::Error::other("corrupt manifest"),
                })?;
                std::fs::hard_link(&original, &path).map_err(io_err("create hard link", &path))?;
            }
            // A file, or a hard link whose first name is not restored (--include): the content
            // is restored under this name.
            EntryKind::File { .. } | EntryKind::Hardlink { .. } => {
                if content(manifest, wanted, index).is_none() {
                    return Err(Error::Io {
                        what: "restore hard link (its first name is not a file)",
                        path,
                        source: std::io::Error::other("corrupt manifest"),
                    });
                }
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err("create", &path))?;
                file.set_len(entry.size).map_err(io_err("set the size of", &path))?;
            }
        }
        paths[index] = Some(path);
    }
    Ok(paths)
}

/// Sets owner (as root), mode and mtime of every entry written, directories' mtimes last.
fn set_metadata(manifest: &Manifest, wanted: &[bool], paths: &[Option<PathBuf>]) -> Result<(), Error> {
    let as_root = nix::unistd::geteuid().is_root();
    let mut dirs = Vec::new();
    for (index, entry) in manifest.entries.iter().enumerate() {
        let Some(path) = paths[index].as_deref() else { continue };
        if linked(manifest, wanted, index) {
            // The same inode as its first name, which carries the metadata.
            continue;
        }
        if as_root {
            std::os::unix::fs::lchown(path, Some(entry.uid), Some(entry.gid)).map_err(io_err("set owner of", path))?;
        }
        if !matches!(entry.kind, EntryKind::Symlink { .. }) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(entry.mode))
                .map_err(io_err("set mode of", path))?;
        }
        if matches!(entry.kind, EntryKind::Dir) {
            dirs.push((path, entry.mtime, entry.mtime_nsec));
        } else {
            set_mtime(path, entry.mtime, entry.mtime_nsec)?;
        }
    }
    // Directories last, deepest first (entries are in walk order, parents first).
    for (path, secs, nsec) in dirs.iter().rev() {
        set_mtime(path, *secs, *nsec)?;
    }
    Ok(())
}

/// Sets the modification time without following symlinks.
fn set_mtime(path: &Path, secs: i64, nsec: u32) -> Result<(), Error> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let mtime = TimeSpec::new(secs, i64::from(nsec));
    utimensat(nix::fcntl::AT_FDCWD, path, &TimeSpec::UTIME_OMIT, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::Io { what: "set mtime of", path: path.to_owned(), source: e.into() })
}
/// fsyncs one directory, making the names in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// fsyncs every file and directory under `root` (files first), spread over a few threads.
pub fn sync_tree(root: &Path) -> Result<(), Error> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        let dir = dirs[i].clone();
        for entry in std::fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let kind = entry.file_type().map_err(io_err("read", &dir))?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
        i += 1;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let sync_all = |paths: &[PathBuf], what: &'static str| -> Result<(), Error> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = paths
                .chunks(paths.len().div_ceil(threads).max(1))
                .map(|part| {
                    scope.spawn(move || {
                        part.iter().try_for_each(|p| {
                            std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(io_err(what, p))
                        })
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Io {
                        what,
                        path: root.to_owned(),
                        source: std::io::Error::other("fsync thread panicked"),
                    })
                })
            })
        })
    };
    sync_all(&files, "fsync")?;
    sync_all(&dirs, "fsync directory")
}
