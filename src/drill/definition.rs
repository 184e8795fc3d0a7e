//! Drill definitions: `drills/*.toml`, one drill per file.
//!
//! ```toml
//! name = "monthly-rad"
//! schedule = "0 0 2 2 * *"        # cron (sec min hour day month weekday), UTC; default: 02:00 on the 2nd
//! snapshot = "latest"             # "latest", "random" (any retained) or a snapshot id
//! [target]
//! recovery = "latest"             # latest | immediate | offset | restore_point
//! offset = "30m"                  # with recovery = "offset": snapshot end + offset
//! restore_point = "before-deploy" # with recovery = "restore_point"
//! [scratch]
//! dir = "/var/tmp/radd-drills"    port_range = [55000, 55999]    timeout = "15m"
//! [checks]
//! checksums = true  wal_chain = true  starts = true  page_integrity = true
//! rpo = { max = "5m" }            # measured from radd's heartbeat table
//! [[checks.sql]]
//! name = "accounts"  query = "SELECT count(*) FROM pgbench_accounts"  expect_min = 100000
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Error;

/// A drill, as written in `drills/<name>.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillDefinition {
    /// Name used in events, metrics and `radd drill run <name>`.
    pub name: String,
    /// `pg` (default): a base backup restored into a scratch PostgreSQL; `fs`: a file-tree
    /// snapshot restored into a scratch directory.
    #[serde(default)]
    pub kind: DrillKind,
    /// Cron schedule (6 fields with seconds), UTC.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// `latest`, `random` or a snapshot id (prefix).
    #[serde(default = "default_snapshot")]
    pub snapshot: String,
    /// Where recovery stops.
    #[serde(default)]
    pub target: TargetSpec,
    /// Scratch instance settings.
    #[serde(default)]
    pub scratch: ScratchSpec,
    /// Checks to run.
    #[serde(default)]
    pub checks: ChecksSpec,
}

/// What a drill restores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillKind {
    /// A PostgreSQL base backup plus WAL.
    #[default]
    Pg,
    /// A file-tree snapshot.
    Fs,
}

/// `[target]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// `latest` (default), `immediate`, `offset` or `restore_point`.
    #[serde(default)]
    pub recovery: RecoveryKind,
    /// Duration after the snapshot's end, for `offset`.
    pub offset: Option<String>,
    /// Restore point name, for `restore_point`.
    pub restore_point: Option<String>,
}

/// How far a drill recovers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryKind {
    /// All archived WAL (measures RPO).
    #[default]
    Latest,
    /// Only to consistency.
    Immediate,
    /// Snapshot end + offset.
    Offset,
    /// A named restore point.
    RestorePoint,
}

/// `[scratch]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchSpec {
    /// Parent directory of scratch data directories (default: the config's drills scratch dir).
    pub dir: Option<PathBuf>,
    /// Inclusive port range to pick a free port from (default: any free port).
    pub port_range: Option<[u16; 2]>,
    /// The whole drill must finish within this time ("15m").
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

impl Default for ScratchSpec {
    fn default() -> Self {
        ScratchSpec { dir: None, port_range: None, timeout: default_timeout() }
    }
}

/// `[checks]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksSpec {
    /// Every restored file matches its manifest SHA-256, every WAL segment its digest.
    #[serde(default = "yes")]
    pub checksums: bool,
    /// No gap in the WAL chain from backup start to the target.
    #[serde(default = "yes")]
    pub wal_chain: bool,
    /// No timeline in the archive diverged (a parent that kept archiving after a fork: a
    /// restored copy archiving into this repository, or a split brain).
    #[serde(default = "yes")]
    pub timeline: bool,
    /// PostgreSQL's `pg_verifybackup` confirms the restored files against the `backup_manifest`
    /// the restore writes (backup-time checksums): a tool radd did not write.
    #[serde(default = "yes")]
    pub pg_verifybackup: bool,
    /// The scratch instance reaches consistency and is promoted within the timeout.
    #[serde(default = "yes")]
    pub starts: bool,
    /// pg_amcheck over all databases and pg_checksums --check.
    #[serde(default = "yes")]
    pub page_integrity: bool,
    /// Measured RPO from radd's heartbeat table, with an optional maximum.
    pub rpo: Option<RpoSpec>,
    /// SQL probes.
    #[serde(default)]
    pub sql: Vec<SqlProbe>,
    /// Fs drills: also compare files unchanged since the snapshot with the live tree.
    #[serde(default)]
    pub compare_source: bool,
}

impl Default for ChecksSpec {
    fn default() -> Self {
        ChecksSpec {
            checksums: true,
            wal_chain: true,
            timeline: true,
            pg_verifybackup: true,
            starts: true,
            page_integrity: true,
            rpo: None,
            sql: Vec::new(),
            compare_source: false,
        }
    }
}

