//! The restored server's configuration files: put those stored from outside the source's data
//! directory (Debian: /etc/postgresql/<ver>/<name>) into the target, or into `--config-dir`, and
//! make every configuration file the copy reads name the copy's paths, never the source's.
//!
//! A restored copy that followed `data_directory`, `hba_file`, `ident_file` or an include back
//! to the source would run against, or be configured by, production; `external_pid_file` would
//! overwrite production's pid file. So in postgresql.conf, its includes and
//! postgresql.auto.conf: `data_directory` and `external_pid_file` are disabled (with
//! `--config-dir`, `data_directory` names the target, so `pg_ctl -D DIR` works as on Debian);
//! `hba_file`, `ident_file`, includes and any other absolute path into the source's data or
//! configuration directory are pointed at the restored copies (relative includes that already
//! resolve there are kept). Disabled lines keep only the setting's name, not the source's path.

use std::path::{Path, PathBuf};

use super::{Error, io_err};
use crate::pg::conf::{self, Edit, normalize};
use crate::snapshot::{SERVER_FILES_DIR, ServerFiles};

/// Where a restore puts the data directory and, if apart, the configuration files.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The restored data directory (final path).
    pub target: &'a Path,
    /// `--config-dir`: where the configuration from outside the source's data directory goes.
    pub config_dir: Option<&'a Path>,
}

/// Where source paths go: (source prefix, restored prefix), longest source first.
struct Places(Vec<(PathBuf, PathBuf)>);

impl Places {
    /// `config_root` takes what was stored under `.radd-config/`, `data_root` the data directory.
    fn new(files: Option<&ServerFiles>, source_data: &Path, config_root: &Path, data_root: &Path) -> Self {
        let mut pairs = vec![(normalize(source_data), data_root.to_owned())];
        if let Some(files) = files {
            for stored in &files.stored {
                pairs.push((normalize(Path::new(&stored.original)), config_root.join(&stored.path)));
            }
            if files.stored.iter().any(|s| s.path == "postgresql.conf")
                && let Some(dir) = Path::new(&files.config_file).parent()
            {
                pairs.push((normalize(dir), config_root.to_owned()));
            }
        }
        pairs.sort_by_key(|(source, _)| std::cmp::Reverse(source.components().count()));
        Places(pairs)
    }

    /// Where the source's `path` is in the restore, if it is one of the source's files.
    fn map(&self, path: &Path) -> Option<PathBuf> {
        let path = normalize(path);
        self.0.iter().find_map(|(source, restored)| {
            path.strip_prefix(source)
                .ok()
                .map(|rest| if rest.as_os_str().is_empty() { restored.clone() } else { restored.join(rest) })
        })
    }
}

/// Rewrites the configuration files in `staging` (the data directory being restored) for their
/// final places; without `--config-dir` also moves the stored ones into it. Runs before the
/// recovery settings are appended to postgresql.auto.conf.
pub fn prepare(
    staging: &Path,
    files: Option<&ServerFiles>,
    source_data: &Path,
    options: Destination<'_>,
) -> Result<(), Error> {
    let config_root = options.config_dir.unwrap_or(options.target);
    let finals = Places::new(files, source_data, config_root, options.target);
    let staged = Places::new(files, source_data, &staging.join(SERVER_FILES_DIR), staging);
    let config_file = files.map_or_else(|| source_data.join("postgresql.conf"), |f| PathBuf::from(&f.config_file));
    let relocated = files.is_some_and(|f| f.stored.iter().any(|s| s.path == "postgresql.conf"));
    let mut originals: Vec<PathBuf> = files.map(|f| f.files.iter().map(PathBuf::from).collect()).unwrap_or_default();
    if originals.is_empty() {
        originals.push(config_file.clone());
    }
    originals.push(source_data.join("postgresql.auto.conf"));
    for original in &originals {
        let (Some(final_path), Some(staged_path)) = (finals.map(original), staged.map(original)) else { continue };
        let Ok(text) = std::fs::read(&staged_path) else { continue };
        let text = String::from_utf8_lossy(&text);
        let top = normalize(original) == normalize(&config_file);
        let mut edit = FileEdit {
            finals: &finals,
            original,
            final_path: &final_path,
            top_of_moved_config: top && relocated && options.config_dir.is_some(),
            target: options.target,
            set: Vec::new(),
        };
        let (mut new, mut changed) = conf::rewrite(&text, |s| edit.edit(s));
        if top && files.is_some() {
            changed |= append_own_paths(&mut new, &edit, files, options);
        }
        if changed {
            std::fs::write(&staged_path, new).map_err(io_err("write restored configuration file", &staged_path))?;
            tracing::info!(file = %final_path.display(), "restored configuration file rewritten to name this copy's paths");
        }
    }
    if options.config_dir.is_none() {
        move_children(&staging.join(SERVER_FILES_DIR), staging)?;
    }
    Ok(())
}

