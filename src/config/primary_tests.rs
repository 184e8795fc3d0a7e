//! `[postgres.primary]` as loaded from radd.toml: defaults inherited from `[postgres]`, validation.

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