/// `rpo = { max = "5m" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpoSpec {
    /// Fail when the measured data-loss window is longer than this.
    pub max: Option<String>,
}

/// One SQL probe: a query whose first column of the first row is compared.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlProbe {
    /// Name in the report.
    pub name: String,
    /// The query.
    pub query: String,
    /// Database (default `postgres`).
    pub database: Option<String>,
    /// The value (as text) must equal this.
    pub expect: Option<String>,
    /// The value must be an integer ≥ this (row counts).
    pub expect_min: Option<i64>,
    /// The value must equal the same query's result on the source cluster.
    #[serde(default)]
    pub expect_source: bool,
    /// The value is a timestamp no older than this before the snapshot's end (freshness).
    pub max_age: Option<String>,
}

fn default_schedule() -> String {
    "0 0 2 2 * *".into()
}
fn default_snapshot() -> String {
    "latest".into()
}
fn default_timeout() -> String {
    "15m".into()
}
fn yes() -> bool {
    true
}

/// Parses a duration such as "15m" or "90s".
pub fn parse_duration(what: &str, value: &str) -> Result<Duration, Error> {
    humantime::parse_duration(value).map_err(|e| Error::Definition {
        path: PathBuf::from(what),
        message: format!("invalid duration {value:?}: {e}"),
    })
}

impl DrillDefinition {
    /// Reads and validates a drill file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Definition { path: path.to_owned(), message: e.to_string() })?;
        let def: DrillDefinition =
            toml::from_str(&text).map_err(|e| Error::Definition { path: path.to_owned(), message: e.to_string() })?;
        def.validate(path)?;
        Ok(def)
    }

    fn validate(&self, path: &Path) -> Result<(), Error> {
        let mut problems = Vec::new();
        if let Err(e) = crate::config::parse_cron(&self.schedule) {
            problems.push(format!("schedule: invalid cron expression {:?}: {e}", self.schedule));
        }
        if let Err(e) = humantime::parse_duration(&self.scratch.timeout) {
            problems.push(format!("scratch.timeout: {e}"));
        }
        match self.target.recovery {
            RecoveryKind::Offset
                if self.target.offset.as_deref().and_then(|o| humantime::parse_duration(o).ok()).is_none() =>
            {
                problems.push("target.offset: required (e.g. \"30m\") with recovery = \"offset\"".into());
            }
            RecoveryKind::RestorePoint if self.target.restore_point.is_none() => {
                problems.push("target.restore_point: required with recovery = \"restore_point\"".into());
            }
            _ => {}
        }
        if let Some([lo, hi]) = self.scratch.port_range
            && lo > hi
        {
            problems.push("scratch.port_range: first port must not exceed the second".into());
        }
        for (i, probe) in self.checks.sql.iter().enumerate() {
            let expectations =
                [probe.expect.is_some(), probe.expect_min.is_some(), probe.expect_source, probe.max_age.is_some()];
            if expectations.iter().filter(|&&e| e).count() != 1 {
                problems.push(format!(
                    "checks.sql[{i}] ({}): set exactly one of expect, expect_min, expect_source, max_age",
                    probe.name
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Definition { path: path.to_owned(), message: problems.join("; ") })
        }
    }

    /// The drill's timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        humantime::parse_duration(&self.scratch.timeout).unwrap_or(Duration::from_secs(900))
    }
}

/// Finds a drill by name in `dir` (`<dir>/<name>.toml` or any file whose `name` matches), or
/// loads `name_or_file` directly when it is a path to a file.
pub fn find(dir: &Path, name_or_file: &str) -> Result<(PathBuf, DrillDefinition), Error> {
    let as_path = Path::new(name_or_file);
    if as_path.is_file() {
        return Ok((as_path.to_owned(), DrillDefinition::load(as_path)?));
    }
    for (path, def) in list(dir)? {
        if def.name == name_or_file {
            return Ok((path, def));
        }
    }
    Err(Error::UnknownDrill { name: name_or_file.to_owned(), dir: dir.to_owned() })
}

/// Every drill in `dir`, sorted by file name. An invalid file is an error, not skipped.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, DrillDefinition)>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Definition { path: dir.to_owned(), message: e.to_string() })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.into_iter().map(|p| DrillDefinition::load(&p).map(|d| (p, d))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_drills_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("drills");
        let drills = list(&dir).unwrap();
        assert!(drills.iter().any(|(_, d)| d.name == "monthly-rad" && d.schedule == "0 0 2 2 * *"));
    }

    #[test]
    fn invalid_definitions_name_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "name = \"x\"\nschedule = \"every day\"\n[target]\nrecovery = \"offset\"\n[[checks.sql]]\nname = \"p\"\nquery = \"select 1\"\n").unwrap();
        let err = DrillDefinition::load(&path).unwrap_err().to_string();
        assert!(err.contains("schedule") && err.contains("target.offset") && err.contains("checks.sql[0]"), "{err}");
    }
}
