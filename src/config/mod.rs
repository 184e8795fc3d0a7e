//! Configuration: one TOML document (`radd.toml`) parsed into typed options.
//!
//! Load = parse → resolve relative paths against the file's directory → validate, where
//! validation reports every problem at once with its key path. Opens no connection and touches
//! no repository. Secrets are never inline: keys live in files named here (mode 0600).

mod archive;
mod daemon;
pub mod events;
#[cfg(test)]
mod primary_tests;
pub mod retention;
mod scratch;
mod size;
mod storage;
mod time;

use std::path::{Path, PathBuf};

pub use crate::pg::settings::{PostgresConfig, PrimaryConfig};
pub use archive::ArchiveConfig;
pub use daemon::DaemonConfig;
pub use time::{CronSchedule, HumanDuration};

use serde::{Deserialize, Serialize};

pub use scratch::ScratchConfig;
pub use size::ByteSize;

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for radd's schema.
    #[error("config file {path} is invalid: {message}", path = .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// One or more values are invalid; every problem is listed.
    #[error("config file {path} has {} problem(s):\n  {}", .problems.len(), .problems.join("\n  "), path = .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// "key.path: what is wrong" lines.
        problems: Vec<String>,
    },
    /// A value needed by this command is not configured.
    #[error("{key} is not set in the configuration; {hint}")]
    Missing {
        /// Key path.
        key: &'static str,
        /// What to do.
        hint: &'static str,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Where backups are stored.
    pub repository: RepositoryConfig,
    /// Key files and recipients.
    #[serde(default)]
    pub keys: KeysConfig,
    /// The PostgreSQL cluster to back up.
    #[serde(default)]
    pub postgres: PostgresConfig,
    /// Chunking, packing and compression.
    #[serde(default)]
    pub backup: BackupConfig,
    /// WAL archiving and fetching.
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// Which snapshots `radd forget` keeps.
    #[serde(default)]
    pub retention: retention::Policy,
    /// File-tree snapshot jobs (`[[fs]]`).
    #[serde(default)]
    pub fs: Vec<FsJobConfig>,
    /// Where drill definitions and scratch instances live.
    #[serde(default)]
    pub drills: DrillsConfig,
    /// Managed scratch instances (`radd restore --scratch`): where, how long, how many.
    #[serde(default)]
    pub scratch: ScratchConfig,
    /// The production event log and its sinks.
    #[serde(default)]
    pub events: events::EventsConfig,
    /// Schedules and endpoints of `radd daemon`.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Where this file was loaded from (absolute); used for restore_command lines.
    #[serde(skip)]
    pub source: PathBuf,
}

/// Storage backend selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A directory on a local (or mounted) file system: the embedded default.
    #[default]
    Local,
    /// Amazon S3 or an S3-compatible server.
    S3,
}

/// `[repository]`: the object store holding the repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepositoryConfig {
    /// `local` (default) or `s3`.
    #[serde(default)]
    pub backend: Backend,
    /// Local backend: repository directory.
    pub path: Option<PathBuf>,
    /// S3: bucket name.
    pub bucket: Option<String>,
    /// S3: key prefix inside the bucket ("" = bucket root).
    #[serde(default)]
    pub prefix: String,
    /// S3: endpoint URL for S3-compatible servers (default: AWS).
    pub endpoint: Option<String>,
    /// S3: region (default `us-east-1`).
    pub region: Option<String>,
    /// S3: allow plain-HTTP endpoints (test servers only).
    #[serde(default)]
    pub allow_http: bool,
    /// S3: longest one request may take, connect to last byte of the reply (`"60s"`).
    #[serde(default = "storage::default_request_timeout")]
    pub request_timeout: String,
    /// S3: longest connecting may take (`"5s"`).
    #[serde(default = "storage::default_connect_timeout")]
    pub connect_timeout: String,
    /// Total time one storage operation retries transient failures (`"5m"`; `"0s"`: never).
    #[serde(default = "storage::default_retry_budget")]
    pub retry_budget: String,
}

