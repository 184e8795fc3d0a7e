//! PostgreSQL's configuration-file syntax (postgresql.conf and the files it includes), as far as
//! radd needs it: which files a server reads, and rewriting settings that name paths.
//!
//! Debian and Ubuntu (`pg_createcluster`) keep postgresql.conf, pg_hba.conf and pg_ident.conf
//! in /etc/postgresql/<version>/<cluster>, outside the data directory, with `data_directory`,
//! `hba_file`, `ident_file`, `external_pid_file` and `include_dir = 'conf.d'` in postgresql.conf.
//! A backup must carry those files, and a restored copy must not follow those paths back to the
//! source. The lexer follows PostgreSQL's guc-file.l: `name [=] value [# comment]`, one per line,
//! values quoted with `'` (`''` and backslash escapes inside) or bare words; `include`,
//! `include_if_exists` and `include_dir` resolve relative paths against the including file's
//! directory, and a directory contributes its `*.conf` files not starting with `.`, sorted.

use std::path::{Path, PathBuf};

use super::Error;

/// Where a server's configuration files are, from `current_setting(…)` (absolute paths).
#[derive(Debug, Clone)]
pub struct ConfigPaths {
    /// `config_file`.
    pub config_file: PathBuf,
    /// `hba_file`.
    pub hba_file: PathBuf,
    /// `ident_file`.
    pub ident_file: PathBuf,
}

/// Asks the server where its configuration files are. Needs a superuser or a role with
/// `pg_read_all_settings`.
pub async fn config_paths(client: &tokio_postgres::Client) -> Result<ConfigPaths, Error> {
    let row = client
        .query_one(
            "SELECT current_setting('config_file'), current_setting('hba_file'), current_setting('ident_file')",
            &[],
        )
        .await
        .map_err(|source| Error::Query {
            query: "SELECT current_setting('config_file'), …('hba_file'), …('ident_file')",
            driver: source,
        })?;
    Ok(ConfigPaths {
        config_file: PathBuf::from(row.get::<_, String>(0)),
        hba_file: PathBuf::from(row.get::<_, String>(1)),
        ident_file: PathBuf::from(row.get::<_, String>(2)),
    })
}

/// Nesting limit of includes (PostgreSQL's CONF_FILE_MAX_DEPTH).
const MAX_DEPTH: usize = 10;

/// One `name = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Lower-cased name (PostgreSQL compares names case-insensitively).
    pub name: String,
    /// The value, unquoted.
    pub value: String,
}

/// Parses one line; `None` for blank lines, comments and lines radd cannot read (PostgreSQL
/// would reject those at startup anyway).
#[must_use]
pub fn parse_line(line: &str) -> Option<Setting> {
    let rest = line.trim_start();
    let name_len =
        rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || !c.is_ascii())).unwrap_or(rest.len());
    if name_len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let name = rest[..name_len].to_ascii_lowercase();
    let mut rest = rest[name_len..].trim_start();
    if let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start();
    }
    let (value, tail) = if let Some(quoted) = rest.strip_prefix('\'') {
        unquote(quoted)?
    } else {
        let end = rest.find(|c: char| c.is_whitespace() || c == '#').unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        (rest[..end].to_owned(), &rest[end..])
    };
    let tail = tail.trim_start();
    (tail.is_empty() || tail.starts_with('#')).then_some(Setting { name, value })
}

/// The content of a quoted value (after its opening quote) and what follows the closing quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if s[i + 1..].starts_with('\'') => {
                out.push('\'');
                chars.next();
            }
            '\'' => return Some((out, &s[i + 1..])),
            '\\' => {
                let (_, next) = chars.next()?;
                out.push(match next {
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    other => other,
                });
            }
            other => out.push(other),
        }
    }
    None
}

/// A value quoted for a configuration file.
#[must_use]
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Whether a setting is an include directive.
#[must_use]
pub fn is_include(name: &str) -> bool {
    matches!(name, "include" | "include_if_exists" | "include_dir")
}

