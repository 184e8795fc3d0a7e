//! `radd daemon`: runs the schedules (base backup, drills), writes the heartbeat, watches
//! archive lag, delivers events to sinks, and serves `/metrics` and `/healthz`.
//!
//! Wires modules together; holds no domain logic. SIGHUP reloads the configuration and
//! reschedules without dropping running jobs. SIGTERM/SIGINT become one shutdown signal:
//! scheduling stops, running jobs get `daemon.shutdown_grace` to finish, then are cancelled —
//! dropping a job tears down its scratch instance and aborts an unfinished backup, whose
//! snapshot is then simply never committed.

mod http;
mod schedule;
mod scratch_reaper;
mod watch;

use std::sync::Arc;

use tokio::sync::watch as signal_watch;
use tokio::task::JoinSet;

pub use http::app;

use crate::config::Config;
use crate::events::EventLog;
use crate::jobs;
use crate::metrics::Metrics;

/// Shared state of the running daemon.
#[derive(Clone)]
pub struct State {
    /// Configuration, loaded at start and at each reload (SIGHUP).
    pub config: Arc<Config>,
    /// The production event log.
    pub events: Arc<EventLog>,
    /// Every metric.
    pub metrics: Metrics,
    /// restore_command written into scratch instances.
    pub restore_command: String,
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {address}: {source}; set daemon.listen to a free address")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A schedule or duration is invalid.
    #[error("{0}")]
    Schedule(String),
}

/// Loads the configuration again (SIGHUP): the path the daemon was started with, re-read.
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Runs until SIGTERM or SIGINT. SIGHUP re-reads the configuration with `reload` and
/// reschedules: running jobs finish under the configuration they started with, new runs use the
/// new one; a configuration that does not load is logged and the running one kept.
pub async fn run(config: Config, restore_command: String, reload: ConfigLoader) -> Result<(), crate::Error> {
    let events = Arc::new(jobs::event_log(&config)?);
    let mut state = State { config: Arc::new(config), events, metrics: Metrics::new(), restore_command };
    let (shutdown_tx, shutdown_rx) = signal_watch::channel(false);
    let mut signals = Signals::new();

    let listener = tokio::net::TcpListener::bind(&state.config.daemon.listen).await.map_err(|source| {
        crate::Error::Daemon(Error::Listen { address: state.config.daemon.listen.clone(), source })
    })?;
    tracing::info!(address = %state.config.daemon.listen, "serving /metrics and /healthz");
    let server = {
        let mut stop = shutdown_rx.clone();
        let app = app(state.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %error, "HTTP server failed");
            }
        })
    };

    let mut tasks = JoinSet::new();
    let locks = schedule::TaskLocks::default();
    let list = schedule::jobs(&state.config)?;
    let mut generation = start(&state, list, &locks, &shutdown_rx, &mut tasks);
    state.metrics.config_reloaded(true);
    while signals.next().await == Signal::Reload {
        match reconfigure(&state, &reload) {
            Ok((next, list)) => {
                let _ = generation.send(true);
                state = next;
                generation = start(&state, list, &locks, &shutdown_rx, &mut tasks);
                state.metrics.config_reloaded(true);
                tracing::info!(
                    "configuration reloaded: jobs rescheduled; running jobs finish under the previous configuration"
                );
            }
            Err(error) => {
                state.metrics.config_reloaded(false);
                tracing::error!(error = %error, "configuration not reloaded: the daemon keeps running with the previous one; fix the file and send SIGHUP again");
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    tracing::info!("shutdown requested: no new jobs; waiting for running ones");
    let _ = generation.send(true);
    let _ = shutdown_tx.send(true);
    let grace = state.config.daemon.shutdown_grace.0;
    let finished = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(?grace, "jobs still running after the grace period: cancelling them");
        tasks.shutdown().await;
    }
    let _ = server.await;
    tracing::info!("daemon stopped");
    Ok(())
}

/// Loads the new configuration and builds its state and job list; nothing changes on error.
fn reconfigure(current: &State, reload: &ConfigLoader) -> Result<(State, Vec<schedule::ScheduledJob>), String> {
    let config = reload()?;
    if config.daemon.listen != current.config.daemon.listen {
        tracing::warn!(old = %current.config.daemon.listen, new = %config.daemon.listen, "daemon.listen changed: /metrics stays on the old address until the daemon is restarted");
    }
    let list = schedule::jobs(&config).map_err(|e| e.to_string())?;
    let events = Arc::new(jobs::event_log(&config).map_err(|e| e.to_string())?);
    let restore_command = jobs::restore_command(&config.source)
        .map_err(|e| format!("cannot build restore_command from source {}: {e}", config.source.display()))?;
    Ok((State { config: Arc::new(config), events, metrics: current.metrics.clone(), restore_command }, list))
}

/// Starts one generation of loops: every scheduled job, the heartbeat and the watch. Returns
/// the sender that ends this generation (a reload or shutdown).
fn start(
    state: &State,
    list: Vec<schedule::ScheduledJob>,
    locks: &schedule::TaskLocks,
    shutdown: &signal_watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> signal_watch::Sender<bool> {
    let (stop_tx, stop_rx) = signal_watch::channel(false);
    schedule::declare(state, &list);
    for job in list {
        tasks.spawn(schedule::cron_loop(state.clone(), job, locks.clone(), stop_rx.clone(), shutdown.clone()));
    }
    if let Some(every) = state.config.daemon.heartbeat_interval {
        tasks.spawn(watch::heartbeat_loop(state.clone(), every.0, stop_rx.clone()));
    }
    let every = state.config.daemon.watch_interval.0;
    tasks.spawn(scratch_reaper::reap_loop(state.clone(), every, stop_rx.clone()));
    tasks.spawn(watch::watch_loop(state.clone(), every, stop_rx));
    stop_tx
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    Reload,
    Stop,
}

/// The daemon's signals: SIGTERM and SIGINT stop it, SIGHUP reloads. Registered once, so a
/// signal arriving during a reload is not lost.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())
            .map_err(|error| tracing::warn!(error = %error, "cannot watch SIGTERM; only Ctrl-C stops the daemon"))
            .ok();
        let hup = signal(SignalKind::hangup())
            .map_err(|error| tracing::warn!(error = %error, "cannot watch SIGHUP; reloading needs a restart"))
            .ok();
        Signals { term, hup }
    }

    async fn next(&mut self) -> Signal {
        let Signals { term, hup } = self;
        let term = async {
            match term {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let hup = async {
            match hup {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = term => Signal::Stop,
            _ = tokio::signal::ctrl_c() => Signal::Stop,
            () = hup => Signal::Reload,
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the one shutdown signal of the daemon and of
/// long CLI runs (a file-tree snapshot still runs its post-hook).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot watch SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