/// `[keys]`: capability-split keys. Backup hosts need `recipients` + `id_key_file`; restore
/// hosts need `identity_file` (the id key is then recovered from the repository if absent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeysConfig {
    /// age X25519 recipients (`age1…`) every object is encrypted to.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// age identity file (0600): needed only to restore, verify and drill.
    pub identity_file: Option<PathBuf>,
    /// Id key file (0600): keys chunk ids; written by `radd repo init`.
    pub id_key_file: Option<PathBuf>,
}

/// `[backup]`: how data is cut, packed and compressed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupConfig {
    /// Average content-defined chunk size for non-relation files.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: ByteSize,
    /// Average content-defined chunk size for file-tree snapshots (smaller than `chunk_size`:
    /// a one-byte change in a large file then uploads well under a megabyte).
    #[serde(default = "default_fs_chunk_size")]
    pub fs_chunk_size: ByteSize,
    /// Fixed block size for relation files (multiple of 8 KiB pages).
    #[serde(default = "default_block_size")]
    pub block_size: ByteSize,
    /// Target size of a pack object.
    #[serde(default = "default_pack_size")]
    pub pack_size: ByteSize,
    /// zstd level (1 fastest … 19).
    #[serde(default = "default_level")]
    pub compression_level: i32,
    /// Packs sealed or being stored at once (at most one per core is sealed; the others wait
    /// for the disk or the network holding only their sealed bytes).
    #[serde(default = "default_uploads")]
    pub upload_concurrency: usize,
    /// Read relation files past the page cache (`O_DIRECT`): the backup neither evicts the
    /// database's cached pages nor pays for copying through the cache.
    #[serde(default = "daemon::default_true")]
    pub direct_io: bool,
    /// Most blobs in one index object. A backup writes an index object as soon as it has this
    /// many blobs of stored packs (twice as many collected), so its memory for the index does
    /// not grow with the size of the backup.
    #[serde(default = "default_index_shard_blobs")]
    pub index_shard_blobs: usize,
    /// Backup-host state: the record of the last backup, so unchanged files are not re-read.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How long a base backup waits, after `pg_backup_stop`, for the WAL it needs to reach the
    /// repository (radd polls the repository itself instead of PostgreSQL's 1-second poll).
    #[serde(default = "default_archive_wait")]
    pub archive_wait: String,
    /// How long a backup waits for a running prune (which holds the repository's exclusive
    /// lock) to finish before failing.
    #[serde(default = "default_lock_wait")]
    pub lock_wait: String,
}

fn default_index_shard_blobs() -> usize {
    50_000
}

fn default_archive_wait() -> String {
    "120s".to_owned()
}

fn default_lock_wait() -> String {
    "1h".to_owned()
}

/// The shortest prune grace period accepted without `--force`: packs a backup is uploading
/// are unreferenced until it commits, and a backup's lock, not the grace period, is what
/// protects them — but a grace period shorter than this also removes the safety net for
/// writers of older radd versions, which take no lock.
pub const MIN_PRUNE_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

impl BackupConfig {
    /// [`BackupConfig::archive_wait`] as a duration (validated with the config).
    #[must_use]
    pub fn archive_wait(&self) -> std::time::Duration {
        humantime::parse_duration(&self.archive_wait).unwrap_or(std::time::Duration::from_secs(120))
    }

    /// [`BackupConfig::lock_wait`] as a duration (validated with the config).
    #[must_use]
    pub fn lock_wait(&self) -> std::time::Duration {
        humantime::parse_duration(&self.lock_wait).unwrap_or(std::time::Duration::from_secs(3600))
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            chunk_size: default_chunk_size(),
            fs_chunk_size: default_fs_chunk_size(),
            block_size: default_block_size(),
            pack_size: default_pack_size(),
            compression_level: default_level(),
            upload_concurrency: default_uploads(),
            direct_io: true,
            index_shard_blobs: default_index_shard_blobs(),
            state_dir: default_state_dir(),
            archive_wait: default_archive_wait(),
            lock_wait: default_lock_wait(),
        }
    }
}

