//! Walking plain file trees for `radd backup fs`: every name is kept exactly (bytes, not just
//! UTF-8), hard links are recognised by (device, inode), `--exclude` globs and
//! `--one-file-system` are applied, and unreadable directories are reported, not skipped silently.

use std::collections::HashMap;
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

/// Walks every root; returns the entries (parents first, names sorted by bytes; relative
/// paths are the absolute paths without the leading '/') and the directories that could not be
/// read. Ancestors of each root are included as directories so a restore recreates them.
pub fn walk_tree(options: &TreeOptions) -> Result<(Vec<Found>, Vec<String>), Error> {
    let excludes = glob_set(&options.excludes)?;
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
    let mut seen_dirs = std::collections::HashSet::new();
    for root in &options.roots {
        let root = std::path::absolute(root).map_err(|source| Error::Read { path: root.clone(), source })?;
        let mut ancestors: Vec<&Path> = root.ancestors().filter(|a| a.parent().is_some()).collect();
        ancestors.reverse();
        for dir in ancestors.iter().take(ancestors.len().saturating_sub(1)) {
            if seen_dirs.insert(dir.to_path_buf()) {
                let meta = std::fs::metadata(dir).map_err(|source| Error::Read { path: dir.to_path_buf(), source })?;
                out.push(found(dir, meta, None, None));
            }
        }
        let meta = std::fs::symlink_metadata(&root).map_err(|source| Error::Read { path: root.clone(), source })?;
        let device = meta.dev();
        let walker = Walker { excludes: &excludes, one_fs: options.one_file_system.then_some(device) };
        walker.visit(&root, meta, &mut out, &mut unreadable, &mut inodes, &mut seen_dirs);
    }
    Ok((out, unreadable))
}

fn found(path: &Path, meta: std::fs::Metadata, link_target: Option<std::ffi::OsString>, hardlink_of: Option<usize>) -> Found {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let (rel, raw) = encode_os(rel.as_os_str());
    Found { rel, raw, path: path.to_owned(), meta, link_target, hardlink_of }
}

struct Walker<'a> {
    excludes: &'a GlobSet,
    one_fs: Option<u64>,
}

impl Walker<'_> {
    fn excluded(&self, path: &Path) -> bool {
        self.excludes.is_match(path) || path.file_name().is_some_and(|n| self.excludes.is_match(n))
    }

    fn visit(
        &self,
        path: &Path,
        meta: std::fs::Metadata,
        out: &mut Vec<Found>,
        unreadable: &mut Vec<String>,
        inodes: &mut HashMap<(u64, u64), usize>,
        seen_dirs: &mut std::collections::HashSet<PathBuf>,
    ) {
        if self.excluded(path) {
            return;
        }
        let kind = meta.file_type();
        if kind.is_symlink() {
            match std::fs::read_link(path) {
                Ok(target) => out.push(found(path, meta, Some(target.into_os_string()), None)),
                Err(e) => unreadable.push(format!("{}: {e}", path.display())),
            }
        } else if kind.is_file() {
            let key = (meta.dev(), meta.ino());
            let first = (meta.nlink() > 1).then(|| inodes.get(&key).copied()).flatten();
            if first.is_none() && meta.nlink() > 1 {
                inodes.insert(key, out.len());
            }
            out.push(found(path, meta, None, first));
        } else if kind.is_dir() {
            if !seen_dirs.insert(path.to_path_buf()) {
                return;
            }
            let crosses = self.one_fs.is_some_and(|dev| dev != meta.dev());
            out.push(found(path, meta, None, None));
            if crosses {
                return;
            }
            let entries = match std::fs::read_dir(path) {
                Ok(e) => e,
                Err(e) => {
                    unreadable.push(format!("{}: {e}", path.display()));
                    return;
                }
            };
            let mut names: Vec<std::ffi::OsString> = entries.filter_map(Result::ok).map(|e| e.file_name()).collect();
            names.sort_by(|a, b| OsStr::as_bytes(a).cmp(OsStr::as_bytes(b)));
            for name in names {
                let child = path.join(&name);
                match std::fs::symlink_metadata(&child) {
                    Ok(meta) => self.visit(&child, meta, out, unreadable, inodes, seen_dirs),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => unreadable.push(format!("{}: {e}", child.display())),
                }
            }
        }
        // Sockets, FIFOs and devices are not backed up (they hold no data).
    }
}