/// `value` of an include (or any path setting) in `file`, made absolute as PostgreSQL does:
/// relative to the directory of the file that names it, `.` and `..` removed.
#[must_use]
pub fn resolve(value: &str, file: &Path) -> PathBuf {
    let path = Path::new(value);
    if path.is_absolute() {
        return normalize(path);
    }
    normalize(&file.parent().unwrap_or(Path::new("/")).join(path))
}

/// `path` without `.` components and with each `..` taking away the component before it,
/// without asking the file system (PostgreSQL's canonicalize_path).
#[must_use]
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if out.parent().is_some() {
                    out.pop();
                } else if out.as_os_str().is_empty() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Every file and include directory a server reads its settings from, starting at its
/// `config_file`, in the order PostgreSQL reads them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigTree {
    /// Files read (the config file first); missing `include_if_exists` targets are left out.
    pub files: Vec<PathBuf>,
    /// Directories named by `include_dir` (they must exist, even empty, for the server to start).
    pub dirs: Vec<PathBuf>,
    /// Includes that could not be read (a mandatory one the server would fail on), as messages.
    pub missing: Vec<String>,
}

/// Follows the includes of `config_file` the way PostgreSQL does. A config file that cannot be
/// read is an error; a broken include below it is reported in [`ConfigTree::missing`].
pub fn config_tree(config_file: &Path) -> Result<ConfigTree, Error> {
    let mut tree = ConfigTree::default();
    let text = read(config_file)?;
    tree.files.push(config_file.to_owned());
    follow(&text, config_file, 1, &mut tree);
    Ok(tree)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).map_err(|source| Error::Io {
        what: "cannot read configuration file",
        path: path.to_owned(),
        source,
    })
}

fn follow(text: &str, file: &Path, depth: usize, tree: &mut ConfigTree) {
    for setting in text.lines().filter_map(parse_line).filter(|s| is_include(&s.name)) {
        let target = resolve(&setting.value, file);
        if depth >= MAX_DEPTH {
            tree.missing.push(format!("{}: includes nested deeper than {MAX_DEPTH}", target.display()));
            continue;
        }
        if setting.name == "include_dir" {
            let mut names: Vec<PathBuf> = match std::fs::read_dir(&target) {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .filter(|p| {
                        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                        !name.starts_with('.') && name.ends_with(".conf")
                    })
                    .collect(),
                Err(e) => {
                    tree.missing.push(format!("include_dir {}: {e}", target.display()));
                    continue;
                }
            };
            names.sort();
            tree.dirs.push(target);
            for path in names {
                include(&path, depth, tree, true);
            }
        } else {
            include(&target, depth, tree, setting.name == "include");
        }
    }
}

fn include(path: &Path, depth: usize, tree: &mut ConfigTree, required: bool) {
    match read(path) {
        Ok(text) => {
            if !tree.files.iter().any(|f| f == path) {
                tree.files.push(path.to_owned());
            }
            follow(&text, path, depth + 1, tree);
        }
        Err(e) if required => tree.missing.push(e.to_string()),
        Err(_) => {}
    }
}

/// What to do with one setting line when rewriting a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Leave the line as it is.
    Keep,
    /// Comment the line out, replacing it with this note (the old value is not kept).
    Disable(String),
    /// Set this value instead.
    Set(String),
}

/// Rewrites the settings of a configuration file line by line; comments, blank lines and
/// unparsable lines are kept. Returns the new text and whether anything changed.
pub fn rewrite(text: &str, mut edit: impl FnMut(&Setting) -> Edit) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + 256);
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let new = parse_line(body).map_or(Edit::Keep, |s| edit(&s));
        match new {
            Edit::Keep => {
                out.push_str(line);
                continue;
            }
            Edit::Disable(note) => out.push_str(&format!("#{}  # {note}", disabled_name(body))),
            Edit::Set(value) => out.push_str(&format!("{} = {}", disabled_name(body).trim(), quote(&value))),
        }
        changed = true;
        out.push('\n');
    }
    (out, changed)
}

