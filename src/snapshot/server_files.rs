//! The server's configuration files that live outside its data directory (Debian/Ubuntu keep
//! postgresql.conf, pg_hba.conf, pg_ident.conf and conf.d/ in /etc/postgresql/<ver>/<name>):
//! a restore needs them as much as the data, so a base backup stores them too.
//!
//! They go into the snapshot as ordinary entries (chunked, deduplicated, checked by SHA-256 on
//! restore) under the reserved directory [`PREFIX`], laid out as they are to be restored:
//! `postgresql.conf`, `pg_hba.conf`, `pg_ident.conf`, files and `include_dir` directories below
//! the config file's directory at their relative place, anything else under
//! `radd-include/<its absolute path>`. The manifest records where each came from
//! ([`ServerFiles`]), so a restore can point the copy at its own files instead of the source's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use super::parent::walk_order;
use super::walk::Found;
use crate::pg::conf::{self, ConfigPaths, normalize};

/// The manifest directory holding configuration files from outside the data directory (no
/// PostgreSQL data directory has an entry of this name; one that did would be left out).
pub const PREFIX: &str = ".radd-config";

/// Where included files from outside the config file's directory go, below [`PREFIX`].
const ELSEWHERE: &str = "radd-include";

/// Where the server's configuration came from, recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFiles {
    /// `config_file` at backup time (absolute).
    pub config_file: String,
    /// `hba_file` at backup time (absolute).
    pub hba_file: String,
    /// `ident_file` at backup time (absolute).
    pub ident_file: String,
    /// Every configuration file the server reads (config file, includes), wherever it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// What is stored under [`PREFIX`]: files and directories from outside the data directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stored: Vec<StoredFile>,
}

/// One file or directory stored under [`PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Its absolute path on the source.
    pub original: String,
    /// Its path below [`PREFIX`] (also its path below the restore's configuration directory).
    pub path: String,
}

/// Whether a walked path is (under) the reserved [`PREFIX`].
#[must_use]
pub fn is_reserved(rel: &str) -> bool {
    rel == PREFIX || rel.starts_with(&format!("{PREFIX}/"))
}

/// The entries to add to the walk (under [`PREFIX`], in walk order, parents first) and the
/// record for the manifest. Files inside `data_dir` are left to the walk. A configuration file
/// that cannot be read fails the backup: a restore would not start without it.
pub fn collect(data_dir: &Path, paths: &ConfigPaths) -> Result<(Vec<Found>, ServerFiles), Error> {
    let data_dir = normalize(data_dir);
    let config_file = normalize(&paths.config_file);
    let config_dir = config_file.parent().map(Path::to_owned).unwrap_or_default();
    let outside = |p: &Path| !p.starts_with(&data_dir);
    let tree = conf::config_tree(&config_file).map_err(|e| match e {
        crate::pg::Error::Io { path, source, .. } => Error::Read { path, source },
        other => Error::Pg(other),
    })?;
    for problem in &tree.missing {
        tracing::warn!(problem = %problem, "the server's configuration names a file that cannot be read; it is not in the backup");
    }
    let relocated = outside(&config_file);
    let place = |p: &Path| -> String {
        let rel = p.strip_prefix(&config_dir).ok().filter(|_| relocated).map(|r| r.to_string_lossy().into_owned());
        match rel {
            Some(rel)
                if !rel.is_empty()
                    && !matches!(rel.as_str(), "postgresql.conf" | "pg_hba.conf" | "pg_ident.conf")
                    && !rel.starts_with(ELSEWHERE) =>
            {
                rel
            }
            _ => format!("{ELSEWHERE}{}", p.display()),
        }
    };
    let mut stored: Vec<(String, PathBuf, bool)> = Vec::new();
    let mut add = |rel: String, original: &Path, is_dir: bool| {
        if outside(original) && !stored.iter().any(|(r, o, _)| *r == rel || o == original) {
            stored.push((rel, original.to_owned(), is_dir));
        }
    };
    add("postgresql.conf".into(), &config_file, false);
    add("pg_hba.conf".into(), &normalize(&paths.hba_file), false);
    add("pg_ident.conf".into(), &normalize(&paths.ident_file), false);
    for file in tree.files.iter().skip(1) {
        add(place(file), file, false);
    }
    for dir in &tree.dirs {
        add(place(dir), dir, true);
    }
    let found = entries(&stored, if relocated { &config_dir } else { &data_dir })?;
    let record = ServerFiles {
        config_file: config_file.display().to_string(),
        hba_file: normalize(&paths.hba_file).display().to_string(),
        ident_file: normalize(&paths.ident_file).display().to_string(),
        files: tree.files.iter().map(|f| f.display().to_string()).collect(),
        stored: stored
            .iter()
            .map(|(rel, original, _)| StoredFile { original: original.display().to_string(), path: rel.clone() })
            .collect(),
    };
    Ok((found, record))
}

