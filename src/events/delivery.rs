//! Delivery to sinks, with the log as the queue: a sink's cursor file counts the lines it has
//! received, so a sink outage only grows its backlog. Events are sent in log order, one at a
//! time; the cursor moves past an event only after the sink acknowledged it.
//!
//! Delivery is at-least-once: if the process dies (or the cursor cannot be written) between a
//! sink's acknowledgement and the cursor update, that one event is sent again next time. It is
//! never lost, never skipped and never reordered.

use std::fs::{self, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::log::{io_err, sync_dir};
use super::{Error, EventLog, Result, SendError, Sink};

/// How hard one [`EventLog::deliver`] call tries before leaving the rest queued for the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per event within one call, including the first (0 counts as 1).
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further failure.
    pub initial_delay: Duration,
    /// Upper bound of the wait between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s doubling to at most 60 s: rides out a receiver restart within one call
    /// (about 15 s of waiting plus request timeouts), then leaves the next try to the caller's
    /// schedule.
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, initial_delay: Duration::from_secs(1), max_delay: Duration::from_mins(1) }
    }
}

impl RetryPolicy {
    /// Wait after the `failures`-th consecutive failure (1-based): exponential, capped.
    fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.initial_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Outcome of one [`EventLog::deliver`] call; `backlog` feeds the sink backlog metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Events the sink acknowledged during this call.
    pub delivered: usize,
    /// Events still queued for this sink afterwards.
    pub backlog: usize,
    /// Why delivery stopped early, if it did (names sink and URL, never a token).
    pub last_error: Option<String>,
}

impl EventLog {
    /// Sends the events `sink` has not yet received, in log order, moving its cursor after
    /// each acknowledgement. A retryable failure is retried per `policy` with exponential
    /// backoff; a permanent one (4xx) is not retried. Either way delivery then stops, the
    /// failed event and everything after it stay queued, and the error is returned in
    /// [`DeliveryReport::last_error`] — nothing is dropped.
    ///
    /// Only one process delivers to a sink at a time (`sink-<name>.lock`); if another one is
    /// already delivering, this returns at once with `delivered: 0` and the current backlog.
    /// Reads the log with blocking file I/O: it is small (a few events a day).
    ///
    /// # Errors
    /// Local failures only: [`Error::Io`] (log, lock or cursor file), [`Error::Corrupt`],
    /// [`Error::Cursor`].
    pub async fn deliver(&self, sink: &Sink, policy: RetryPolicy) -> Result<DeliveryReport> {
        let name = sink.name();
        let Some(_lock) = self.try_lock_sink(name)? else {
            tracing::debug!(sink = name, "another process is delivering to this sink");
            let backlog = self.backlog(name)?;
            return Ok(DeliveryReport { delivered: 0, backlog, last_error: None });
        };
        let events = self.read_all()?;
        let mut cursor = self.read_cursor(name, events.len())?;
        let mut delivered = 0;
        let mut last_error = None;
        'events: while let Some(event) = events.get(cursor) {
            let mut failures = 0;
            loop {
                match sink.send(event).await {
                    Ok(()) => break,
                    Err(SendError::Retryable(message)) => {
                        failures += 1;
                        if failures >= policy.max_attempts.max(1) {
                            last_error = Some(message);
                            break 'events;
                        }
                        tracing::debug!(sink = name, event_id = %event.id, error = %message, "retrying");
                        tokio::time::sleep(policy.delay(failures)).await;
                    }
                    Err(SendError::Permanent(message)) => {
                        last_error = Some(message);
                        break 'events;
                    }
                }
            }
            cursor += 1;
            self.write_cursor(name, cursor)?;
            delivered += 1;
        }
        let backlog = events.len() - cursor;
        if let Some(error) = &last_error {
            tracing::warn!(sink = name, delivered, backlog, error = %error, "event delivery stopped; events stay queued");
        } else if delivered > 0 {
            tracing::info!(sink = name, delivered, "events delivered");
        }
        Ok(DeliveryReport { delivered, backlog, last_error })
    }

    /// Events queued for the sink named `sink_name`: complete lines after its cursor.
    ///
    /// # Errors
    /// As [`EventLog::read_all`], plus [`Error::Cursor`] for a damaged cursor file.
    pub fn backlog(&self, sink_name: &str) -> Result<usize> {
        let lines = self.read_all()?.len();
        Ok(lines - self.read_cursor(sink_name, lines)?)
    }

    fn cursor_path(&self, sink_name: &str) -> PathBuf {
        self.dir().join(format!("sink-{sink_name}.cursor"))
    }

    /// The sink's cursor; 0 when it has none yet. Must not exceed `lines`.
    fn read_cursor(&self, sink_name: &str, lines: usize) -> Result<usize> {
        let path = self.cursor_path(sink_name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("read", &path, e)),
        };
        let cursor_err = |message: String| Error::Cursor { path: path.clone(), message };
        let cursor: usize =
            text.trim().parse().map_err(|_| cursor_err(format!("{:?} is not a line count", text.trim())))?;
        if cursor > lines {
            return Err(cursor_err(format!("it counts {cursor} delivered events but the log holds {lines}")));
        }
        Ok(cursor)
    }

    /// Replaces the cursor atomically and durably: temp file, fsync, rename, fsync directory.
    fn write_cursor(&self, sink_name: &str, cursor: usize) -> Result<()> {
        let path = self.cursor_path(sink_name);
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".sink-{sink_name}.cursor."))
            .tempfile_in(self.dir())
            .map_err(|e| io_err("create a temporary file in", self.dir(), e))?;
        let temp_path = temp.path().to_path_buf();
        temp.write_all(format!("{cursor}\n").as_bytes())
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| io_err("write", &temp_path, e))?;
        temp.persist(&path).map_err(|e| io_err("rename into place", &path, e.error))?;
        sync_dir(self.dir())
    }

    /// Non-blocking exclusive lock on `sink-<name>.lock`; `None` when another process holds it.
    fn try_lock_sink(&self, sink_name: &str) -> Result<Option<fs::File>> {
        let path = self.dir().join(format!("sink-{sink_name}.lock"));
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(io_err("lock", &path, e)),
        }
    }
}

fn open_lock_file(path: &Path) -> Result<fs::File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("open", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let delays: Vec<_> = (1..=5).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(policy.delay(200), Duration::from_millis(500));
    }

    #[test]
    fn damaged_cursor_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let log = EventLog::open(tmp.path()).unwrap();
        assert_eq!(log.backlog("gitlab").unwrap(), 0);
        log.append(&crate::events::Event::change("backup.pg", "one")).unwrap();
        assert_eq!(log.backlog("gitlab").unwrap(), 1);

        fs::write(tmp.path().join("sink-gitlab.cursor"), "many\n").unwrap();
        let err = log.backlog("gitlab").unwrap_err();
        assert!(err.to_string().contains("sink-gitlab.cursor"), "{err}");

        log.write_cursor("gitlab", 5).unwrap();
        let err = log.backlog("gitlab").unwrap_err();
        assert!(err.to_string().contains("log holds 1"), "{err}");

        log.write_cursor("gitlab", 1).unwrap();
        assert_eq!(log.backlog("gitlab").unwrap(), 0);
        assert_eq!(fs::read_to_string(tmp.path().join("sink-gitlab.cursor")).unwrap(), "1\n");
    }
}
