//! Sinks: where events are forwarded after they are safe in the local log. A sink only sends
//! one event and says whether a failure is worth retrying; queueing, ordering and retries live
//! in [`crate::events::EventLog::deliver`], so every sink gets the same guarantees.

use std::time::Duration;

use reqwest::Url;
use zeroize::Zeroizing;

use super::gitlab::GitLabSink;
use super::{Error, Event, EventsConfig, Result, WebhookConfig};

/// Per-request timeout: a hung receiver must not stall the daemon's delivery loop.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one event was not delivered. Messages name the sink and URL, never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Network error, timeout, 429 or 5xx: the receiver may accept the event later.
    #[error("{0}")]
    Retryable(String),
    /// The receiver refused the event (bad token, unknown project, 4xx): retrying the same
    /// request cannot help until someone fixes the configuration.
    #[error("{0}")]
    Permanent(String),
}

/// A configured destination for events. An enum rather than a trait object so the async
/// `send` needs no boxing and the set of sinks is visible in one place.
#[derive(Debug)]
pub enum Sink {
    /// GitLab issues.
    GitLab(GitLabSink),
    /// Generic JSON webhook.
    Webhook(WebhookSink),
}

impl Sink {
    /// Stable name (`gitlab`, `webhook`): names the sink's cursor file and metric label.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Sink::GitLab(_) => "gitlab",
            Sink::Webhook(_) => "webhook",
        }
    }

    /// Sends one event, once (no retry here).
    ///
    /// # Errors
    /// [`SendError`] saying whether a retry may help.
    pub async fn send(&self, event: &Event) -> Result<(), SendError> {
        match self {
            Sink::GitLab(sink) => sink.send(event).await,
            Sink::Webhook(sink) => sink.send(event).await,
        }
    }
}

/// POSTs each event as its wire-format JSON, with an optional bearer token (held in memory
/// only, never logged or printed by `Debug`).
pub struct WebhookSink {
    client: reqwest::Client,
    url: Url,
    token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.url.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// A webhook sink posting to `url`, sending `Authorization: Bearer <token>` when given.
    ///
    /// # Errors
    /// [`Error::BadUrl`] when `url` is not http(s); [`Error::Client`] when the HTTP client
    /// cannot be built.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        Ok(WebhookSink { client: http_client()?, url: parse_url("webhook", url)?, token: token.map(Zeroizing::new) })
    }

    /// A sink from `[events.webhook]`, reading the token from the variable it names, if any.
    ///
    /// # Errors
    /// [`Error::MissingToken`] naming the variable when it is configured but unset or empty.
    pub fn from_config(cfg: &WebhookConfig) -> Result<Self> {
        let token = match &cfg.token_env {
            Some(var) => Some(token_from_env("webhook", var)?),
            None => None,
        };
        WebhookSink::new(&cfg.url, token)
    }

    /// POSTs one event.
    ///
    /// # Errors
    /// As [`GitLabSink::send`].
    pub async fn send(&self, event: &Event) -> Result<(), SendError> {
        let mut request = self.client.post(self.url.clone()).json(event);
        if let Some(token) = &self.token {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.as_str()));
            let Ok(mut value) = value else {
                return Err(SendError::Permanent(
                    "webhook sink: the token contains characters not allowed in an HTTP header".into(),
                ));
            };
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let hint = "check the webhook URL and token";
        check_response("webhook", &self.url, request.send().await, hint).await
    }
}

/// Builds every sink `[events]` configures, in a fixed order (gitlab, webhook).
///
/// # Errors
/// The first sink that cannot be built: [`Error::MissingToken`] (names the variable, never a
/// value), [`Error::BadUrl`], [`Error::Client`].
pub fn sinks_from_config(cfg: &EventsConfig) -> Result<Vec<Sink>> {
    let mut sinks = Vec::new();
    if let Some(gitlab) = &cfg.gitlab {
        sinks.push(Sink::GitLab(GitLabSink::from_config(gitlab)?));
    }
    if let Some(webhook) = &cfg.webhook {
        sinks.push(Sink::Webhook(WebhookSink::from_config(webhook)?));
    }
    Ok(sinks)
}

/// The shared client settings: 10 s timeout, and no redirects, so a token is never forwarded
/// to another host and a POST is never silently turned into a GET.
pub(super) fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Client { message: chain(&e) })
}

pub(super) fn parse_url(sink: &'static str, url: &str) -> Result<Url> {
    let bad = |message: String| Error::BadUrl { sink, url: url.to_owned(), message };
    let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!("scheme {} is not http or https", parsed.scheme())));
    }
    Ok(parsed)
}

pub(super) fn token_from_env(sink: &'static str, var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        _ => Err(Error::MissingToken { sink, var: var.to_owned() }),
    }
}

/// 2xx = delivered; 429, 5xx and transport errors = retry; anything else = permanent.
pub(super) async fn check_response(
    sink: &str,
    url: &Url,
    response: reqwest::Result<reqwest::Response>,
    hint: &str,
) -> Result<(), SendError> {
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            return Err(SendError::Retryable(format!("{sink} sink: POST {url} failed: {}", chain(&e))));
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let snippet: String = body.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
    let message = format!("{sink} sink: POST {url} returned {status}: {snippet}");
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(SendError::Retryable(message))
    } else {
        Err(SendError::Permanent(format!("{message}; {hint}")))
    }
}

/// An error and its sources on one line: reqwest's own message alone ("error sending request")
/// does not say whether the connection was refused or timed out.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// HTTP tests (axum receivers on 127.0.0.1:0) live in sinks/tests.rs to keep this file short.
#[cfg(test)]
mod tests;