/// Walk entries for the stored files and every directory above them, sorted in walk order.
/// A synthetic directory takes the metadata of the source directory it stands for.
fn entries(stored: &[(String, PathBuf, bool)], root_original: &Path) -> Result<Vec<Found>, Error> {
    let stat = |p: &Path| std::fs::metadata(p).map_err(|source| Error::Read { path: p.to_owned(), source });
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    out.push((PREFIX.to_owned(), root_original.to_owned()));
    for (rel, original, _) in stored {
        // Directories above the file, each standing for the source directory at that depth.
        let mut dir_rel = Path::new(rel).parent();
        let mut dir_original = original.parent();
        while let (Some(r), Some(o)) = (dir_rel.filter(|r| !r.as_os_str().is_empty()), dir_original) {
            let key = format!("{PREFIX}/{}", r.display());
            if !out.iter().any(|(k, _)| *k == key) {
                out.push((key, o.to_owned()));
            }
            dir_rel = r.parent();
            dir_original = o.parent();
        }
        let key = format!("{PREFIX}/{rel}");
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, original.clone()));
        }
    }
    out.sort_by(|a, b| walk_order(a.0.as_bytes(), b.0.as_bytes()));
    let mut found = Vec::with_capacity(out.len());
    for (rel, path) in out {
        let meta = stat(&path)?;
        if meta.is_dir() || meta.is_file() {
            found.push(Found { rel, raw: None, path, meta, link_target: None, hardlink_of: None });
        }
    }
    Ok(found)
}

/// Puts the configuration entries into a data-directory walk: drops anything the data
/// directory itself has under the reserved name, and inserts `config` where walk order puts it.
pub fn merge(walk: &mut Vec<Found>, config: Vec<Found>) {
    walk.retain(|f| !is_reserved(&f.rel));
    if config.is_empty() {
        return;
    }
    let at = walk
        .iter()
        .position(|f| {
            !f.rel.is_empty() && !f.rel.contains('/') && walk_order(f.rel.as_bytes(), PREFIX.as_bytes()).is_gt()
        })
        .unwrap_or(walk.len());
    walk.splice(at..at, config);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_layout_is_stored_as_it_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let etc = dir.path().join("etc/15/main");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(etc.join("conf.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("shared")).unwrap();
        std::fs::write(data.join("postgresql.auto.conf"), "").unwrap();
        let conf = format!(
            "data_directory = '{}'\ninclude_dir = 'conf.d'\ninclude_if_exists = '{}/shared/site.conf'\ninclude_if_exists = '{}/postgresql.auto.conf'\n",
            data.display(),
            dir.path().display(),
            data.display()
        );
        std::fs::write(etc.join("postgresql.conf"), conf).unwrap();
        std::fs::write(etc.join("pg_hba.conf"), "local all all trust\n").unwrap();
        std::fs::write(etc.join("pg_ident.conf"), "").unwrap();
        std::fs::write(etc.join("conf.d/tuning.conf"), "work_mem = 8MB\n").unwrap();
        std::fs::write(dir.path().join("shared/site.conf"), "").unwrap();
        let paths = ConfigPaths {
            config_file: etc.join("postgresql.conf"),
            hba_file: etc.join("pg_hba.conf"),
            ident_file: etc.join("pg_ident.conf"),
        };
        let (found, record) = collect(&data, &paths).unwrap();
        let rels: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
        let elsewhere = format!(".radd-config/radd-include{}/shared/site.conf", dir.path().display());
        assert!(
            rels.starts_with(&[".radd-config", ".radd-config/conf.d", ".radd-config/conf.d/tuning.conf"]),
            "{rels:?}"
        );
        for rel in [
            ".radd-config/postgresql.conf",
            ".radd-config/pg_hba.conf",
            ".radd-config/pg_ident.conf",
            elsewhere.as_str(),
        ] {
            assert!(rels.contains(&rel), "{rel} missing from {rels:?}");
        }
        assert!(!rels.iter().any(|r| r.contains("auto.conf")), "files in the data directory are the walk's: {rels:?}");
        assert_eq!(record.files.len(), 4, "{record:?}");
        assert_eq!(record.stored.len(), 6, "{record:?}");
        let mut walk = vec![
            Found {
                rel: String::new(),
                raw: None,
                path: data.clone(),
                meta: std::fs::metadata(&data).unwrap(),
                link_target: None,
                hardlink_of: None,
            },
            Found {
                rel: "PG_VERSION".into(),
                raw: None,
                path: data.clone(),
                meta: std::fs::metadata(&data).unwrap(),
                link_target: None,
                hardlink_of: None,
            },
            Found {
                rel: ".radd-config".into(),
                raw: None,
                path: data.clone(),
                meta: std::fs::metadata(&data).unwrap(),
                link_target: None,
                hardlink_of: None,
            },
        ];
        let count = found.len();
        merge(&mut walk, found);
        assert_eq!(walk.len(), 2 + count);
        assert_eq!(
            (walk[0].rel.as_str(), walk[1].rel.as_str(), walk[count + 1].rel.as_str()),
            ("", ".radd-config", "PG_VERSION")
        );
    }

    #[test]
    fn config_inside_the_data_directory_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.conf"), "work_mem = 8MB\n").unwrap();
        let paths = ConfigPaths {
            config_file: dir.path().join("postgresql.conf"),
            hba_file: dir.path().join("pg_hba.conf"),
            ident_file: dir.path().join("pg_ident.conf"),
        };
        let (found, record) = collect(dir.path(), &paths).unwrap();
        assert!(found.is_empty());
        assert!(record.stored.is_empty());
        assert_eq!(record.files, [dir.path().join("postgresql.conf").display().to_string()]);
    }
}
