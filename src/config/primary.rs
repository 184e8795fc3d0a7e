//! `[postgres.primary]`: the primary of a standby that `[postgres]` points at.
//!
//! Large installations take base backups from a streaming standby so the copy does not load the
//! primary. A standby cannot switch WAL, so the segment holding the backup's stop position is
//! archived only when the primary switches: radd connects to the primary for that (and for the
//! heartbeat, which a read-only standby cannot write). Only connection settings live here; the
//! password, if any, comes from the environment variable named by `password_env`.

use serde::{Deserialize, Serialize};

use super::PostgresConfig;

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
    /// [`crate::pg::connect`] takes (paths and binaries stay those of `[postgres]`).
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

    /// Problems of `[postgres.primary]`, as "key.path: what is wrong" lines.
    pub(super) fn primary_problems(&self) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(extra: &str) -> Result<Config, crate::config::Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radd.toml");
        let id = crate::crypto::Identity::generate();
        std::fs::write(
            &path,
            format!(
                "[repository]\npath = \"repo\"\n[keys]\nrecipients = [\"{}\"]\n{extra}",
                id.recipients().to_strings()[0]
            ),
        )
        .unwrap();
        Config::load(&path)
    }

    #[test]
    fn primary_inherits_unset_keys_from_postgres() {
        let config = load("[postgres]\nhost = \"10.0.0.2\"\nport = 5433\nuser = \"backup\"\npassword_env = \"PW\"\n[postgres.primary]\nhost = \"10.0.0.1\"\n").unwrap();
        let primary = config.postgres.primary_connection().expect("primary configured");
        assert_eq!((primary.host.as_str(), primary.port, primary.user.as_str()), ("10.0.0.1", 5433, "backup"));
        assert_eq!(primary.password_env.as_deref(), Some("PW"));
        assert_eq!(config.postgres.writable().host, "10.0.0.1");
    }

    #[test]
    fn without_primary_writes_go_to_postgres() {
        let config = load("[postgres]\nhost = \"10.0.0.2\"\n").unwrap();
        assert!(config.postgres.primary_connection().is_none());
        assert_eq!(config.postgres.writable().host, "10.0.0.2");
    }

    #[test]
    fn primary_needs_a_host() {
        let err = load("[postgres.primary]\nport = 5432\n").unwrap_err().to_string();
        assert!(err.contains("host"), "{err}");
        let err = load("[postgres.primary]\nhost = \"\"\npassword_env = \"\"\n").unwrap_err().to_string();
        assert!(err.contains("postgres.primary.host") && err.contains("postgres.primary.password_env"), "{err}");
    }
}
