//! The daemon's HTTP endpoints, built by a function tests can call without a socket.

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::State;

/// `/metrics` (Prometheus text format, job series refreshed from the event log on each scrape)
/// and `/healthz`.
pub fn app(state: State) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(state)
}

async fn metrics(AxumState(state): AxumState<State>) -> impl IntoResponse {
    let events = state.events.clone();
    match tokio::task::spawn_blocking(move || events.read_all()).await {
        Ok(Ok(all)) => state.metrics.observe_events(&all, chrono::Utc::now()),
        Ok(Err(error)) => tracing::error!(error = %error, "cannot read the event log for metrics"),
        Err(error) => tracing::error!(error = %error, "event log reader panicked"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}
