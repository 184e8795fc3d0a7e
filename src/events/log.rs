//! The durable, append-only event log: `events.jsonl`, one event per line.
//!
//! Durability contract: [`EventLog::append`] returns only after the line is on stable storage,
//! and a crash mid-write can leave at most one unterminated last line, which readers ignore and
//! the next append cuts off. Complete lines are never rewritten, so line numbers are stable and
//! serve as the sinks' delivery positions.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{Error, Event, Result};

const LOG_FILE: &str = "events.jsonl";
const LOCK_FILE: &str = "events.lock";

/// Handle on an event log directory. Cheap to hold: files are opened per operation, so several
/// processes (CLI runs, the daemon) can share one directory.
#[derive(Debug, Clone)]
pub struct EventLog {
    dir: PathBuf,
}

impl EventLog {
    /// Opens the log in `dir`, creating the directory (mode 0700: titles and labels describe the
    /// infrastructure) and an empty `events.jsonl` if needed, and making their creation durable.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory or file when it cannot be created.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io_err("create", dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let log = EventLog { dir: dir.to_path_buf() };
        log.open_for_append()?;
        Ok(log)
    }

    /// The directory holding the log and the sink cursors.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `events.jsonl` file.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Appends one event durably. Holds an exclusive lock on `events.lock` so concurrent
    /// appenders (threads or processes) never interleave; cuts off a torn last line left by a
    /// crash; writes the line with one `write_all` and returns only after `fsync`, so an
    /// acknowledged event survives kill -9 and power loss.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that could not be locked, written or synced; the event is
    /// then not recorded (at most a torn line remains, which readers ignore).
    pub fn append(&self, event: &Event) -> Result<()> {
        let mut line = serde_json::to_vec(event).map_err(|e| Error::Io {
            what: "serialise an event for",
            path: self.path(),
            source: io::Error::other(e),
        })?;
        line.push(b'\n');

        let _lock = self.lock()?;
        let path = self.path();
        let mut file = self.open_for_append()?;
        cut_torn_line(&mut file).map_err(|e| io_err("repair the torn last line of", &path, e))?;
        file.write_all(&line).map_err(|e| io_err("write", &path, e))?;
        file.sync_data().map_err(|e| io_err("sync", &path, e))?;
        Ok(())
    }

    /// Every complete event, in append order.
    ///
    /// # Errors
    /// [`Error::Io`] when the log cannot be read; [`Error::Corrupt`] naming the line number when
    /// a complete line is not a valid event (such a line is never skipped silently). An
    /// unterminated last line is a write cut short by a crash, never acknowledged: ignored.
    pub fn read_all(&self) -> Result<Vec<Event>> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &path, e)),
        };
        parse_lines(&path, &bytes)
    }

    /// The events whose time is at or after `since`, in append order.
    ///
    /// # Errors
    /// As [`EventLog::read_all`].
    pub fn read_since(&self, since: DateTime<Utc>) -> Result<Vec<Event>> {
        let mut events = self.read_all()?;
        events.retain(|e| e.timestamp().is_some_and(|t| t >= since));
        Ok(events)
    }

    /// Exclusive lock on `events.lock`, released when the returned file is dropped.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("open", &path, e))?;
        file.lock().map_err(|e| io_err("lock", &path, e))?;
        Ok(file)
    }

    /// Opens `events.jsonl` for appending, creating it (and fsyncing the directory) if absent.
    fn open_for_append(&self) -> Result<File> {
        let path = self.path();
        let mut options = OpenOptions::new();
        options.read(true).append(true);
        match options.open(&path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let created = options.create_new(true).mode(0o600).open(&path);
                let file = match created {
                    Ok(file) => file,
                    // Another process created it between our two opens.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        OpenOptions::new().read(true).append(true).open(&path).map_err(|e| io_err("open", &path, e))?
                    }
                    Err(e) => return Err(io_err("create", &path, e)),
                };
                sync_dir(&self.dir)?;
                Ok(file)
            }
            Err(e) => Err(io_err("open", &path, e)),
        }
    }
}

/// Parses complete lines; `path` only names the file in errors.
fn parse_lines(path: &Path, bytes: &[u8]) -> Result<Vec<Event>> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => &bytes[..last],
        None => return Ok(Vec::new()),
    };
    let mut events = Vec::new();
    // `complete` stops before the last '\n': every piece is a whole line, none may be empty.
    for (index, line) in complete.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let event: Event = serde_json::from_slice(line).map_err(|e| corrupt(path, number, e.to_string()))?;
        if event.timestamp().is_none() {
            let message = format!("time {:?} is not RFC 3339", event.time);
            return Err(corrupt(path, number, message));
        }
        events.push(event);
    }
    Ok(events)
}

fn corrupt(path: &Path, line: usize, message: String) -> Error {
    Error::Corrupt { path: path.to_path_buf(), line, message }
}

/// If the file does not end with '\n', truncates it back to just after the last '\n'.
fn cut_torn_line(file: &mut File) -> io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut end = len;
    let mut buf = [0u8; 4096];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        #[allow(clippy::cast_possible_truncation)] // at most buf.len()
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(pos) = chunk.iter().rposition(|&b| b == b'\n') {
            let keep = start + pos as u64 + 1;
            if keep != len {
                file.set_len(keep)?;
            }
            return Ok(());
        }
        if start == 0 {
            file.set_len(0)?;
            return Ok(());
        }
        end = start;
    }
}

