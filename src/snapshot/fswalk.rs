//! Walking plain file trees for `radd backup fs`: every name is kept exactly (bytes, not just
//! UTF-8), hard links are recognised by (device, inode), `--exclude` globs and
//! `--one-file-system` are applied, and unreadable directories are reported, not skipped silently.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::Error;
use super::manifest::encode_os;
use super::walk::Found;

/// What to walk.
#[derive(Debug, Clone, Default)]
pub struct TreeOptions {
    /// Absolute root paths.
    pub roots: Vec<PathBuf>,
    /// Glob patterns (matched against the absolute path and the file name) to leave out.
    pub excludes: Vec<String>,
    /// Do not descend into other file systems than each root's.
    pub one_file_system: bool,
}

/// Compiles exclude patterns; an invalid one is an error naming it.
pub fn glob_set(patterns: &[String]) -> Result<GlobSet, Error> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(Glob::new(p).map_err(|e| Error::Internal(format!("invalid glob {p:?}: {e}")))?);
    }
    builder.build().map_err(|e| Error::Internal(format!("invalid globs: {e}")))
}

/// Walks every root, handing each entry to `emit` as it is found (parents first, names sorted
/// by bytes; relative paths are the absolute paths without the leading '/'); returns the
/// directories and files that could not be read. Roots are walked in [walk
/// order](super::parent::walk_order), so the whole walk is in that order; ancestors of each
/// root are included as directories so a restore recreates them. Memory is one directory
/// listing per level plus the inodes of files with several names.
pub fn walk_tree(
    options: &TreeOptions,
    emit: &mut dyn FnMut(Found) -> Result<(), Error>,
) -> Result<Vec<String>, Error> {
    let excludes = glob_set(&options.excludes)?;
    let mut roots = Vec::new();
    for root in &options.roots {
        roots.push(std::path::absolute(root).map_err(|source| Error::Read { path: root.clone(), source })?);
    }
    roots.sort_by(|a, b| super::parent::walk_order(a.as_os_str().as_bytes(), b.as_os_str().as_bytes()));
    let mut walker =
        Walker { excludes: &excludes, one_fs: None, emit, emitted: 0, unreadable: Vec::new(), inodes: HashMap::new() };
    let mut walked: Vec<PathBuf> = Vec::new();
    let mut ancestors_done = HashSet::new();
    for root in roots {
        // A root inside one walked before is already in the snapshot.
        let inside_walked = |dir: &Path| walked.iter().any(|w| dir.starts_with(w));
        if inside_walked(&root) {
            continue;
        }
        let mut ancestors: Vec<&Path> = root.ancestors().filter(|a| a.parent().is_some()).collect();
        ancestors.reverse();
        for dir in ancestors.iter().take(ancestors.len().saturating_sub(1)) {
            if !inside_walked(dir) && ancestors_done.insert(dir.to_path_buf()) {
                let meta = std::fs::metadata(dir).map_err(|source| Error::Read { path: dir.to_path_buf(), source })?;
                walker.send(found(dir, meta, None, None))?;
            }
        }
        let meta = std::fs::symlink_metadata(&root).map_err(|source| Error::Read { path: root.clone(), source })?;
        walker.one_fs = options.one_file_system.then_some(meta.dev());
        walker.visit(&root, meta)?;
        walked.push(root);
    }
    Ok(walker.unreadable)
}

fn found(
    path: &Path,
    meta: std::fs::Metadata,
    link_target: Option<std::ffi::OsString>,
    hardlink_of: Option<usize>,
) -> Found {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let (rel, raw) = encode_os(rel.as_os_str());
    Found { rel, raw, path: path.to_owned(), meta, link_target, hardlink_of }
}

struct Walker<'a> {
    excludes: &'a GlobSet,
    one_fs: Option<u64>,
    emit: &'a mut dyn FnMut(Found) -> Result<(), Error>,
    /// Entries emitted so far (the walk position of the next one).
    emitted: usize,
    unreadable: Vec<String>,
    /// First walk position of each (device, inode) with several names.
    inodes: HashMap<(u64, u64), usize>,
}

impl Walker<'_> {
    fn excluded(&self, path: &Path) -> bool {
        self.excludes.is_match(path) || path.file_name().is_some_and(|n| self.excludes.is_match(n))
    }

    fn send(&mut self, found: Found) -> Result<(), Error> {
        self.emitted += 1;
        (self.emit)(found)
    }

    fn visit(&mut self, path: &Path, meta: std::fs::Metadata) -> Result<(), Error> {
        if self.excluded(path) {
            return Ok(());
        }
        let kind = meta.file_type();
        if kind.is_symlink() {
            match std::fs::read_link(path) {
                Ok(target) => self.send(found(path, meta, Some(target.into_os_string()), None))?,
                Err(e) => self.unreadable.push(format!("{}: {e}", path.display())),
            }
        } else if kind.is_file() {
            let key = (meta.dev(), meta.ino());
            let first = (meta.nlink() > 1).then(|| self.inodes.get(&key).copied()).flatten();
            if first.is_none() && meta.nlink() > 1 {
                self.inodes.insert(key, self.emitted);
            }
            self.send(found(path, meta, None, first))?;
        } else if kind.is_dir() {
            let crosses = self.one_fs.is_some_and(|dev| dev != meta.dev());
            self.send(found(path, meta, None, None))?;
            if crosses {
                return Ok(());
            }
            let entries = match std::fs::read_dir(path) {
                Ok(e) => e,
                Err(e) => {
                    self.unreadable.push(format!("{}: {e}", path.display()));
                    return Ok(());
                }
            };
            let mut names: Vec<std::ffi::OsString> = entries.filter_map(Result::ok).map(|e| e.file_name()).collect();
            names.sort_by(|a, b| OsStr::as_bytes(a).cmp(OsStr::as_bytes(b)));
            for name in names {
                let child = path.join(&name);
                match std::fs::symlink_metadata(&child) {
                    Ok(meta) => self.visit(&child, meta)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => self.unreadable.push(format!("{}: {e}", child.display())),
                }
            }
        }
        // Sockets, FIFOs and devices are not backed up (they hold no data).
        Ok(())
    }
}
