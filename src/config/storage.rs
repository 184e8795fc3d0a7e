//! `[repository]` limits on storage requests: how long one request may take and for how long a
//! request that failed for a passing reason (a 5xx or SlowDown reply, a reset connection, a
//! timeout, an outage) is retried before the operation fails.
//!
//! Without them a request whose reply never comes waits forever (a backup that hangs instead of
//! failing), and a single reset connection fails a backup that has run for hours. The values
//! are bounded so that a typo cannot make radd wait for days.

use std::time::Duration;

use super::RepositoryConfig;

/// Default of `repository.request_timeout`.
pub(super) fn default_request_timeout() -> String {
    "60s".into()
}
/// Default of `repository.connect_timeout`.
pub(super) fn default_connect_timeout() -> String {
    "5s".into()
}
/// Default of `repository.retry_budget`.
pub(super) fn default_retry_budget() -> String {
    "5m".into()
}

/// Accepted range of `repository.request_timeout`.
const REQUEST_TIMEOUT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// Accepted range of `repository.connect_timeout`.
const CONNECT_TIMEOUT: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(300));
/// Accepted range of `repository.retry_budget` (zero: no retries).
const RETRY_BUDGET: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(3600));

fn parse(value: &str, fallback: &str) -> Duration {
    humantime::parse_duration(value).or_else(|_| humantime::parse_duration(fallback)).unwrap_or(Duration::from_secs(60))
}

impl RepositoryConfig {
    /// Longest one S3 request may take, from connecting to the last byte of the reply
    /// (validated with the config).
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        parse(&self.request_timeout, &default_request_timeout())
    }

    /// Longest connecting to the S3 endpoint may take (validated with the config).
    #[must_use]
    pub fn connect_timeout(&self) -> Duration {
        parse(&self.connect_timeout, &default_connect_timeout())
    }

    /// Total time one storage operation may spend retrying transient failures (validated with
    /// the config; zero disables retries).
    #[must_use]
    pub fn retry_budget(&self) -> Duration {
        parse(&self.retry_budget, &default_retry_budget())
    }

    /// Problems of the request limits, as "key.path: what is wrong" lines.
    pub(super) fn storage_problems(&self) -> Vec<String> {
        let checks = [
            ("repository.request_timeout", &self.request_timeout, REQUEST_TIMEOUT),
            ("repository.connect_timeout", &self.connect_timeout, CONNECT_TIMEOUT),
            ("repository.retry_budget", &self.retry_budget, RETRY_BUDGET),
        ];
        let mut problems = Vec::new();
        for (key, value, (min, max)) in checks {
            match humantime::parse_duration(value) {
                Err(_) => problems.push(format!("{key}: invalid duration {value:?} (e.g. \"30s\", \"5m\")")),
                Ok(d) if d < min || d > max => problems.push(format!(
                    "{key}: must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                )),
                Ok(_) => {}
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository(toml_text: &str) -> RepositoryConfig {
        toml::from_str(toml_text).expect("parses")
    }

    #[test]
    fn defaults_and_bounds() {
        let defaults = repository("path = \"/r\"");
        assert_eq!(defaults.request_timeout(), Duration::from_secs(60));
        assert_eq!(defaults.connect_timeout(), Duration::from_secs(5));
        assert_eq!(defaults.retry_budget(), Duration::from_secs(300));
        assert!(defaults.storage_problems().is_empty());
        let zero = repository("path = \"/r\"\nretry_budget = \"0s\"");
        assert!(zero.storage_problems().is_empty(), "no retries is allowed");
        let bad =
            repository("path = \"/r\"\nrequest_timeout = \"0s\"\nconnect_timeout = \"soon\"\nretry_budget = \"30d\"");
        let problems = bad.storage_problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("repository.request_timeout: must be between 1s and 1h"), "{problems:?}");
        assert!(problems[1].starts_with("repository.connect_timeout: invalid duration"), "{problems:?}");
        assert!(problems[2].starts_with("repository.retry_budget: must be between 0s and 1h"), "{problems:?}");
    }
}
