//! The restorable window per timeline — from the oldest base backup's consistency point to the
//! newest archived WAL — computed once for `radd info` (which shows it) and for restore (which
//! names it when it refuses a target outside it).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::archive::Timelines;
use crate::pg::{Lsn, Timeline, WalFileName};
use crate::snapshot::SnapshotRecord;

/// One timeline's restorable window.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The timeline.
    pub timeline: u32,
    /// Base backups whose WAL is on this timeline.
    pub backups: usize,
    /// The oldest of them: the window begins where it became consistent.
    pub start: Option<WindowStart>,
    /// The newest archived segment on this timeline: the window ends in it.
    pub end: Option<WindowEnd>,
}

/// Where a window begins: the oldest base backup of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct WindowStart {
    /// Its snapshot id.
    pub snapshot: String,
    /// When the backup started (RFC 3339).
    pub started: String,
    /// Its start LSN.
    pub start_lsn: Lsn,
    /// When it became consistent (`pg_backup_stop`, or the record's finish time for older
    /// snapshots): no time target before this can be restored.
    pub consistent_at: Option<DateTime<Utc>>,
    /// Its stop LSN: no LSN target before this can be restored.
    pub consistent_lsn: Lsn,
}

/// Where a window ends: the newest archived segment of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct WindowEnd {
    /// The segment's name.
    pub segment: String,
    /// When it was stored: WAL written later cannot be in it.
    pub stored: DateTime<Utc>,
    /// The end of the segment.
    pub end_lsn: Lsn,
}

/// When a backup became consistent: `pg_backup_stop`'s time, or (older snapshots, which did
/// not record it) the record's finish time, which is later.
#[must_use]
pub fn consistent_at(record: &SnapshotRecord) -> Option<DateTime<Utc>> {
    let pg = record.pg.as_ref()?;
    let at = pg.consistent_at.as_deref().unwrap_or(&record.finished);
    DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&Utc))
}

/// The window of every timeline that has archived WAL or a base backup, lowest first.
#[must_use]
pub fn windows(records: &[SnapshotRecord], archive: &Timelines) -> Vec<Window> {
    let mut all = archive.timelines();
    for pg in records.iter().filter_map(|r| r.pg.as_ref()) {
        if !all.contains(&pg.timeline) {
            all.push(pg.timeline);
        }
    }
    all.sort();
    all.into_iter().map(|t| window(records, archive, t)).collect()
}

/// The window of `timeline`.
#[must_use]
pub fn window(records: &[SnapshotRecord], archive: &Timelines, timeline: Timeline) -> Window {
    let on_timeline: Vec<&SnapshotRecord> =
        records.iter().filter(|r| r.pg.as_ref().is_some_and(|pg| pg.timeline == timeline)).collect();
    let oldest = on_timeline.iter().filter_map(|r| r.pg.as_ref().map(|pg| (*r, pg))).min_by_key(|(_, pg)| pg.start_lsn);
    let size = archive.segment_size();
    Window {
        timeline: timeline.0,
        backups: on_timeline.len(),
        start: oldest.map(|(r, pg)| WindowStart {
            snapshot: r.id.clone(),
            started: r.started.clone(),
            start_lsn: pg.start_lsn,
            consistent_at: consistent_at(r),
            consistent_lsn: pg.stop_lsn,
        }),
        end: archive.newest_segment(timeline).map(|(number, stored)| WindowEnd {
            segment: WalFileName::Segment { timeline, number }.to_name(size),
            stored,
            end_lsn: Lsn((number + 1) * size.bytes()),
        }),
    }
}

impl std::fmt::Display for Window {
    /// "timeline 1 from 2026-11-30T14:05:00Z (snapshot …, LSN 0/2000100) to 2026-12-01T09:00:00Z
    /// (segment … archived, LSN 0/5000000)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        write!(f, "timeline {} from ", self.timeline)?;
        match &self.start {
            Some(s) => write!(
                f,
                "{} (snapshot {} consistent, LSN {})",
                s.consistent_at.as_ref().map_or_else(|| s.started.clone(), secs),
                s.snapshot,
                s.consistent_lsn
            )?,
            None => f.write_str("- (no base backup)")?,
        }
        match &self.end {
            Some(e) => write!(f, " to {} (segment {} archived, LSN {})", secs(&e.stored), e.segment, e.end_lsn),
            None => f.write_str(" to - (no WAL archived)"),
        }
    }
}
