//! Sinks against real HTTP receivers: an axum server on 127.0.0.1:0 that answers from a script
//! of status codes and records every request it accepted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};

use super::*;
use crate::events::{DeliveryReport, Event, EventLog, RetryPolicy, Severity};

const TOKEN: &str = "glpat-test-secret-token";

/// One request the receiver accepted (answered 2xx).
#[derive(Debug, Clone)]
struct Accepted {
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
}

#[derive(Debug, Default)]
struct Receiver {
    /// Status codes for the next requests; 201 once it is empty.
    script: VecDeque<u16>,
    attempts: usize,
    accepted: Vec<Accepted>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn record(State(shared): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut receiver = shared.lock().unwrap();
    receiver.attempts += 1;
    let status = receiver.script.pop_front().unwrap_or(201);
    if (200..300).contains(&status) {
        let body = serde_json::from_slice(&body).unwrap();
        receiver.accepted.push(Accepted { path: uri.path().to_owned(), headers, body });
    }
    StatusCode::from_u16(status).unwrap()
}

/// Starts a receiver answering `script` first; returns its address and shared state.
async fn serve(script: impl IntoIterator<Item = u16>) -> (SocketAddr, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Receiver { script: script.into_iter().collect(), ..Receiver::default() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(record).with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, shared)
}

/// An address nothing listens on: bound, then released.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn gitlab(addr: SocketAddr) -> Sink {
    let url = format!("http://{addr}");
    Sink::GitLab(GitLabSink::new(&url, "ops/databases", TOKEN.into(), vec!["db".into()]).unwrap())
}

fn fast(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, initial_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) }
}

fn log_with(titles: &[&str]) -> (tempfile::TempDir, EventLog) {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    for title in titles {
        log.append(&Event::change("backup.pg", *title)).unwrap();
    }
    (tmp, log)
}

fn accepted_titles(shared: &Shared) -> Vec<String> {
    let receiver = shared.lock().unwrap();
    receiver.accepted.iter().map(|a| a.body["title"].as_str().unwrap().to_owned()).collect()
}

fn cursor_file(log: &EventLog) -> Option<String> {
    std::fs::read_to_string(log.dir().join("sink-gitlab.cursor")).ok()
}

#[tokio::test]
async fn gitlab_sink_files_one_issue_per_event_with_labels_and_token() {
    let (_tmp, log) = log_with(&["base backup taken"]);
    let drill = Event::incident(Severity::S2, "drill.monthly-rad", "drill monthly-rad failed: wal_chain")
        .label("host", "db1")
        .details(serde_json::json!({"checks": {"wal_chain": "gap at 000000010000000000000007"}}));
    log.append(&drill).unwrap();
    log.append(&Event::incident(Severity::S1, "wal.archive", "WAL archiving stalled for 7 min")).unwrap();
    let (addr, shared) = serve([]).await;
    let sink = gitlab(addr);

    let report = log.deliver(&sink, fast(3)).await.unwrap();
    assert_eq!(report, DeliveryReport { delivered: 3, backlog: 0, last_error: None });

    let accepted = shared.lock().unwrap().accepted.clone();
    assert_eq!(accepted.len(), 3);
    for request in &accepted {
        assert_eq!(request.path, "/api/v4/projects/ops%2Fdatabases/issues");
        assert_eq!(request.headers["private-token"], TOKEN);
    }
    let fields = |i: usize| (accepted[i].body["title"].as_str().unwrap(), accepted[i].body["labels"].as_str().unwrap());
    assert_eq!(fields(0), ("[change] base backup taken", "change,RAD,db"));
    assert_eq!(fields(1), ("[S2] drill monthly-rad failed: wal_chain", "incident,S2,RAD,db"));
    assert_eq!(fields(2), ("[S1] WAL archiving stalled for 7 min", "incident,S1,RAD,db"));
    let description = accepted[1].body["description"].as_str().unwrap();
    assert!(
        description.contains("```json") && description.contains("gap at 000000010000000000000007"),
        "{description}"
    );
    assert!(description.contains("drill.monthly-rad") && description.contains(&drill.time), "{description}");

    // Nothing is sent twice.
    let again = log.deliver(&sink, fast(3)).await.unwrap();
    assert_eq!(again, DeliveryReport { delivered: 0, backlog: 0, last_error: None });
    assert_eq!(shared.lock().unwrap().attempts, 3);
    assert_eq!(cursor_file(&log).as_deref(), Some("3\n"));
}

#[tokio::test]
async fn unreachable_sink_keeps_events_queued_then_delivers_once_in_order() {
    let (_tmp, log) = log_with(&["e1", "e2", "e3"]);
    let down = gitlab(closed_port());
    let report = log.deliver(&down, fast(3)).await.unwrap();
    assert_eq!((report.delivered, report.backlog), (0, 3));
    let error = report.last_error.unwrap();
    assert!(error.contains("gitlab sink: POST http://127.0.0.1:"), "{error}");
    assert!(!error.contains(TOKEN), "token leaked: {error}");
    assert_eq!(cursor_file(&log), None, "cursor must not move");

    // The queue keeps growing while the sink is down.
    log.append(&Event::change("backup.pg", "e4")).unwrap();
    log.append(&Event::change("backup.pg", "e5")).unwrap();
    assert_eq!(log.backlog("gitlab").unwrap(), 5);

    // The sink comes back (at a new address; the cursor belongs to the sink name).
    let (addr, shared) = serve([]).await;
    let up = gitlab(addr);
    let report = log.deliver(&up, fast(3)).await.unwrap();
    assert_eq!(report, DeliveryReport { delivered: 5, backlog: 0, last_error: None });
    assert_eq!(accepted_titles(&shared), ["[change] e1", "[change] e2", "[change] e3", "[change] e4", "[change] e5"]);
    assert_eq!(log.deliver(&up, fast(3)).await.unwrap().delivered, 0);
    assert_eq!(shared.lock().unwrap().attempts, 5);
}

