//! Tablespaces in a restore: each link `pg_tblspc/<oid>` of the snapshot points at the location
//! the tablespace had at backup time, or at the directory a `--tablespace-map` gives it (by OID
//! or by name, as pgBackRest's option), or at `<DIR>/<oid>` with `--tablespace-map-all DIR`
//! (the OID, not the name: it is always a plain file name, and old snapshots have no names).
//!
//! The manifest keeps a tablespace's contents under its link's path
//! (`pg_tblspc/<oid>/PG_<major>_<catversion>/…`, see `snapshot::walk`). Like the data directory,
//! they are written into a staging directory beside their target, and while the restore runs the
//! link points at that staging directory, so the writer follows it; only when every file is
//! written, verified and fsync'd is the link repointed at the target and the staging directory
//! renamed into place. A failed restore removes every staging directory: nothing is left behind.
//!
//! Every target is checked before anything is written: absolute, distinct, outside the data
//! directory, and absent or empty (a target in use — the original location while the source
//! runs — is refused). `tablespace_map` is rewritten with the final paths, so PostgreSQL (which
//! replaces each link by one to the path the map gives) ends with the same links radd made.
//!
//! Snapshots taken before radd kept the links hold `pg_tblspc/<oid>` as a directory; a directory
//! whose OID the backup's `tablespace_map` lists with an absolute path is restored the same way
//! (its location comes from the map). Other directories there are in-place tablespaces and stay
//! directories.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::writer;
use crate::error::ErrorKind;
use crate::pg::{Tablespace, format_tablespace_map, parse_tablespace_map};
use crate::snapshot::{EntryKind, Manifest, decode_os};

/// Errors planning where tablespaces go.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A map names a tablespace the snapshot does not have.
    #[error("--tablespace-map {key}: the snapshot has no tablespace with that OID or name; it has {known}")]
    Unknown {
        /// The OID or name given.
        key: String,
        /// The snapshot's tablespaces, `oid (name)`, or "none".
        known: String,
    },
    /// A tablespace would be restored somewhere it cannot go.
    #[error("tablespace {tablespace}: {reason}")]
    BadTarget {
        /// `oid (name)`.
        tablespace: String,
        /// What is wrong with the target.
        reason: String,
    },
    /// A tablespace's target already holds something.
    #[error("tablespace {tablespace}: target {path} exists and is not empty (is the source still using it?); map it to an empty or new directory with --tablespace-map {oid}=DIR or --tablespace-map-all DIR", path = .path.display())]
    TargetNotEmpty {
        /// `oid (name)`.
        tablespace: String,
        /// Its OID.
        oid: u32,
        /// The target.
        path: PathBuf,
    },
}

impl Error {
    /// Category for exit codes: a map that names nothing or a bad target is a usage error; a
    /// target in use is a conflict, as for the data directory.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unknown { .. } | Error::BadTarget { .. } => ErrorKind::Config,
            Error::TargetNotEmpty { .. } => ErrorKind::Conflict,
        }
    }
}

/// Where a restore puts tablespaces: where they were at backup time, unless remapped here.
#[derive(Debug, Clone, Default)]
pub struct TablespaceMapping {
    /// `(OID or name, directory)`: an all-digit key is the OID when the snapshot has a
    /// tablespace with that OID, otherwise a name.
    pub map: Vec<(String, PathBuf)>,
    /// Every tablespace not in `map` goes to `<all>/<oid>`.
    pub all: Option<PathBuf>,
}

impl TablespaceMapping {
    /// Parses one `OID=DIR` or `NAME=DIR` argument of `--tablespace-map`.
    pub fn parse_entry(arg: &str) -> Result<(String, PathBuf), String> {
        match arg.split_once('=') {
            Some((key, dir)) if !key.is_empty() && !dir.is_empty() => Ok((key.to_owned(), PathBuf::from(dir))),
            _ => Err(format!("expected OID=DIR or NAME=DIR, got {arg:?}")),
        }
    }

    /// Whether any tablespace is remapped.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.all.is_none()
    }
}