/// The edits of one configuration file.
struct FileEdit<'a> {
    finals: &'a Places,
    original: &'a Path,
    final_path: &'a Path,
    /// The relocated postgresql.conf going into `--config-dir`: `data_directory` names the target.
    top_of_moved_config: bool,
    target: &'a Path,
    /// Settings this file now sets (after the edits).
    set: Vec<String>,
}

impl FileEdit<'_> {
    fn edit(&mut self, setting: &conf::Setting) -> Edit {
        let name = setting.name.as_str();
        let edit = match name {
            "data_directory" if self.top_of_moved_config => Edit::Set(self.target.display().to_string()),
            "data_directory" => Edit::Disable("disabled by radd restore: it named the source's data directory".into()),
            "external_pid_file" => Edit::Disable("disabled by radd restore: it named the source's pid file".into()),
            _ if conf::is_include(name) || matches!(name, "hba_file" | "ident_file") || is_path(&setting.value) => {
                let source = conf::resolve(&setting.value, self.original);
                match self.finals.map(&source) {
                    Some(mapped) if conf::resolve(&setting.value, self.final_path) == mapped => Edit::Keep,
                    Some(mapped) => Edit::Set(mapped.display().to_string()),
                    None if matches!(name, "hba_file" | "ident_file") => {
                        Edit::Disable(format!("disabled by radd restore: {name} was not in the backup"))
                    }
                    None => Edit::Keep,
                }
            }
            _ => Edit::Keep,
        };
        if !matches!(edit, Edit::Disable(_)) {
            self.set.push(name.to_owned());
        }
        edit
    }
}

/// Whether a value of another setting is one absolute path (not a command line such as an
/// `archive_command`, nor a list such as `unix_socket_directories`).
fn is_path(value: &str) -> bool {
    value.starts_with('/') && !value.contains(|c: char| c.is_whitespace() || c == '%' || c == ',')
}

/// Appends `data_directory`, `hba_file` and `ident_file` to the restored postgresql.conf where
/// the copy would not find its own otherwise; returns whether anything was appended.
fn append_own_paths(
    text: &mut String,
    edit: &FileEdit<'_>,
    files: Option<&ServerFiles>,
    options: Destination<'_>,
) -> bool {
    let Some(files) = files else { return false };
    let mut lines = Vec::new();
    if edit.top_of_moved_config && !edit.set.iter().any(|n| n == "data_directory") {
        lines.push(format!("data_directory = {}", conf::quote(&options.target.display().to_string())));
    }
    for (name, source, default_name) in
        [("hba_file", &files.hba_file, "pg_hba.conf"), ("ident_file", &files.ident_file, "pg_ident.conf")]
    {
        let Some(mapped) = edit.finals.map(Path::new(source)) else { continue };
        let default = options.target.join(default_name);
        if !edit.set.iter().any(|n| n == name) && (options.config_dir.is_some() || mapped != default) {
            lines.push(format!("{name} = {}", conf::quote(&mapped.display().to_string())));
        }
    }
    if lines.is_empty() {
        return false;
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("\n# Added by radd restore: this copy's own files (the source's paths are not used)\n");
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    true
}

/// Moves every entry of `from` into `into` (replacing files of the same name, merging
/// directories), then removes `from`. Nothing to do when `from` does not exist.
fn move_children(from: &Path, into: &Path) -> Result<(), Error> {
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", from)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("read", from))?;
        let to = into.join(entry.file_name());
        let is_dir = entry.file_type().map_err(io_err("read", &entry.path()))?.is_dir();
        if is_dir && to.is_dir() {
            move_children(&entry.path(), &to)?;
        } else {
            std::fs::rename(entry.path(), &to).map_err(io_err("move restored configuration file to", &to))?;
        }
    }
    std::fs::remove_dir(from).map_err(io_err("remove", from))
}