/// `[[fs]]`: a file-tree snapshot job, run by `radd backup fs --job NAME` and by the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FsJobConfig {
    /// Job name (events: `backup.fs.<name>`).
    pub name: String,
    /// Root paths.
    pub paths: Vec<PathBuf>,
    /// Glob patterns to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Stay on each root's file system.
    #[serde(default)]
    pub one_file_system: bool,
    /// Tags for the snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Shell command before reading (fsfreeze, LVM/ZFS/btrfs snapshot, an application dump);
    /// a failure aborts the snapshot with an incident.
    pub pre: Option<String>,
    /// Shell command after reading; always runs, also on failure and on SIGTERM.
    pub post: Option<String>,
    /// Cron schedule for the daemon (sec min hour day month weekday, UTC).
    pub schedule: Option<String>,
    /// Retention for this job's snapshots (default: `[retention]`).
    pub retention: Option<retention::Policy>,
}

/// `[drills]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillsConfig {
    /// Directory of `*.toml` drill definitions (relative to this file; default `drills`).
    #[serde(default = "default_drills_dir")]
    pub dir: PathBuf,
    /// Parent of scratch data directories (must have room for a full restore).
    #[serde(default = "default_scratch_dir")]
    pub scratch_dir: PathBuf,
}

impl Default for DrillsConfig {
    fn default() -> Self {
        DrillsConfig { dir: default_drills_dir(), scratch_dir: default_scratch_dir() }
    }
}

fn default_state_dir() -> PathBuf {
    "/var/lib/radd/state".into()
}
fn default_drills_dir() -> PathBuf {
    "drills".into()
}
fn default_scratch_dir() -> PathBuf {
    "/var/tmp/radd-drills".into()
}

fn default_chunk_size() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_fs_chunk_size() -> ByteSize {
    ByteSize(128 << 10)
}
fn default_block_size() -> ByteSize {
    ByteSize(8 << 10)
}
fn default_pack_size() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_level() -> i32 {
    3
}
fn default_uploads() -> usize {
    4
}

/// A TOML error as "line L, column C: message", without the snippet of the offending line that
/// toml's own message quotes: that line may hold a secret (a token written inline), and config
/// errors reach logs — PostgreSQL's, when `wal-push` reads the config.
fn parse_message(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else { return error.message().to_owned() };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {}", error.message())
}

/// A key's path as the operator writes it: `events.gitlab.token`, `fs[1].paths`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() { key.clone() } else { format!("{parent}.{key}") }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

