//! The event type and the severity rules. The JSON form is a wire format: see the module doc
//! of [`crate::events`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Whether an event records planned, healthy activity or a failure someone must look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Something happened as intended (backup taken, drill passed): the audit trail.
    Change,
    /// Something failed or is at risk; carries a [`Severity`].
    Incident,
}

impl EventKind {
    /// The wire name (`change`, `incident`), also used as a GitLab label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Change => "change",
            EventKind::Incident => "incident",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an incident is; S1 is the most urgent. Ordered so that `S1 < S4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Data is being lost or is already damaged: page someone now.
    S1,
    /// Recoverability is not proven (a backup, drill or restore failed): fix today.
    S2,
    /// Degraded but covered by other copies: fix this week.
    S3,
    /// Observability only (events could not be forwarded): fix when convenient.
    S4,
}

impl Severity {
    /// The wire name (`S1`..`S4`), also used as a GitLab label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::S1 => "S1",
            Severity::S2 => "S2",
            Severity::S3 => "S3",
            Severity::S4 => "S4",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything radd reports as an event, named by what happened, so that the severity rules
/// live in [`classify`] and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Occurrence {
    /// A base backup or snapshot completed.
    BackupSucceeded,
    /// A base backup or snapshot failed.
    BackupFailed,
    /// A restore drill passed every check.
    DrillPassed,
    /// A restore drill failed a check, timed out or could not run.
    DrillFailed,
    /// A restore completed and was verified.
    RestoreSucceeded,
    /// A restore failed.
    RestoreFailed,
    /// WAL archiving has made no progress for more than 5 minutes.
    ArchiveStalled,
    /// Pushing a WAL segment failed.
    ArchiveFailed,
    /// Stored data does not match its checksum, or the WAL chain has a gap.
    CorruptionFound,
    /// A snapshot completed with files it could not read.
    SnapshotPartial,
    /// A sink refused events permanently (they stay queued in the log).
    SinkUndeliverable,
    /// Retention (forget) or prune completed.
    MaintenanceSucceeded,
    /// Retention (forget) or prune could not run or failed: the repository grows, or WAL
    /// nobody needs piles up, until fixed.
    MaintenanceFailed,
    /// A verification ran and found nothing wrong.
    VerifySucceeded,
    /// A verification could not run to its end (storage, keys): nothing is known about the
    /// objects it did not read.
    VerifyFailed,
    /// A scratch instance was restored and started (`radd restore --scratch`): who, what,
    /// until when — the audit trail of ad-hoc copies of production data.
    ScratchStarted,
    /// A scratch instance was stopped and removed (by an operator or its TTL).
    ScratchStopped,
}

/// The severity rules, in one place:
///
/// | severity | occurrences | why |
/// |---|---|---|
/// | S1 | `ArchiveStalled`, `CorruptionFound` | data written now, or already stored, is at risk |
/// | S2 | `BackupFailed`, `DrillFailed`, `RestoreFailed`, `ArchiveFailed`, `VerifyFailed` | recoverability is unproven until fixed; older backups and retries still cover it |
/// | S3 | `SnapshotPartial`, `MaintenanceFailed` | the snapshot is usable except for the files named; the repository keeps what it should delete |
/// | S4 | `SinkUndeliverable` | nothing is lost: events stay in the local log |
///
/// Successes (scratch instances started and stopped too) are `change` events without severity. A single failed WAL push is S2 rather than
/// S1 because PostgreSQL retries it; when retries keep failing, the stall becomes S1.
#[must_use]
pub fn classify(occurrence: Occurrence) -> (EventKind, Option<Severity>) {
    use Occurrence as O;
    let severity = match occurrence {
        O::BackupSucceeded
        | O::DrillPassed
        | O::RestoreSucceeded
        | O::MaintenanceSucceeded
        | O::VerifySucceeded
        | O::ScratchStarted
        | O::ScratchStopped => {
            return (EventKind::Change, None);
        }
        O::ArchiveStalled | O::CorruptionFound => Severity::S1,
        O::BackupFailed | O::DrillFailed | O::RestoreFailed | O::ArchiveFailed | O::VerifyFailed => Severity::S2,
        O::SnapshotPartial | O::MaintenanceFailed => Severity::S3,
        O::SinkUndeliverable => Severity::S4,
    };
    (EventKind::Incident, Some(severity))
}

/// One production event. Serialises to the stable wire format of [`crate::events`]; build it
/// with [`Event::change`], [`Event::incident`] or [`Event::from_occurrence`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `<unix millis, 13 digits>-<8 random hex>`: unique, and sorts by time as a string.
    pub id: String,
    /// RFC 3339 UTC with milliseconds, e.g. `2025-01-02T03:04:05.678Z`.
    pub time: String,
    /// `change` or `incident`.
    pub kind: EventKind,
    /// Set for incidents only.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// The job that reported it: `backup.pg`, `drill.monthly-rad`, `wal.archive`, `restore`.
    pub source: String,
    /// One line for humans and issue titles. Never put secrets here.
    pub title: String,
    /// Bounded key/value context (host, drill, check), sorted so output is deterministic.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Free-form JSON: timings, check results, error chains.
    #[serde(default = "empty_details")]
    pub details: serde_json::Value,
}

fn empty_details() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl Event {
    /// A `change` event stamped now: something went as intended and belongs in the audit trail.
    #[must_use]
    pub fn change(source: impl Into<String>, title: impl Into<String>) -> Self {
        Self::new(EventKind::Change, None, source.into(), &title.into())
    }

    /// An `incident` event stamped now: something failed and someone must look at it.
    #[must_use]
    pub fn incident(severity: Severity, source: impl Into<String>, title: impl Into<String>) -> Self {
        Self::new(EventKind::Incident, Some(severity), source.into(), &title.into())
    }

    /// An event whose kind and severity come from [`classify`], so callers cannot disagree
    /// with the severity rules.
    #[must_use]
    pub fn from_occurrence(occurrence: Occurrence, source: impl Into<String>, title: impl Into<String>) -> Self {
        let (kind, severity) = classify(occurrence);
        Self::new(kind, severity, source.into(), &title.into())
    }

    fn new(kind: EventKind, severity: Option<Severity>, source: String, title: &str) -> Self {
        let mut event = Event {
            id: String::new(),
            time: String::new(),
            kind,
            severity,
            source,
            title: one_line(title),
            labels: BTreeMap::new(),
            details: empty_details(),
        };
        event.stamp(Utc::now());
        event
    }

    /// Adds (or replaces) a label.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Replaces the details (timings, check results).
    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Restamps the event at `time` (and gives it a matching new id): for events that report
    /// something observed earlier, and for tests that need chosen times.
    #[must_use]
    pub fn at(mut self, time: DateTime<Utc>) -> Self {
        self.stamp(time);
        self
    }

    /// The parsed `time`; `None` only for events built by hand with a malformed time
    /// ([`crate::events::EventLog`] refuses to read such lines).
    #[must_use]
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time).ok().map(|t| t.with_timezone(&Utc))
    }

    fn stamp(&mut self, time: DateTime<Utc>) {
        let mut random = [0u8; 4];
        rand::fill(&mut random);
        let millis = time.timestamp_millis().max(0);
        self.id = format!("{millis:013}-{}", hex::encode(random));
        self.time = time.to_rfc3339_opts(SecondsFormat::Millis, true);
    }
}

/// Titles are one line: issue trackers and `radd events` show them in lists.
fn one_line(title: &str) -> String {
    title.split(|c: char| c.is_control()).filter(|part| !part.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn wire_format_is_pinned() {
        let time = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(678);
        let mut event = Event::incident(Severity::S2, "drill.monthly-rad", "drill monthly-rad failed: wal_chain")
            .at(time)
            .label("host", "db1")
            .details(serde_json::json!({"rto_seconds": 312.5}));
        assert!(event.id.starts_with("1735787045678-"), "{}", event.id);
        assert_eq!(event.id.len(), 13 + 1 + 8);
        event.id = "1735787045678-9f86d081".into();
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"id":"1735787045678-9f86d081","time":"2025-01-02T03:04:05.678Z","kind":"incident","severity":"S2","source":"drill.monthly-rad","title":"drill monthly-rad failed: wal_chain","labels":{"host":"db1"},"details":{"rto_seconds":312.5}}"#
        );
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.timestamp(), Some(time));
    }

    #[test]
    fn change_round_trips_with_null_severity_and_empty_details() {
        let event = Event::change("backup.pg", "base backup taken");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "change");
        assert!(json["severity"].is_null());
        assert_eq!(json["details"], serde_json::json!({}));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn ids_are_unique_and_sort_by_time() {
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let a = Event::change("backup.pg", "a").at(t);
        let b = Event::change("backup.pg", "b").at(t);
        let c = Event::change("backup.pg", "c").at(t + chrono::Duration::milliseconds(1));
        assert_ne!(a.id, b.id);
        assert!(a.id < c.id && b.id < c.id);
    }

    #[test]
    fn titles_are_one_line() {
        let event = Event::change("restore", "restored\nto /srv\r\n\tok");
        assert_eq!(event.title, "restored to /srv ok");
    }

    #[test]
    fn classify_follows_the_severity_table() {
        use Occurrence as O;
        let cases = [
            (O::BackupSucceeded, EventKind::Change, None),
            (O::DrillPassed, EventKind::Change, None),
            (O::RestoreSucceeded, EventKind::Change, None),
            (O::ArchiveStalled, EventKind::Incident, Some(Severity::S1)),
            (O::CorruptionFound, EventKind::Incident, Some(Severity::S1)),
            (O::BackupFailed, EventKind::Incident, Some(Severity::S2)),
            (O::DrillFailed, EventKind::Incident, Some(Severity::S2)),
            (O::RestoreFailed, EventKind::Incident, Some(Severity::S2)),
            (O::ArchiveFailed, EventKind::Incident, Some(Severity::S2)),
            (O::SnapshotPartial, EventKind::Incident, Some(Severity::S3)),
            (O::MaintenanceSucceeded, EventKind::Change, None),
            (O::ScratchStarted, EventKind::Change, None),
            (O::ScratchStopped, EventKind::Change, None),
            (O::VerifySucceeded, EventKind::Change, None),
            (O::MaintenanceFailed, EventKind::Incident, Some(Severity::S3)),
            (O::VerifyFailed, EventKind::Incident, Some(Severity::S2)),
            (O::SinkUndeliverable, EventKind::Incident, Some(Severity::S4)),
        ];
        for (occurrence, kind, severity) in cases {
            assert_eq!(classify(occurrence), (kind, severity), "{occurrence:?}");
        }
        let event = Event::from_occurrence(O::DrillFailed, "drill.monthly-rad", "failed");
        assert_eq!((event.kind, event.severity), (EventKind::Incident, Some(Severity::S2)));
    }
}
