//! Walking a PostgreSQL data directory in a stable order, skipping what pg_basebackup skips.
//!
//! Tablespaces: each link `pg_tblspc/<oid>` is kept as a symlink entry (its target is the
//! tablespace's location at backup time), and the tablespace's contents follow it under the same
//! path, as if the link were a directory: `pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/<file>`.
//! Only the directory of the backed-up server's version is read (another version's directory in
//! the same location belongs to another cluster), as pg_basebackup does. The relation files there
//! are cut into page-aligned blocks like those of `base/` ([`is_relation_file`]), and keep the
//! unchanged-file shortcut of incremental backups (their paths are stable). A restore writes the
//! contents into the (possibly remapped) location and points the link at it. In-place
//! tablespaces (real directories in `pg_tblspc/`) are backed up as directories.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Error;

/// Directories whose contents are never backed up (the directory itself is kept, empty).
const EMPTY_DIRS: &[&str] =
    &["pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];

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
    /// Metadata (of the link itself for symlinks).
    pub meta: std::fs::Metadata,
    /// Link target, for symlinks that are kept as links.
    pub link_target: Option<std::ffi::OsString>,
    /// For a further name of an inode seen earlier in the walk: the index of its first name.
    pub hardlink_of: Option<usize>,
}

/// Lists the data directory, parents before children, entries sorted by name; the first
/// entry is the root itself (path ""), so its mode and owner are restored too.
/// `version_dir` is the prefix of the server's directory in a tablespace
/// ([`crate::pg::version_dir_prefix`]).
pub fn walk_data_dir(root: &Path, version_dir: &str) -> Result<Vec<Found>, Error> {
    let meta = std::fs::metadata(root).map_err(read_err(root))?;
    let mut out = vec![Found {
        rel: String::new(),
        raw: None,
        path: root.to_owned(),
        meta,
        link_target: None,
        hardlink_of: None,
    }];
    walk_dir(root, "", version_dir, &mut out)?;
    Ok(out)
}

/// The contents of one tablespace (through its link `pg_tblspc/<oid>` at `link`): the server's
/// version directory and everything below it.
fn walk_tablespace(link: &Path, rel: &str, version_dir: &str, out: &mut Vec<Found>) -> Result<(), Error> {
    for name in sorted_names(link)? {
        let Some(name) = name.to_str().filter(|n| n.starts_with(version_dir)) else {
            tracing::debug!(tablespace = %link.display(), name = ?name, "not this server's tablespace directory; skipped");
            continue;
        };
        let path = link.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err(&path)(e)),
        };
        let child_rel = format!("{rel}/{name}");
        out.push(Found {
            rel: child_rel.clone(),
            raw: None,
            path: path.clone(),
            meta,
            link_target: None,
            hardlink_of: None,
        });
        walk_dir(&path, &child_rel, version_dir, out)?;
    }
    Ok(())
}

/// The names in `dir`, sorted: walks visit entries in a stable order.
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, Error> {
    let mut names: Vec<_> =
        std::fs::read_dir(dir).map_err(read_err(dir))?.filter_map(Result::ok).map(|e| e.file_name()).collect();
    names.sort();
    Ok(names)
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Read { path: path.to_owned(), source }
}

fn walk_dir(dir: &Path, rel: &str, version_dir: &str, out: &mut Vec<Found>) -> Result<(), Error> {
    for name in sorted_names(dir)? {
        let Some(name) = name.to_str().map(str::to_owned) else {
            tracing::warn!(dir = %dir.display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        if SKIP_FILES.contains(&child_rel.as_str()) || name == "pg_internal.init" || name.starts_with("pgsql_tmp") {
            continue;
        }
        let path = dir.join(&name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // dropped meanwhile
            Err(e) => return Err(read_err(&path)(e)),
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(read_err(&path))?;
            let tablespace = rel == "pg_tblspc";
            out.push(Found {
                rel: child_rel.clone(),
                raw: None,
                path: path.clone(),
                meta,
                link_target: Some(target.into_os_string()),
                hardlink_of: None,
            });
            if tablespace {
                walk_tablespace(&path, &child_rel, version_dir, out)?;
            }
            continue;
        }
        let is_dir = meta.is_dir();
        let descend = is_dir && !EMPTY_DIRS.contains(&child_rel.as_str());
        if is_dir || meta.is_file() {
            out.push(Found {
                rel: child_rel.clone(),
                raw: None,
                path: path.clone(),
                meta,
                link_target: None,
                hardlink_of: None,
            });
        }
        if descend {
            walk_dir(&path, &child_rel, version_dir, out)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespaces_are_a_link_plus_this_versions_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (data, location) = (dir.path().join("data"), dir.path().join("ts"));
        for d in ["pg_tblspc", "base/5"] {
            std::fs::create_dir_all(data.join(d)).unwrap();
        }
        for d in ["PG_15_202209061/5", "PG_17_202406281/5"] {
            std::fs::create_dir_all(location.join(d)).unwrap();
        }
        std::fs::write(location.join("PG_15_202209061/5/16390"), [0u8; 8192]).unwrap();
        std::fs::write(location.join("PG_17_202406281/5/16390"), b"another cluster").unwrap();
        std::os::unix::fs::symlink(&location, data.join("pg_tblspc/16384")).unwrap();
        let found = walk_data_dir(&data, "PG_15_").unwrap();
        let rels: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            rels,
            [
                "",
                "base",
                "base/5",
                "pg_tblspc",
                "pg_tblspc/16384",
                "pg_tblspc/16384/PG_15_202209061",
                "pg_tblspc/16384/PG_15_202209061/5",
                "pg_tblspc/16384/PG_15_202209061/5/16390"
            ]
        );
        let link = &found[4];
        assert_eq!(link.link_target.as_deref(), Some(location.as_os_str()), "the link is kept as a link");
        assert!(found[5].meta.is_dir() && found[7].meta.is_file());
        assert!(is_relation_file(&found[7].rel), "tablespace relation files are cut into page blocks");
    }
}
