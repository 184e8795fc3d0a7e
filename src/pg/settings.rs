//! `[postgres]` and `[postgres.primary]`: how radd reaches the cluster it backs up. The schema
//! lives here, with the code that connects, so this layer needs nothing of the configuration
//! module (which re-exports these types as part of radd.toml).
//!
//! Large installations take base backups from a streaming standby so the copy does not load the
//! primary. A standby cannot switch WAL, so the segment holding the backup's stop position is
//! archived only when the primary switches: radd connects to the primary for that (and for the
//! heartbeat, which a read-only standby cannot write). Only connection settings live here; the
//! password, if any, comes from the environment variable named by `password_env`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[postgres]`: connection and paths of the cluster to back up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostgresConfig {
    /// Host name, IP address, or socket directory.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Role with permission to run pg_backup_start/pg_backup_stop.
    #[serde(default = "default_user")]
    pub user: String,
    /// Database to connect to.
    #[serde(default = "default_user")]
    pub dbname: String,
    /// Name of an environment variable holding the password, if one is needed.
    pub password_env: Option<String>,
    /// Data directory (default: asked from the server with `SHOW data_directory`).
    pub data_dir: Option<PathBuf>,
    /// Directory of initdb/pg_ctl/postgres (scratch instances and `radd demo`).
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// `[postgres.primary]`: the primary, when `[postgres]` is a standby (backups from a standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<PrimaryConfig>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: default_host(),
            port: default_port(),
            user: default_user(),
            dbname: default_user(),
            password_env: None,
            data_dir: None,
            bin_dir: default_bin_dir(),
            primary: None,
        }
    }
}

fn default_host() -> String {
    "/var/run/postgresql".into()
}
fn default_port() -> u16 {
    5432
}
fn default_user() -> String {
    "postgres".into()
}
fn default_bin_dir() -> PathBuf {
    "/usr/lib/postgresql/15/bin".into()
}

/// `[postgres.primary]`: connection to the primary of the standby being backed up. Every key
/// but `host` defaults to the value of the same key in `[postgres]` (usually the same role and
/// database on another host).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrimaryConfig {
    /// Host name, IP address, or socket directory of the primary (required).
    pub host: String,
    /// Port (default: `[postgres].port`).
    pub port: Option<u16>,
    /// Role (default: `[postgres].user`); needs `pg_switch_wal` and, for the heartbeat, write
    /// access to the `radd` schema.
    pub user: Option<String>,
    /// Database (default: `[postgres].dbname`).
    pub dbname: Option<String>,
    /// Name of an environment variable holding the password (default: `[postgres].password_env`).
    pub password_env: Option<String>,
}

impl PostgresConfig {
    /// The primary's connection settings, when `[postgres.primary]` is configured, in the shape
    /// [`super::connect`] takes (paths and binaries stay those of `[postgres]`).
    #[must_use]
    pub fn primary_connection(&self) -> Option<PostgresConfig> {
        let primary = self.primary.as_ref()?;
        Some(PostgresConfig {
            host: primary.host.clone(),
            port: primary.port.unwrap_or(self.port),
            user: primary.user.clone().unwrap_or_else(|| self.user.clone()),
            dbname: primary.dbname.clone().unwrap_or_else(|| self.dbname.clone()),
            password_env: primary.password_env.clone().or_else(|| self.password_env.clone()),
            primary: None,
            ..self.clone()
        })
    }

    /// Where writes (the heartbeat) go: the primary when one is configured, else `[postgres]`.
    #[must_use]
    pub fn writable(&self) -> PostgresConfig {
        self.primary_connection().unwrap_or_else(|| self.clone())
    }

    /// Problems of `[postgres.primary]`, as "key.path: what is wrong" lines (config validation
    /// reports them with the rest).
    pub fn primary_problems(&self) -> Vec<String> {
        let Some(primary) = &self.primary else { return Vec::new() };
        let mut problems = Vec::new();
        if primary.host.trim().is_empty() {
            problems.push("postgres.primary.host: must not be empty".to_owned());
        }
        if primary.port == Some(0) {
            problems.push("postgres.primary.port: must not be 0".to_owned());
        }
        if primary.password_env.as_deref().is_some_and(str::is_empty) {
            problems.push("postgres.primary.password_env: must name an environment variable".to_owned());
        }
        problems
    }
}