/// With `--config-dir`: moves the stored configuration files out of the restored data
/// directory into that directory (copied when it is on another file system).
pub fn finish(options: Destination<'_>) -> Result<(), Error> {
    let Some(dir) = options.config_dir else { return Ok(()) };
    let stored = options.target.join(SERVER_FILES_DIR);
    if !stored.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    copy_tree(&stored, dir)?;
    std::fs::remove_dir_all(&stored).map_err(io_err("remove", &stored))?;
    super::writer::sync_tree(dir)
}

/// Copies the files and directories below `from` into `into`, keeping mode and owner.
fn copy_tree(from: &Path, into: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(from).map_err(io_err("read", from))? {
        let entry = entry.map_err(io_err("read", from))?;
        let (path, to) = (entry.path(), into.join(entry.file_name()));
        let meta = std::fs::metadata(&path).map_err(io_err("read", &path))?;
        if meta.is_dir() {
            if !to.is_dir() {
                std::fs::create_dir(&to).map_err(io_err("create", &to))?;
            }
            copy_tree(&path, &to)?;
        } else {
            std::fs::copy(&path, &to).map_err(io_err("copy restored configuration file to", &to))?;
        }
        std::fs::set_permissions(&to, meta.permissions()).map_err(io_err("set mode of", &to))?;
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid())).map_err(io_err("set owner of", &to))?;
        }
    }
    Ok(())
}

