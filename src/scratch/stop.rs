//! Tearing instances down: stop the server (`pg_ctl stop -m fast`, the postmaster killed if
//! that fails), wait until it is gone, remove the directory. Nothing is left: no process, no
//! data, no socket.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::instance::{self, Instance, is_postgres};
use super::{Error, Host};
use crate::pg::ScratchCluster;

/// Which instances `radd scratch stop` stops.
#[derive(Debug, Clone)]
pub enum Selection {
    /// One instance by id (or a unique prefix of it).
    Id(String),
    /// Those whose TTL ran out, and creations whose radd process died.
    Expired,
    /// Every instance.
    All,
}

/// Why an instance was stopped (recorded in its teardown event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// `radd scratch stop` by an operator.
    Manual,
    /// Its TTL ran out (the daemon, or `radd scratch stop --expired`).
    Expired,
    /// Its creation was interrupted (the creating radd process died).
    Abandoned,
}

/// One instance stopped and removed.
#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    /// Its record as it was.
    pub instance: Instance,
    /// Why.
    pub reason: Reason,
    /// Whether a running server had to be stopped.
    pub was_running: bool,
    /// Whether the postmaster had to be killed (pg_ctl stop failed).
    pub killed: bool,
}

/// Stops and removes the selected instances. With [`Selection::Id`] an unknown id is an
/// error; the other selections stop what they find (possibly nothing). A failure to stop one
/// instance does not keep the others running: every selected instance is tried, and the first
/// error is returned after the reports of those that were stopped.
pub fn stop(host: &Host, selection: &Selection, now: DateTime<Utc>) -> (Vec<StopReport>, Vec<Error>) {
    let found = match instance::list(&host.dir) {
        Ok(found) => found,
        Err(e) => return (Vec::new(), vec![e]),
    };
    let mut errors = Vec::new();
    let mut chosen: Vec<(Instance, Reason)> = Vec::new();
    let all: Vec<Instance> = found.into_iter().filter_map(|r| r.map_err(|e| errors.push(e)).ok()).collect();
    match selection {
        Selection::Id(id) => {
            let matches: Vec<&Instance> = all.iter().filter(|i| i.id.starts_with(id.as_str())).collect();
            match matches.as_slice() {
                [] => return (Vec::new(), vec![Error::NotFound(id.clone())]),
                [one] => chosen.push(((*one).clone(), Reason::Manual)),
                many => {
                    let ids = many.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ");
                    return (Vec::new(), vec![Error::Ambiguous { wanted: id.clone(), matches: ids }]);
                }
            }
        }
        Selection::All => chosen.extend(all.into_iter().map(|i| (i, Reason::Manual))),
        Selection::Expired => {
            for i in all {
                if i.expired(now) {
                    chosen.push((i, Reason::Expired));
                } else if !i.ready && !instance::process_alive(i.creator_pid) {
                    chosen.push((i, Reason::Abandoned));
                }
            }
        }
    }
    let mut reports = Vec::new();
    for (instance, reason) in chosen {
        match stop_one(host, &instance) {
            Ok((was_running, killed)) => {
                tracing::info!(scratch_id = %instance.id, ?reason, was_running, killed, "scratch instance stopped and removed");
                reports.push(StopReport { instance, reason, was_running, killed });
            }
            Err(e) => errors.push(e),
        }
    }
    (reports, errors)
}

/// Stops one instance's server and removes its directory; returns (was running, killed).
fn stop_one(host: &Host, instance: &Instance) -> Result<(bool, bool), Error> {
    let dir = instance.dir();
    let mut killed = false;
    let pid = instance.live_postmaster();
    if let Some(pid) = pid {
        let mut cluster = ScratchCluster::adopt(&host.bin_dir, &instance.socket_dir, &instance.data_dir, instance.port);
        if let Err(error) = cluster.stop_clean() {
            tracing::warn!(scratch_id = %instance.id, error = %error, pid, "pg_ctl stop failed: killing the postmaster");
            kill(pid, nix::sys::signal::Signal::SIGQUIT);
            killed = true;
        }
        if !wait_gone(pid, Duration::from_secs(30)) {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            killed = true;
            if !wait_gone(pid, Duration::from_secs(10)) {
                return Err(Error::StillRunning { id: instance.id.clone(), pid });
            }
        }
        wait_children_gone(&instance.data_dir, Duration::from_secs(10));
    }
    remove_dir(&dir)?;
    Ok((pid.is_some(), killed))
}

fn kill(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_postgres(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Backends outlive a killed postmaster briefly; wait until no process names the data
/// directory's postmaster any more (they exit once they notice it is gone).
fn wait_children_gone(data_dir: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while instance::postmaster_pid(data_dir).is_some_and(is_postgres) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn remove_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io { what: "remove", path: dir.to_owned(), source }),
    }
}