/// One tablespace of a restored snapshot and where it went (part of the restore report).
#[derive(Debug, Clone, Serialize)]
pub struct TablespaceRestore {
    /// OID (the link `pg_tblspc/<oid>`).
    pub oid: u32,
    /// Name, when the snapshot recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Location at backup time.
    pub location: PathBuf,
    /// Directory the contents were restored into; the link points here.
    pub target: PathBuf,
    /// Index of the link's entry in the manifest.
    #[serde(skip)]
    entry: usize,
    /// Owner of the link (and of the directory radd creates for the tablespace).
    #[serde(skip)]
    owner: (u32, u32),
    /// The staging directory while the restore runs.
    #[serde(skip)]
    staging: Option<PathBuf>,
    /// Whether the staging directory has been renamed to the target.
    #[serde(skip)]
    moved: bool,
}

impl TablespaceRestore {
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{} ({name})", self.oid),
            None => self.oid.to_string(),
        }
    }
}

/// The tablespaces of a manifest: (entry index, OID, location at backup time).
fn tablespaces_of(manifest: &Manifest) -> Vec<(usize, u32, PathBuf)> {
    let map = manifest.tablespace_map.as_deref().map(parse_tablespace_map).unwrap_or_default();
    manifest
        .entries
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| {
            let oid: u32 = entry.path.strip_prefix("pg_tblspc/")?.parse().ok()?;
            let location = match &entry.kind {
                // A relative link (not made by CREATE TABLESPACE) must be mapped: `plan` refuses
                // to restore it as it is.
                EntryKind::Symlink { target, raw_target } => PathBuf::from(decode_os(target, raw_target.as_ref())),
                EntryKind::Dir => {
                    Some(PathBuf::from(&map.iter().find(|(o, _)| *o == oid)?.1)).filter(|l| l.is_absolute())?
                }
                _ => return None,
            };
            Some((index, oid, location))
        })
        .collect()
}

/// Decides where each tablespace of the snapshot goes and checks every target, before anything
/// is written. `recorded` names them (from the snapshot record); `data_target` is the restore's
/// data directory.
pub(super) fn plan(
    manifest: &Manifest,
    recorded: &[Tablespace],
    mapping: &TablespaceMapping,
    data_target: &Path,
) -> Result<Vec<TablespaceRestore>, Error> {
    let owner = manifest.entries.iter().find(|e| e.path.is_empty()).map_or((0, 0), |e| (e.uid, e.gid));
    let mut plans: Vec<TablespaceRestore> = tablespaces_of(manifest)
        .into_iter()
        .map(|(entry, oid, location)| TablespaceRestore {
            oid,
            name: recorded.iter().find(|t| t.oid == oid).map(|t| t.name.clone()),
            target: location.clone(),
            location,
            entry,
            owner,
            staging: None,
            moved: false,
        })
        .collect();
    let mut mapped = vec![false; plans.len()];
    for (key, dir) in &mapping.map {
        let by_oid = key.parse::<u32>().ok().and_then(|oid| plans.iter().position(|p| p.oid == oid));
        let found = by_oid.or_else(|| plans.iter().position(|p| p.name.as_deref() == Some(key.as_str())));
        let Some(i) = found else {
            let known: Vec<String> = plans.iter().map(TablespaceRestore::label).collect();
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(Error::Unknown { key: key.clone(), known });
        };
        if mapped[i] {
            return Err(Error::BadTarget { tablespace: plans[i].label(), reason: "mapped more than once".into() });
        }
        mapped[i] = true;
        plans[i].target.clone_from(dir);
    }
    if let Some(all) = &mapping.all {
        for (plan, _) in plans.iter_mut().zip(&mapped).filter(|(_, m)| !**m) {
            plan.target = all.join(plan.oid.to_string());
        }
    }
    for (i, plan) in plans.iter().enumerate() {
        let bad = |reason: String| Error::BadTarget { tablespace: plan.label(), reason };
        if !plan.target.is_absolute() {
            return Err(bad(format!("target {} is not an absolute path", plan.target.display())));
        }
        if plan.target.starts_with(data_target) || data_target.starts_with(&plan.target) {
            return Err(bad(format!(
                "target {} overlaps the data directory {}",
                plan.target.display(),
                data_target.display()
            )));
        }
        if let Some(other) =
            plans[..i].iter().find(|o| o.target.starts_with(&plan.target) || plan.target.starts_with(&o.target))
        {
            return Err(bad(format!("target {} overlaps that of tablespace {}", plan.target.display(), other.label())));
        }
        check_empty(plan)?;
    }
    Ok(plans)
}

