//! `[scratch]`: where `radd restore --scratch` puts its managed instances, how long they live,
//! and the limits that keep ad-hoc restores from filling the host.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ByteSize;

/// `[scratch]`: managed scratch instances (`radd restore --scratch`, `radd scratch`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScratchConfig {
    /// Parent of the instance directories (default: `[drills] scratch_dir`).
    pub dir: Option<PathBuf>,
    /// How long an instance lives when `--ttl` is not given (`"4h"`); the daemon stops it then.
    #[serde(default = "default_ttl")]
    pub default_ttl: String,
    /// Most instances at the same time on this host.
    #[serde(default = "default_max_instances")]
    pub max_instances: usize,
    /// Most bytes all instances may hold together (existing ones measured on disk, a new one
    /// counted at its snapshot's size).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Longest a scratch restore waits for PostgreSQL to reach the target after the files are
    /// restored (WAL replay).
    #[serde(default = "default_start_timeout")]
    pub start_timeout: String,
}

impl Default for ScratchConfig {
    fn default() -> Self {
        ScratchConfig {
            dir: None,
            default_ttl: default_ttl(),
            max_instances: default_max_instances(),
            max_bytes: default_max_bytes(),
            start_timeout: default_start_timeout(),
        }
    }
}

fn default_ttl() -> String {
    "4h".into()
}
fn default_max_instances() -> usize {
    4
}
fn default_max_bytes() -> ByteSize {
    ByteSize(50 << 30)
}
fn default_start_timeout() -> String {
    "30m".into()
}

impl ScratchConfig {
    /// [`ScratchConfig::default_ttl`] as a duration (validated with the config).
    #[must_use]
    pub fn default_ttl(&self) -> Duration {
        humantime::parse_duration(&self.default_ttl).unwrap_or(Duration::from_secs(4 * 3600))
    }

    /// [`ScratchConfig::start_timeout`] as a duration (validated with the config).
    #[must_use]
    pub fn start_timeout(&self) -> Duration {
        humantime::parse_duration(&self.start_timeout).unwrap_or(Duration::from_secs(1800))
    }

    /// "scratch.key: problem" lines for invalid values.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [("scratch.default_ttl", &self.default_ttl), ("scratch.start_timeout", &self.start_timeout)]
        {
            if humantime::parse_duration(value).map_or(true, |d| d.is_zero()) {
                problems.push(format!("{key}: invalid duration {value:?} (e.g. \"4h\", \"30m\")"));
            }
        }
        if self.max_instances == 0 {
            problems.push("scratch.max_instances: must be at least 1".to_owned());
        }
        if self.max_bytes.0 == 0 {
            problems.push("scratch.max_bytes: must be more than 0 (e.g. \"50GiB\")".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_section_parses_and_bad_values_are_reported_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radd.toml");
        std::fs::write(
            &path,
            "[repository]\npath = \"r\"\n[scratch]\ndir = \"sc\"\ndefault_ttl = \"90m\"\nmax_bytes = \"1GiB\"\n",
        )
        .unwrap();
        let err = super::super::Config::load(&path).unwrap_err().to_string();
        assert!(!err.contains("scratch"), "{err}");
        std::fs::write(
            &path,
            "[repository]\npath = \"r\"\n[scratch]\ndefault_ttl = \"soon\"\nmax_instances = 0\nmax_byte = 1\n",
        )
        .unwrap();
        let err = super::super::Config::load(&path).unwrap_err().to_string();
        for key in ["scratch.default_ttl", "scratch.max_instances", "scratch.max_byte"] {
            assert!(err.contains(key), "{key} not reported: {err}");
        }
    }

    #[test]
    fn durations_parse() {
        let config = super::ScratchConfig { default_ttl: "90m".into(), ..super::ScratchConfig::default() };
        assert_eq!(config.default_ttl(), std::time::Duration::from_secs(5400));
        assert_eq!(super::ScratchConfig::default().max_bytes.0, 50 << 30);
    }
}