#[tokio::test]
async fn server_errors_are_retried_then_left_queued_until_the_sink_recovers() {
    let (_tmp, log) = log_with(&["e1", "e2", "e3"]);
    // Accepts e1, then answers 503 to everything the first call tries.
    let (addr, shared) = serve([201, 503, 503, 503]).await;
    let sink = gitlab(addr);
    let report = log.deliver(&sink, fast(3)).await.unwrap();
    assert_eq!((report.delivered, report.backlog), (1, 2));
    assert!(report.last_error.as_deref().unwrap().contains("503"), "{report:?}");
    assert_eq!(shared.lock().unwrap().attempts, 4, "1 success + 3 attempts at e2");
    assert_eq!(cursor_file(&log).as_deref(), Some("1\n"));
    assert_eq!(log.backlog("gitlab").unwrap(), 2);

    // Recovered: 429 once (retried within the call), then accepted.
    shared.lock().unwrap().script = VecDeque::from([429]);
    let report = log.deliver(&sink, fast(3)).await.unwrap();
    assert_eq!(report, DeliveryReport { delivered: 2, backlog: 0, last_error: None });
    assert_eq!(accepted_titles(&shared), ["[change] e1", "[change] e2", "[change] e3"]);
}

#[tokio::test]
async fn permanent_refusal_is_not_retried_and_stays_queued() {
    let (_tmp, log) = log_with(&["e1", "e2"]);
    let (addr, shared) = serve([401]).await;
    let sink = gitlab(addr);
    let report = log.deliver(&sink, fast(5)).await.unwrap();
    assert_eq!((report.delivered, report.backlog), (0, 2));
    let error = report.last_error.unwrap();
    assert!(error.contains("401") && error.contains("token"), "{error}");
    assert!(!error.contains(TOKEN), "token leaked: {error}");
    assert_eq!(shared.lock().unwrap().attempts, 1, "4xx must not be retried");

    let report = log.deliver(&sink, fast(5)).await.unwrap();
    assert_eq!(report, DeliveryReport { delivered: 2, backlog: 0, last_error: None });
    assert_eq!(accepted_titles(&shared), ["[change] e1", "[change] e2"]);
}

#[tokio::test]
async fn webhook_posts_the_wire_format_with_a_bearer_token() {
    let (_tmp, log) = log_with(&[]);
    let event = Event::incident(Severity::S3, "backup.fs", "snapshot partial").label("unreadable", "2");
    log.append(&event).unwrap();
    let (addr, shared) = serve([]).await;
    let sink = Sink::Webhook(WebhookSink::new(&format!("http://{addr}/hook"), Some("hook-token".into())).unwrap());
    assert_eq!(sink.name(), "webhook");
    assert!(!format!("{sink:?}").contains("hook-token"));

    let report = log.deliver(&sink, fast(2)).await.unwrap();
    assert_eq!(report.delivered, 1);
    let accepted = shared.lock().unwrap().accepted.clone();
    assert_eq!(accepted[0].path, "/hook");
    assert_eq!(accepted[0].headers["authorization"], "Bearer hook-token");
    assert_eq!(accepted[0].body, serde_json::to_value(&event).unwrap());
    // Each sink has its own cursor.
    assert_eq!(log.backlog("webhook").unwrap(), 0);
    assert_eq!(log.backlog("gitlab").unwrap(), 1);
}

#[test]
fn config_errors_name_the_variable_and_the_url() {
    let var = "RADD_TEST_EVENTS_TOKEN_THAT_IS_NEVER_SET";
    let mut cfg = EventsConfig::default();
    assert!(sinks_from_config(&cfg).unwrap().is_empty());

    cfg.gitlab = Some(crate::events::GitLabConfig {
        url: "https://gitlab.example".into(),
        project_id: "42".into(),
        token_env: var.into(),
        labels: vec![],
    });
    let err = sinks_from_config(&cfg).unwrap_err();
    assert!(matches!(&err, Error::MissingToken { var: v, .. } if v == var), "{err}");
    assert!(err.to_string().contains(var), "{err}");
    assert_eq!(err.kind(), crate::error::ErrorKind::Config);

    cfg.gitlab = None;
    cfg.webhook = Some(WebhookConfig { url: "ftp://hooks.example".into(), token_env: None });
    let err = sinks_from_config(&cfg).unwrap_err();
    assert!(matches!(err, Error::BadUrl { .. }) && err.to_string().contains("ftp://hooks.example"), "{err}");

    cfg.webhook = Some(WebhookConfig { url: "https://hooks.example/radd".into(), token_env: None });
    let sinks = sinks_from_config(&cfg).unwrap();
    assert_eq!(sinks.iter().map(Sink::name).collect::<Vec<_>>(), ["webhook"]);
}

#[test]
fn delivery_future_is_send_so_the_daemon_can_spawn_it() {
    fn assert_send<T: Send>(_: &T) {}
    let (_tmp, log) = log_with(&[]);
    let sink = gitlab(closed_port());
    let future = log.deliver(&sink, fast(1));
    assert_send(&future);
}