fn check_empty(plan: &TablespaceRestore) -> Result<(), Error> {
    let not_empty = || Error::TargetNotEmpty { tablespace: plan.label(), oid: plan.oid, path: plan.target.clone() };
    match std::fs::read_dir(&plan.target) {
        Ok(mut entries) => entries.next().map_or(Ok(()), |_| Err(not_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => Err(not_empty()),
    }
}

/// Creates each tablespace's staging directory (owned like the data directory, mode 0700) and
/// points its link in `manifest` there, so writing the manifest fills it; `tablespace_map` gets
/// the final paths.
pub(super) fn stage(plans: &mut [TablespaceRestore], manifest: &mut Manifest) -> Result<(), super::Error> {
    manifest.tablespace_map = Some(format_tablespace_map(
        &plans.iter().map(|p| (p.oid, p.target.to_string_lossy().into_owned())).collect::<Vec<_>>(),
    ));
    for plan in plans.iter_mut() {
        let staging = super::staging_dir(&plan.target)?;
        plan.staging = Some(staging.clone());
        hand_to(&staging, plan.owner)?;
        let (target, raw_target) = crate::snapshot::encode_os(staging.as_os_str());
        manifest.entries[plan.entry].kind = EntryKind::Symlink { target, raw_target };
    }
    Ok(())
}

/// Repoints every link in the staged data directory at its tablespace's final target (a new
/// link renamed over the old one).
pub(super) fn point_links(data_staging: &Path, plans: &[TablespaceRestore]) -> Result<(), super::Error> {
    for plan in plans {
        let link = data_staging.join("pg_tblspc").join(plan.oid.to_string());
        let fresh = data_staging.join("pg_tblspc").join(format!(".{}.radd-link", plan.oid));
        std::os::unix::fs::symlink(&plan.target, &fresh).map_err(super::io_err("create symlink", &fresh))?;
        hand_to(&fresh, plan.owner)?;
        std::fs::rename(&fresh, &link).map_err(super::io_err("replace symlink", &link))?;
    }
    Ok(())
}

/// fsyncs every staged tablespace.
pub(super) fn sync(plans: &[TablespaceRestore]) -> Result<(), super::Error> {
    plans.iter().filter_map(|p| p.staging.as_deref()).try_for_each(writer::sync_tree)
}

/// Renames every staged tablespace to its target (replacing an empty directory).
pub(super) fn move_into_place(plans: &mut [TablespaceRestore]) -> Result<(), super::Error> {
    for plan in plans.iter_mut() {
        let Some(staging) = plan.staging.clone() else { continue };
        if plan.target.exists() {
            std::fs::remove_dir(&plan.target).map_err(super::io_err("replace empty directory", &plan.target))?;
        }
        std::fs::rename(&staging, &plan.target)
            .map_err(super::io_err("move restored tablespace into", &plan.target))?;
        plan.moved = true;
        if let Some(parent) = plan.target.parent() {
            writer::sync_dir(parent)?;
        }
    }
    Ok(())
}

/// After a failure: removes every staging directory, and every target already moved into place.
pub(super) fn discard(plans: &[TablespaceRestore]) {
    for plan in plans {
        let path = if plan.moved { Some(&plan.target) } else { plan.staging.as_ref() };
        if let Some(path) = path
            && let Err(error) = std::fs::remove_dir_all(path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %error, "cannot remove a tablespace of the failed restore");
        }
    }
}

/// Gives a path radd created to the data directory's owner (when running as root).
fn hand_to(path: &Path, (uid, gid): (u32, u32)) -> Result<(), super::Error> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(super::io_err("set owner of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Digest;
    use crate::snapshot::Entry;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry { path: path.into(), raw_path: None, kind, mode: 0o700, uid: 1, gid: 2, mtime: 0, mtime_nsec: 0, size: 0 }
    }

    fn manifest(dir: &Path) -> Manifest {
        let link = |target: &str| EntryKind::Symlink { target: target.into(), raw_target: None };
        Manifest {
            snapshot_id: "s".into(),
            entries: vec![
                entry("", EntryKind::Dir),
                entry("pg_tblspc", EntryKind::Dir),
                entry("pg_tblspc/16384", link(&dir.join("ts1").display().to_string())),
                entry("pg_tblspc/16384/PG_15_202209061", EntryKind::Dir),
                entry("pg_tblspc/16390", EntryKind::Dir),
                entry("pg_tblspc/16391", EntryKind::Dir),
                entry(
                    "base/1/1259",
                    EntryKind::File {
                        sum: crate::snapshot::FileSum::Sha256(Digest::sha256(b"")),
                        chunks: Vec::new(),
                        list: None,
                    },
                ),
            ],
            entry_chunks: Vec::new(),
            backup_label: None,
            // 16390: an old snapshot's followed link; 16391: an in-place tablespace.
            tablespace_map: Some(format!(
                "16384 {}\n16390 {}\n16391 pg_tblspc/16391\n",
                dir.join("ts1").display(),
                dir.join("old").display()
            )),
            unreadable: Vec::new(),
            server_files: None,
        }
    }

    #[test]
    fn plans_map_by_oid_name_and_all_and_refuse_bad_targets() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = manifest(dir.path());
        let recorded = vec![Tablespace { oid: 16384, name: "ts1".into(), location: String::new() }];
        let data = dir.path().join("data");
        let keep = plan(&manifest, &recorded, &TablespaceMapping::default(), &data).unwrap();
        let targets: Vec<(u32, PathBuf)> = keep.iter().map(|p| (p.oid, p.target.clone())).collect();
        assert_eq!(
            targets,
            vec![(16384, dir.path().join("ts1")), (16390, dir.path().join("old"))],
            "in-place 16391 is no link"
        );
        assert_eq!(keep[0].name.as_deref(), Some("ts1"));
        assert_eq!(keep[0].owner, (1, 2));

        let by_name =
            TablespaceMapping { map: vec![("ts1".into(), dir.path().join("new"))], all: Some(dir.path().join("all")) };
        let mapped = plan(&manifest, &recorded, &by_name, &data).unwrap();
        assert_eq!(mapped[0].target, dir.path().join("new"));
        assert_eq!(mapped[1].target, dir.path().join("all/16390"));

        let unknown = TablespaceMapping { map: vec![("nope".into(), dir.path().join("x"))], all: None };
        let err = plan(&manifest, &recorded, &unknown, &data).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("16384 (ts1), 16390"), "{err}");

        let relative = TablespaceMapping { map: vec![("16384".into(), "rel".into())], all: None };
        assert_eq!(plan(&manifest, &recorded, &relative, &data).unwrap_err().kind(), ErrorKind::Config);
        let inside = TablespaceMapping { map: vec![("16384".into(), data.join("ts"))], all: None };
        assert_eq!(plan(&manifest, &recorded, &inside, &data).unwrap_err().kind(), ErrorKind::Config);
        let same = TablespaceMapping { map: vec![("16384".into(), dir.path().join("old"))], all: None };
        assert_eq!(plan(&manifest, &recorded, &same, &data).unwrap_err().kind(), ErrorKind::Config);

        std::fs::create_dir_all(dir.path().join("ts1/PG_15_202209061")).unwrap();
        let err = plan(&manifest, &recorded, &TablespaceMapping::default(), &data).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let empty = TablespaceMapping { map: vec![("16384".into(), dir.path().join("empty"))], all: None };
        assert!(plan(&manifest, &recorded, &empty, &data).is_ok(), "an empty target is fine");
    }

    #[test]
    fn map_entries_parse() {
        assert_eq!(TablespaceMapping::parse_entry("ts1=/a=b").unwrap(), ("ts1".to_owned(), PathBuf::from("/a=b")));
        assert!(TablespaceMapping::parse_entry("ts1").is_err());
        assert!(TablespaceMapping::parse_entry("=/a").is_err());
    }
}
