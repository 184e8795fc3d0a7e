//! The GitLab issues sink: one issue per event, labelled so that boards and filters can tell
//! changes from incidents and sort incidents by severity.

use std::fmt::Write as _;

use reqwest::Url;
use serde_json::json;
use zeroize::Zeroizing;

use super::sinks::{check_response, http_client, parse_url};
use super::{Event, EventKind, GitLabConfig, Result, SendError};

/// GitLab's limit on issue titles; longer titles are refused with 400, which would block the
/// queue, so they are cut.
const MAX_TITLE_CHARS: usize = 255;

/// Files events as issues through `POST /api/v4/projects/:id/issues`. The token is held in
/// memory only (zeroed on drop), sent in the `PRIVATE-TOKEN` header, and never logged, printed
/// by `Debug`, or put in an error.
pub struct GitLabSink {
    client: reqwest::Client,
    issues_url: Url,
    token: Zeroizing<String>,
    token_env: Option<String>,
    labels: Vec<String>,
}

impl std::fmt::Debug for GitLabSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLabSink")
            .field("issues_url", &self.issues_url.as_str())
            .field("token", &"<redacted>")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl GitLabSink {
    /// A sink for project `project_id` (numeric id or `group/project` path, URL-encoded here)
    /// on the GitLab at `base_url`, adding `labels` to every issue.
    ///
    /// # Errors
    /// [`Error::BadUrl`](super::Error::BadUrl) when `base_url` is not an http(s) URL; [`Error::Client`](super::Error::Client) when the HTTP
    /// client cannot be built.
    pub fn new(base_url: &str, project_id: &str, token: String, labels: Vec<String>) -> Result<Self> {
        parse_url("gitlab", base_url)?;
        let issues =
            format!("{}/api/v4/projects/{}/issues", base_url.trim_end_matches('/'), encode_path_segment(project_id));
        Ok(GitLabSink {
            client: http_client()?,
            issues_url: parse_url("gitlab", &issues)?,
            token: Zeroizing::new(token),
            token_env: None,
            labels,
        })
    }

    /// A sink from `[events.gitlab]`, reading the token from the environment variable it names.
    ///
    /// # Errors
    /// [`Error::MissingToken`](super::Error::MissingToken) naming the variable when it is unset or empty; otherwise as
    /// [`GitLabSink::new`].
    pub fn from_config(cfg: &GitLabConfig) -> Result<Self> {
        let token = super::sinks::token_from_env("gitlab", &cfg.token_env)?;
        let mut sink = GitLabSink::new(&cfg.url, &cfg.project_id, token, cfg.labels.clone())?;
        sink.token_env = Some(cfg.token_env.clone());
        Ok(sink)
    }

    /// Creates one issue for `event`.
    ///
    /// # Errors
    /// [`SendError::Retryable`] on network errors, timeouts, 429 and 5xx;
    /// [`SendError::Permanent`] on any other non-2xx answer (bad token, unknown project).
    pub async fn send(&self, event: &Event) -> Result<(), SendError> {
        let body = issue_body(event, &self.labels);
        let mut token = reqwest::header::HeaderValue::from_str(&self.token).map_err(|_| {
            SendError::Permanent(format!(
                "gitlab sink: the token{} contains characters not allowed in an HTTP header",
                self.token_env.as_ref().map(|v| format!(" in ${v}")).unwrap_or_default()
            ))
        })?;
        token.set_sensitive(true);
        let response =
            self.client.post(self.issues_url.clone()).header("PRIVATE-TOKEN", token).json(&body).send().await;
        let hint = match &self.token_env {
            Some(var) => format!("check that the token in ${var} has api scope and can create issues in the project"),
            None => "check the token's scope and the project id".to_owned(),
        };
        check_response("gitlab", &self.issues_url, response, &hint).await
    }
}

/// The JSON body of the issue: `title`, markdown `description`, comma-separated `labels`.
pub(super) fn issue_body(event: &Event, extra_labels: &[String]) -> serde_json::Value {
    let prefix = match event.severity {
        Some(severity) => severity.as_str(),
        None => event.kind.as_str(),
    };
    let title: String = format!("[{prefix}] {}", event.title).chars().take(MAX_TITLE_CHARS).collect();

    let mut labels = vec![event.kind.as_str().to_owned()];
    if let (EventKind::Incident, Some(severity)) = (event.kind, event.severity) {
        labels.push(severity.as_str().to_owned());
    }
    labels.push("RAD".to_owned());
    for label in extra_labels {
        if !labels.contains(label) {
            labels.push(label.clone());
        }
    }

    json!({ "title": title, "description": description(event), "labels": labels.join(",") })
}

fn description(event: &Event) -> String {
    let mut text = String::new();
    let severity = event.severity.map(|s| format!(" {s}")).unwrap_or_default();
    let _ = writeln!(text, "**{}{severity}** reported by radd\n", event.kind);
    let _ = writeln!(text, "- time: {}", event.time);
    let _ = writeln!(text, "- source: `{}`", event.source);
    let _ = writeln!(text, "- event id: `{}`", event.id);
    for (key, value) in &event.labels {
        let _ = writeln!(text, "- {key}: `{value}`");
    }
    let details = serde_json::to_string_pretty(&event.details).unwrap_or_else(|_| "null".into());
    let _ = write!(text, "\n```json\n{details}\n```\n");
    text
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so `group/project` becomes
/// `group%2Fproject` as the GitLab API requires.
fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Severity;

    #[test]
    fn project_paths_are_encoded() {
        assert_eq!(encode_path_segment("42"), "42");
        assert_eq!(encode_path_segment("ops/data bases"), "ops%2Fdata%20bases");
        let sink = GitLabSink::new("https://gitlab.example/", "ops/db", "t".into(), vec![]).unwrap();
        assert_eq!(sink.issues_url.as_str(), "https://gitlab.example/api/v4/projects/ops%2Fdb/issues");
    }

    #[test]
    fn issue_title_labels_and_description() {
        let event = Event::incident(Severity::S2, "drill.monthly-rad", "drill monthly-rad failed: sql")
            .label("host", "db1")
            .details(serde_json::json!({"rto_seconds": 12}));
        let body = issue_body(&event, &["db".into(), "RAD".into()]);
        assert_eq!(body["title"], "[S2] drill monthly-rad failed: sql");
        assert_eq!(body["labels"], "incident,S2,RAD,db");
        let description = body["description"].as_str().unwrap();
        for needle in ["drill.monthly-rad", &event.time, "host: `db1`", "```json", "\"rto_seconds\": 12"] {
            assert!(description.contains(needle), "{needle} missing in {description}");
        }

        let change = Event::change("backup.pg", "base backup taken");
        let body = issue_body(&change, &[]);
        assert_eq!(body["title"], "[change] base backup taken");
        assert_eq!(body["labels"], "change,RAD");

        let long = Event::change("backup.pg", "x".repeat(400));
        assert_eq!(issue_body(&long, &[])["title"].as_str().unwrap().chars().count(), MAX_TITLE_CHARS);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let sink = GitLabSink::new("http://127.0.0.1:1", "1", "glpat-secret".into(), vec![]).unwrap();
        assert!(!format!("{sink:?}").contains("glpat-secret"));
    }
}