impl Config {
    /// Reads, resolves and validates a config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        let parse_error =
            |e: toml::de::Error| Error::Parse { path: path.to_owned(), message: parse_message(&text, &e) };
        // Every unknown key is reported at once (a misspelt key silently means its default).
        let mut unknown = Vec::new();
        let deserializer = toml::Deserializer::parse(&text).map_err(parse_error)?;
        let mut config: Config =
            serde_ignored::deserialize(deserializer, |key| unknown.push(key_path(&key))).map_err(parse_error)?;
        let source = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let base = source.parent().map(Path::to_owned).unwrap_or_default();
        config.resolve_paths(&base);
        config.source = source;
        let mut problems: Vec<String> = unknown
            .into_iter()
            .map(|key| format!("{key}: unknown key (misspelt, or from another radd version?)"))
            .collect();
        match config.validate() {
            Ok(()) => {}
            Err(Error::Invalid { problems: more, .. }) => problems.extend(more),
            Err(other) if problems.is_empty() => return Err(other),
            Err(other) => problems.push(other.to_string()),
        }
        if !problems.is_empty() {
            return Err(Error::Invalid { path: config.source.clone(), problems });
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p.as_mut().filter(|p| p.is_relative()) {
                *path = base.join(&*path);
            }
        };
        fix(&mut self.repository.path);
        fix(&mut self.keys.identity_file);
        fix(&mut self.keys.id_key_file);
        fix(&mut self.postgres.data_dir);
        fix(&mut self.scratch.dir);
        for path in
            [&mut self.drills.dir, &mut self.drills.scratch_dir, &mut self.events.dir, &mut self.backup.state_dir]
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks every value and reports all problems together.
    // Long on purpose: a flat list of independent checks, one per setting, that all report together.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        let repo = &self.repository;
        match repo.backend {
            Backend::Local if repo.path.is_none() => {
                problems.push("repository.path: required for the local backend".to_owned());
            }
            Backend::S3 if repo.bucket.as_deref().unwrap_or("").is_empty() => {
                problems.push("repository.bucket: required for the s3 backend".to_owned());
            }
            _ => {}
        }
        if let Err(e) = crate::crypto::Recipients::parse(&self.keys.recipients) {
            problems.push(format!("keys.recipients: {e}"));
        }
        problems.extend(self.postgres.primary_problems());
        problems.extend(self.repository.storage_problems());
        problems.extend(self.scratch.problems());
        let b = &self.backup;
        if b.block_size.0 == 0 || !b.block_size.0.is_multiple_of(8192) || b.block_size.0 > MAX_BLOCK_SIZE {
            problems.push("backup.block_size: must be a multiple of 8KiB between 8KiB and 16MiB".to_owned());
        } else if b.block_size.0 > b.pack_size.0 {
            problems.push(
                "backup.block_size: must not exceed backup.pack_size (a block is stored whole in one pack)".to_owned(),
            );
        }
        if !(1 << 20..=1 << 30).contains(&b.pack_size.0) {
            // A pack is one object held in memory while it fills; its offsets are u32.
            problems.push("backup.pack_size: must be between 1MiB and 1GiB".to_owned());
        }
        if !(64 << 10..=64 << 20).contains(&b.chunk_size.0) {
            problems.push("backup.chunk_size: must be between 64KiB and 64MiB".to_owned());
        }
        if !(16 << 10..=64 << 20).contains(&b.fs_chunk_size.0) {
            problems.push("backup.fs_chunk_size: must be between 16KiB and 64MiB".to_owned());
        }
        if !(1 << 20..=256 << 20).contains(&b.pack_size.0) {
            problems.push("backup.pack_size: must be between 1MiB and 256MiB".to_owned());
        }
        if !(1..=19).contains(&b.compression_level) {
            problems.push("backup.compression_level: must be 1..=19".to_owned());
        }
        if !(1..=16).contains(&self.archive.push_parallel) {
            problems.push("archive.push_parallel: must be 1..=16".to_owned());
        }
        if self.archive.push_ahead > 1024 {
            problems.push("archive.push_ahead: must be 0..=1024".to_owned());
        }
        if !(1..=64).contains(&self.archive.compress_workers) {
            problems.push("archive.compress_workers: must be 1..=64".to_owned());
        }
        if self.archive.fetch_prefetch > 64 {
            problems.push("archive.fetch_prefetch: must be 0..=64".to_owned());
        }
        if !(1..=10_000_000).contains(&b.index_shard_blobs) {
            problems.push("backup.index_shard_blobs: must be 1..=10000000".to_owned());
        }
        if !(1..=64).contains(&b.upload_concurrency) {
            problems.push("backup.upload_concurrency: must be 1..=64".to_owned());
        }
        for (i, job) in self.fs.iter().enumerate() {
            if job.paths.is_empty() {
                problems.push(format!("fs[{i}] ({}): paths must not be empty", job.name));
            }
            if let Some(schedule) = &job.schedule
                && let Err(e) = parse_cron(schedule)
            {
                problems.push(format!("fs[{i}] ({}).schedule: invalid cron expression {schedule:?}: {e}", job.name));
            }
        }
        if let Some(w) = &self.retention.keep_within
            && humantime::parse_duration(w).is_err()
        {
            problems.push(format!("retention.keep_within: invalid duration {w:?}"));
        }
        for (key, value) in
            [("backup.archive_wait", &self.backup.archive_wait), ("backup.lock_wait", &self.backup.lock_wait)]
        {
            if !value.is_empty() && humantime::parse_duration(value).is_err() {
                problems.push(format!("{key}: invalid duration {value:?} (e.g. \"10s\", \"5m\")"));
            }
        }
        problems.extend(self.daemon.problems());
        if problems.is_empty() { Ok(()) } else { Err(Error::Invalid { path: self.source.clone(), problems }) }
    }
}

