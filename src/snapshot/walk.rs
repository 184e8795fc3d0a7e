//! Walking a PostgreSQL data directory in a stable order, skipping what pg_basebackup skips.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Error;

/// Directories whose contents are never backed up (the directory itself is kept, empty).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files never backed up (anywhere for pg_internal.init, top level for the rest).
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "backup_manifest",
    "recovery.signal",
    "standby.signal",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
];

/// One item found by a walk (of a data directory or of file trees).
#[derive(Debug)]
pub struct Found {
    /// Relative '/'-separated path (lossy UTF-8 when `raw` is set).
    pub rel: String,
    /// Hex of the relative path's bytes when they are not UTF-8.
    pub raw: Option<String>,
    /// Absolute path to read.
    pub path: PathBuf,
    /// Metadata (symlinks under pg_tblspc are followed).
    pub meta: std::fs::Metadata,
    /// Link target, for symlinks that are kept as links.
    pub link_target: Option<std::ffi::OsString>,
    /// For a further name of an inode seen earlier in the walk: the index of its first name.
    pub hardlink_of: Option<usize>,
}

/// Lists the data directory, parents before children, entries sorted by name; the first
/// entry is the root itself (path ""), so its mode and owner are restored too.
pub fn walk_data_dir(root: &Path) -> Result<Vec<Found>, Error> {
    let meta = std::fs::metadata(root).map_err(read_err(root))?;
    let mut out = vec![Found { rel: String::new(), raw: None, path: root.to_owned(), meta, link_target: None, hardlink_of: None }];
    walk_dir(root, "", &mut out)?;
    Ok(out)
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Read {
        path: path.to_owned(),
        source,
    }
}

fn walk_dir(dir: &Path, rel: &str, out: &mut Vec<Found>) -> Result<(), Error> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err(dir))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            tracing::warn!(dir = %dir.display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        if SKIP_FILES.contains(&child_rel.as_str())
            || name == "pg_internal.init"
            || name.starts_with("pgsql_tmp")
        {
            continue;
        }
        let path = dir.join(&name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // dropped meanwhile
            Err(e) => return Err(read_err(&path)(e)),
        };
        let in_tblspc = rel == "pg_tblspc";
        if meta.file_type().is_symlink() && !in_tblspc {
            let target = std::fs::read_link(&path).map_err(read_err(&path))?;
            out.push(Found { rel: child_rel, raw: None, path, meta, link_target: Some(target.into_os_string()), hardlink_of: None });
            continue;
        }
        let meta = if meta.file_type().is_symlink() {
            std::fs::metadata(&path).map_err(read_err(&path))?
        } else {
            meta
        };
        let is_dir = meta.is_dir();
        let descend = is_dir && !EMPTY_DIRS.contains(&child_rel.as_str());
        if is_dir || meta.is_file() {
            out.push(Found { rel: child_rel.clone(), raw: None, path: path.clone(), meta, link_target: None, hardlink_of: None });
        }
        if descend {
            walk_dir(&path, &child_rel, out)?;
        }
    }
    Ok(())
}

/// Whether a path is a relation file, cut into fixed page-aligned blocks.
#[must_use]
pub fn is_relation_file(rel: &str) -> bool {
    let in_rel_dir = rel.starts_with("base/") || rel.starts_with("global/") || rel.starts_with("pg_tblspc/");
    let name = rel.rsplit('/').next().unwrap_or_default();
    in_rel_dir && name.starts_with(|c: char| c.is_ascii_digit())
}

/// Owner, mode and mtime of a found entry, as stored in the manifest.
#[must_use]
pub fn attrs(meta: &std::fs::Metadata) -> (u32, u32, u32, i64, u32) {
    (meta.mode() & 0o7777, meta.uid(), meta.gid(), meta.mtime(), u32::try_from(meta.mtime_nsec()).unwrap_or(0))
}