/// Refuses a `--config-dir` that exists and is not empty, before anything is written.
pub fn check_config_dir(config_dir: Option<&Path>) -> Result<(), Error> {
    config_dir.map_or(Ok(()), super::check_target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::StoredFile;

    fn stored(original: &str, path: &str) -> StoredFile {
        StoredFile { original: original.into(), path: path.into() }
    }

    /// A Debian cluster (/etc/pg/main, data in /src/data) restored into `target` of a staging dir.
    fn restore_debian(config_dir: Option<&Path>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let kept = staging.join(SERVER_FILES_DIR);
        std::fs::create_dir_all(kept.join("conf.d")).unwrap();
        std::fs::write(
            kept.join("postgresql.conf"),
            "data_directory = '/src/data'\nhba_file = '/etc/pg/main/pg_hba.conf'\nexternal_pid_file = '/run/pg/main.pid'\n\
             include_dir = 'conf.d'\nlog_directory = '/src/data/pg_log'\nssl_cert_file = '/etc/ssl/certs/snakeoil.pem'\n\
             archive_command = '/src/data/archive.sh %p'\nwork_mem = 4MB\n",
        )
        .unwrap();
        std::fs::write(kept.join("pg_hba.conf"), "local all all peer\n").unwrap();
        std::fs::write(
            kept.join("conf.d/x.conf"),
            "include_if_exists = '/etc/pg/main/conf.d/y.conf'\ndata_directory = '/elsewhere'\n",
        )
        .unwrap();
        std::fs::write(staging.join("postgresql.auto.conf"), "ident_file = '/etc/pg/main/pg_ident.conf'\n").unwrap();
        let files = ServerFiles {
            config_file: "/etc/pg/main/postgresql.conf".into(),
            hba_file: "/etc/pg/main/pg_hba.conf".into(),
            ident_file: "/etc/pg/main/pg_ident.conf".into(),
            files: vec!["/etc/pg/main/postgresql.conf".into(), "/etc/pg/main/conf.d/x.conf".into()],
            stored: vec![
                stored("/etc/pg/main/postgresql.conf", "postgresql.conf"),
                stored("/etc/pg/main/pg_hba.conf", "pg_hba.conf"),
                stored("/etc/pg/main/conf.d", "conf.d"),
                stored("/etc/pg/main/conf.d/x.conf", "conf.d/x.conf"),
            ],
        };
        let target = dir.path().join("target");
        prepare(&staging, Some(&files), Path::new("/src/data"), Destination { target: &target, config_dir }).unwrap();
        (dir, staging)
    }

    #[test]
    fn restored_configuration_names_only_the_copy() {
        let (dir, staging) = restore_debian(None);
        let target = dir.path().join("target");
        assert!(!staging.join(SERVER_FILES_DIR).exists(), "stored files moved into the data directory");
        let conf = std::fs::read_to_string(staging.join("postgresql.conf")).unwrap();
        let paths: String = conf.lines().filter(|l| !l.starts_with("archive_command")).collect();
        assert!(!paths.contains("/src/data") && !paths.contains("/etc/pg") && !paths.contains("main.pid"), "{conf}");
        let settings: Vec<_> = conf.lines().filter_map(conf::parse_line).map(|s| (s.name, s.value)).collect();
        let get = |name: &str| settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(get("data_directory"), None);
        assert_eq!(get("external_pid_file"), None);
        assert_eq!(get("hba_file"), Some(target.join("pg_hba.conf").display().to_string()));
        assert_eq!(
            get("include_dir").as_deref(),
            Some("conf.d"),
            "a relative include that resolves in the copy is kept"
        );
        assert_eq!(get("log_directory"), Some(target.join("pg_log").display().to_string()));
        assert_eq!(
            get("ssl_cert_file").as_deref(),
            Some("/etc/ssl/certs/snakeoil.pem"),
            "system files are not the source's"
        );
        assert_eq!(get("archive_command").as_deref(), Some("/src/data/archive.sh %p"), "commands are not paths");
        assert_eq!(get("ident_file"), None, "set where the copy finds it by default: nothing appended");
        let included = std::fs::read_to_string(staging.join("conf.d/x.conf")).unwrap();
        assert!(
            included.contains(&format!("include_if_exists = '{}'", target.join("conf.d/y.conf").display())),
            "{included}"
        );
        assert!(!included.lines().filter_map(conf::parse_line).any(|s| s.name == "data_directory"), "{included}");
        let auto = std::fs::read_to_string(staging.join("postgresql.auto.conf")).unwrap();
        assert_eq!(auto.trim(), format!("ident_file = '{}'", target.join("pg_ident.conf").display()));
    }

    #[test]
    fn with_a_config_dir_postgresql_conf_names_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("etc-restored");
        let (dir2, staging) = restore_debian(Some(&config_dir));
        let target = dir2.path().join("target");
        let conf = std::fs::read_to_string(staging.join(SERVER_FILES_DIR).join("postgresql.conf")).unwrap();
        let settings: Vec<_> = conf.lines().filter_map(conf::parse_line).map(|s| (s.name, s.value)).collect();
        let get = |name: &str| settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(get("data_directory"), Some(target.display().to_string()));
        assert_eq!(get("hba_file"), Some(config_dir.join("pg_hba.conf").display().to_string()));
        assert_eq!(
            get("ident_file"),
            Some(config_dir.join("pg_ident.conf").display().to_string()),
            "explicit: the copy may start with -D <target>"
        );
    }
}