/// Parses a cron schedule in UTC: the standard five fields (minute hour day month weekday, as
/// crontab and most SRE runbooks write them) or the six or seven of the `cron` crate (seconds
/// first, optional year). Five fields run at second 0.
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, cron::error::Error> {
    let expression = expression.trim();
    if expression.split_whitespace().count() == 5 { format!("0 {expression}").parse() } else { expression.parse() }
}

/// Largest `backup.block_size`: blocks are read, hashed and sealed whole, several per thread.
const MAX_BLOCK_SIZE: u64 = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_is_reported_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radd.toml");
        std::fs::write(&path, "[repository]\npath = \"r\"\nbakend = \"s3\"\n[backup]\nblock_sise = \"8KiB\"\n[events.gitlab]\nurl = \"https://gitlab.example\"\nproject_id = \"sre/prod\"\ntoken = \"glpat-SECRET\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        for key in ["repository.bakend", "backup.block_sise", "events.gitlab.token"] {
            assert!(err.contains(key), "{key} not reported: {err}");
        }
        assert!(!err.contains("glpat-SECRET"), "a value is never echoed: {err}");
    }

    #[test]
    fn five_field_cron_expressions_run_at_second_zero() {
        let five = parse_cron("30 2 * * *").unwrap();
        let six = parse_cron("0 30 2 * * *").unwrap();
        assert_eq!(five.upcoming(chrono::Utc).next(), six.upcoming(chrono::Utc).next());
        assert!(parse_cron("61 * * * *").is_err());
    }

    #[test]
    fn sizes_beyond_what_the_code_can_honour_are_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radd.toml");
        std::fs::write(&path, "[repository]\npath = \"r\"\n[backup]\nblock_size = \"64GiB\"\nupload_concurrency = 100000\nindex_shard_blobs = 0\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        for key in ["backup.block_size", "backup.upload_concurrency", "backup.index_shard_blobs"] {
            assert!(err.contains(key), "{key} not refused: {err}");
        }
    }

    #[test]
    fn parse_errors_do_not_echo_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radd.toml");
        std::fs::write(&path, "[events.gitlab]\ntoken = glpat-SECRET123\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(!err.contains("SECRET123"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radd.toml");
        std::fs::write(&path, "[repository]\nbackend = \"s3\"\n[backup]\nblock_size = \"10KiB\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("repository.bucket"), "{err}");
        assert!(err.contains("keys.recipients"), "{err}");
        assert!(err.contains("backup.block_size"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radd.toml");
        let id = crate::crypto::Identity::generate();
        std::fs::write(
            &path,
            format!("[repository]\npath = \"repo\"\n[keys]\nrecipients = [\"{}\"]\n", id.recipients().to_strings()[0]),
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.repository.path.unwrap(), dir.path().join("repo"));
    }
}

#[cfg(test)]
mod example_tests {
    /// The shipped example must always load: it is the documentation of the format.
    #[test]
    fn shipped_example_config_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/radd.toml");
        let config = super::Config::load(&path).expect("config/radd.toml loads");
        assert_eq!(config.backup.block_size.0, 8 << 10);
    }
}