/// The name part of a setting line, indentation kept.
fn disabled_name(line: &str) -> &str {
    let start = line.len() - line.trim_start().len();
    let end = line[start..].find(|c: char| c.is_whitespace() || c == '=').map_or(line.len(), |e| start + e);
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_as_postgresql_reads_them() {
        let s = |name: &str, value: &str| Some(Setting { name: name.into(), value: value.into() });
        assert_eq!(
            parse_line("data_directory = '/var/lib/postgresql/15/main'  # use data in another directory"),
            s("data_directory", "/var/lib/postgresql/15/main")
        );
        assert_eq!(parse_line("  Include_Dir 'conf.d'"), s("include_dir", "conf.d"));
        assert_eq!(parse_line("port=5433"), s("port", "5433"));
        assert_eq!(parse_line("work_mem = 4MB#x"), s("work_mem", "4MB"));
        assert_eq!(parse_line("x.y = 'it''s \\'quoted\\''"), s("x.y", "it's 'quoted'"));
        assert_eq!(parse_line("#hba_file = 'ConfigDir/pg_hba.conf'"), None);
        assert_eq!(parse_line("   "), None);
        assert_eq!(parse_line("broken = 'unterminated"), None);
        assert_eq!(parse_line("a = b c"), None);
    }

    #[test]
    fn rewrite_disables_and_sets_without_keeping_old_values() {
        let text = "# comment\ndata_directory = '/src/data'\n  hba_file='/etc/pg/pg_hba.conf'\nwork_mem = 4MB\n";
        let (out, changed) = rewrite(text, |s| match s.name.as_str() {
            "data_directory" => Edit::Disable("disabled".into()),
            "hba_file" => Edit::Set("/new/it's".into()),
            _ => Edit::Keep,
        });
        assert!(changed);
        assert_eq!(out, "# comment\n#data_directory  # disabled\nhba_file = '/new/it''s'\nwork_mem = 4MB\n");
        assert!(!out.contains("/src/data"));
        assert_eq!(
            parse_line(out.lines().nth(2).unwrap()),
            Some(Setting { name: "hba_file".into(), value: "/new/it's".into() })
        );
        assert_eq!(rewrite(text, |_| Edit::Keep), (text.to_owned(), false));
    }

    #[test]
    fn includes_are_followed_like_postgresql_does() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.conf");
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::create_dir(dir.path().join("empty.d")).unwrap();
        std::fs::write(
            &conf,
            "include_dir = 'conf.d'\ninclude_dir 'empty.d'\ninclude_if_exists = 'absent.conf'\ninclude 'more.conf'\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("conf.d/b.conf"), "work_mem = 8MB\n").unwrap();
        std::fs::write(dir.path().join("conf.d/a.conf"), "include = '../deep.conf'\n").unwrap();
        std::fs::write(dir.path().join("conf.d/.hidden.conf"), "").unwrap();
        std::fs::write(dir.path().join("conf.d/notes.txt"), "").unwrap();
        std::fs::write(dir.path().join("deep.conf"), "").unwrap();
        let tree = config_tree(&conf).unwrap();
        let rel: Vec<_> =
            tree.files.iter().map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        assert_eq!(rel, ["postgresql.conf", "conf.d/a.conf", "deep.conf", "conf.d/b.conf"]);
        assert_eq!(tree.dirs, [dir.path().join("conf.d"), dir.path().join("empty.d")]);
        assert_eq!(tree.missing.len(), 1, "{:?}", tree.missing);
        assert!(tree.missing[0].contains("more.conf"));
    }

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(normalize(Path::new("/etc/pg/conf.d/../x/./y.conf")), Path::new("/etc/pg/x/y.conf"));
        assert_eq!(normalize(Path::new("/../a")), Path::new("/a"));
        assert_eq!(
            resolve("../other.conf", Path::new("/etc/pg/main/postgresql.conf")),
            Path::new("/etc/pg/other.conf")
        );
        assert_eq!(resolve("/abs.conf", Path::new("/etc/pg/main/postgresql.conf")), Path::new("/abs.conf"));
    }
}
