//! `[events]` in radd.toml: where the log lives and which sinks receive it. Tokens are never
//! inline: only the *name* of the environment variable holding them is configured, so the
//! config file can be world-readable and `radd config show` has nothing to redact.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

/// `[events]`: the local log (always on) and optional sinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsConfig {
    /// Directory of `events.jsonl` and the sink cursors (default `/var/lib/radd/events`).
    pub dir: PathBuf,
    /// `[events.gitlab]`: file events as GitLab issues.
    pub gitlab: Option<GitLabConfig>,
    /// `[events.webhook]`: POST each event as JSON.
    pub webhook: Option<WebhookConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { dir: PathBuf::from("/var/lib/radd/events"), gitlab: None, webhook: None }
    }
}

/// `[events.gitlab]`: one issue per event in a GitLab project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitLabConfig {
    /// Base URL of the GitLab instance, e.g. `https://gitlab.example.com`.
    pub url: String,
    /// Numeric id (`42`) or full path (`ops/databases`) of the project; TOML may give either a
    /// string or an integer.
    #[serde(deserialize_with = "string_or_integer")]
    pub project_id: String,
    /// Name of the environment variable holding a token with `api` scope
    /// (default `RADD_GITLAB_TOKEN`).
    #[serde(default = "default_gitlab_token_env")]
    pub token_env: String,
    /// Labels added to every issue besides `change`/`incident`, the severity and `RAD`.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// `[events.webhook]`: a generic JSON receiver (chat bridge, alert manager, SIEM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    /// URL receiving `POST` with one event (the wire format) as the body.
    pub url: String,
    /// Name of the environment variable holding a bearer token, if the receiver wants one.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn default_gitlab_token_env() -> String {
    "RADD_GITLAB_TOKEN".to_owned()
}

fn string_or_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_form_parse() {
        let cfg: EventsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, EventsConfig::default());
        assert_eq!(cfg.dir, PathBuf::from("/var/lib/radd/events"));

        let cfg: EventsConfig = serde_json::from_value(serde_json::json!({
            "dir": "/tmp/ev",
            "gitlab": {"url": "https://gitlab.example", "project_id": 42, "labels": ["db"]},
            "webhook": {"url": "https://hooks.example/radd", "token_env": "HOOK_TOKEN"},
        }))
        .unwrap();
        let gitlab = cfg.gitlab.unwrap();
        assert_eq!(gitlab.project_id, "42");
        assert_eq!(gitlab.token_env, "RADD_GITLAB_TOKEN");
        assert_eq!(gitlab.labels, ["db"]);
        assert_eq!(cfg.webhook.unwrap().token_env.as_deref(), Some("HOOK_TOKEN"));
    }
}