/// Makes a directory entry change (create, rename) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("sync directory", dir, e))
}

pub(super) fn io_err(what: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io { what, path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Severity;
    use chrono::TimeZone;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn open_creates_private_dir_and_empty_log() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/events");
        let log = EventLog::open(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(fs::metadata(log.path()).unwrap().len(), 0);
        assert!(log.read_all().unwrap().is_empty());
        // Reopening an existing log is fine and keeps its content.
        log.append(&Event::change("backup.pg", "taken")).unwrap();
        assert_eq!(EventLog::open(&dir).unwrap().read_all().unwrap().len(), 1);
    }

    #[test]
    fn append_then_read_round_trips_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let log = EventLog::open(tmp.path()).unwrap();
        let events = vec![
            Event::change("backup.pg", "base backup taken").label("host", "db1"),
            Event::incident(Severity::S2, "drill.monthly-rad", "drill monthly-rad failed: sql")
                .details(serde_json::json!({"checks": {"sql": "failed"}, "rto_seconds": 12.5})),
            Event::change("restore", "restored with \"quotes\"\nand a newline"),
        ];
        for event in &events {
            log.append(event).unwrap();
        }
        assert_eq!(log.read_all().unwrap(), events);
        let text = fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn torn_last_line_is_ignored_then_cut_by_the_next_append() {
        let tmp = tempfile::tempdir().unwrap();
        let log = EventLog::open(tmp.path()).unwrap();
        let first = Event::change("backup.pg", "first");
        log.append(&first).unwrap();
        // A crash in the middle of a write leaves half a line.
        let half = serde_json::to_string(&Event::change("backup.pg", "torn")).unwrap();
        let mut file = OpenOptions::new().append(true).open(log.path()).unwrap();
        file.write_all(&half.as_bytes()[..half.len() / 2]).unwrap();
        drop(file);

        let log = EventLog::open(tmp.path()).unwrap();
        assert_eq!(log.read_all().unwrap(), vec![first.clone()]);
        let second = Event::change("backup.pg", "second");
        log.append(&second).unwrap();
        assert_eq!(log.read_all().unwrap(), vec![first, second]);
        let text = fs::read_to_string(log.path()).unwrap();
        assert!(!text.contains("torn"), "torn line must be cut off: {text}");
    }

    #[test]
    fn torn_line_without_any_complete_line_is_cut_to_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let log = EventLog::open(tmp.path()).unwrap();
        fs::write(log.path(), vec![b'x'; 10_000]).unwrap();
        assert!(log.read_all().unwrap().is_empty());
        let event = Event::change("backup.pg", "after");
        log.append(&event).unwrap();
        assert_eq!(log.read_all().unwrap(), vec![event]);
    }

    #[test]
    fn corrupt_terminated_line_is_an_error_naming_its_line() {
        let tmp = tempfile::tempdir().unwrap();
        let log = EventLog::open(tmp.path()).unwrap();
        log.append(&Event::change("backup.pg", "one")).unwrap();
        let mut file = OpenOptions::new().append(true).open(log.path()).unwrap();
        file.write_all(b"{not json}\n").unwrap();
        drop(file);
        log.append(&Event::change("backup.pg", "three")).unwrap();
        let err = log.read_all().unwrap_err();
        assert!(matches!(err, Error::Corrupt { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert_eq!(err.kind(), crate::error::ErrorKind::Integrity);

        fs::write(log.path(), b"\n").unwrap();
        assert!(matches!(log.read_all().unwrap_err(), Error::Corrupt { line: 1, .. }));
    }

    #[test]
    fn read_since_filters_by_time() {
        let tmp = tempfile::tempdir().unwrap();
        let log = EventLog::open(tmp.path()).unwrap();
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
        for hours in [0, 1, 2, 3] {
            let title = format!("at {hours}h");
            log.append(&Event::change("backup.pg", title).at(t0 + chrono::Duration::hours(hours))).unwrap();
        }
        let since = log.read_since(t0 + chrono::Duration::hours(2)).unwrap();
        let titles: Vec<_> = since.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(titles, ["at 2h", "at 3h"]);
    }

    #[test]
    fn concurrent_appends_from_threads_all_land_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        EventLog::open(&dir).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    // Each thread opens its own handle, as separate processes would.
                    let log = EventLog::open(&dir).unwrap();
                    for i in 0..50 {
                        let event = Event::change(format!("backup.t{t}"), format!("event {i}"))
                            .details(serde_json::json!({"padding": "x".repeat(500)}));
                        log.append(&event).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let events = EventLog::open(&dir).unwrap().read_all().unwrap();
        assert_eq!(events.len(), 400);
        for t in 0..8 {
            let source = format!("backup.t{t}");
            let titles: Vec<_> = events.iter().filter(|e| e.source == source).map(|e| e.title.clone()).collect();
            let expected: Vec<_> = (0..50).map(|i| format!("event {i}")).collect();
            assert_eq!(titles, expected, "per-thread order kept for {source}");
        }
    }
}
