//! `radd info` (as `pgbackrest info`): what can be restored, from one screen — per timeline the
//! restorable window ([`radd::restore::window`]: the oldest base backup's consistency point to
//! the newest archived WAL, with its age), the
//! backups with sizes and durations, the named restore points, and each drill's last result
//! with RPO/RTO.

use chrono::{DateTime, Utc};
use radd::archive::Timelines;
use radd::events::EventKind;
use radd::restore::Window;
use radd::snapshot::{self, SnapshotKind, SnapshotRecord};
use serde::Serialize;

use super::{Args, human_bytes, open_repo, print_json};

/// The whole report (`radd info --json`).
#[derive(Debug, Serialize)]
struct Info {
    repository: String,
    timelines: Vec<TimelineInfo>,
    backups: Vec<BackupInfo>,
    /// Named restore points (`radd restore-point`), oldest first.
    restore_points: Vec<radd::restore::RestorePoint>,
    drills: Vec<DrillInfo>,
}

/// One timeline's restorable window.
#[derive(Debug, Serialize)]
struct TimelineInfo {
    timeline: u32,
    /// Base backups whose WAL is on this timeline.
    backups: usize,
    /// Start of the oldest of them: the window's beginning.
    oldest_backup_start: Option<String>,
    /// Its start LSN.
    oldest_backup_start_lsn: Option<String>,
    /// The newest archived segment: the window's end is in it.
    newest_wal: Option<String>,
    /// When it was stored.
    newest_wal_stored: Option<String>,
    /// Seconds since then.
    newest_wal_age_seconds: Option<i64>,
    /// When the oldest backup became consistent: the earliest time a restore can reach.
    restorable_from: Option<String>,
    /// Its stop LSN: the earliest LSN a restore can reach.
    restorable_from_lsn: Option<String>,
    /// End of the newest archived segment: the latest LSN a restore can reach.
    restorable_to_lsn: Option<String>,
}

/// One snapshot.
#[derive(Debug, Serialize)]
struct BackupInfo {
    id: String,
    kind: &'static str,
    started: String,
    finished: String,
    duration_seconds: Option<f64>,
    timeline: Option<u32>,
    total_bytes: u64,
    new_bytes: u64,
    uploaded_bytes: u64,
}

/// A drill's last recorded run.
#[derive(Debug, Serialize)]
struct DrillInfo {
    drill: String,
    time: String,
    passed: bool,
    rpo_seconds: Option<f64>,
    rto_seconds: Option<f64>,
    title: String,
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc))
}

fn backup_info(s: &SnapshotRecord) -> BackupInfo {
    // Records written before radd stored `finished` to the millisecond have it truncated to the
    // second, up to a second before `started` for a short backup: those show 0, not a negative.
    let duration =
        parse(&s.started).zip(parse(&s.finished)).map(|(a, b)| ((b - a).num_milliseconds() as f64 / 1000.0).max(0.0));
    BackupInfo {
        id: s.id.clone(),
        kind: if s.kind == SnapshotKind::Pg { "pg" } else { "fs" },
        started: s.started.clone(),
        finished: s.finished.clone(),
        duration_seconds: duration,
        timeline: s.pg.as_ref().map(|pg| pg.timeline.0),
        total_bytes: s.total_bytes,
        new_bytes: s.new_bytes,
        uploaded_bytes: s.uploaded_bytes,
    }
}

/// Runs `radd info`.
pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (config, repo) = open_repo(args, false).await?;
    let records = snapshot::list(&repo).await.map_err(radd::Error::from)?;
    let size = radd::archive::segment_size(&repo)
        .await
        .map_err(radd::Error::from)?
        .or_else(|| records.iter().find_map(|r| r.pg.as_ref().map(|pg| pg.segment_size)));
    let now = Utc::now();
    let mut timelines = Vec::new();
    if let Some(size) = size {
        let archive = Timelines::load(&repo, size).await.map_err(radd::Error::from)?;
        timelines = radd::restore::window::windows(&records, &archive).iter().map(|w| timeline_info(w, now)).collect();
    }
    let drills = last_drills(&config)?;
    let restore_points = radd::restore::points::list(&repo).await.map_err(radd::Error::from)?;
    let info = Info {
        repository: repo.location().to_owned(),
        timelines,
        backups: records.iter().map(backup_info).collect(),
        restore_points,
        drills,
    };
    if args.json {
        return print_json(&info);
    }
    print_text(&info);
    Ok(())
}

fn timeline_info(window: &Window, now: DateTime<Utc>) -> TimelineInfo {
    let secs = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    TimelineInfo {
        timeline: window.timeline,
        backups: window.backups,
        oldest_backup_start: window.start.as_ref().map(|s| s.started.clone()),
        oldest_backup_start_lsn: window.start.as_ref().map(|s| s.start_lsn.to_string()),
        newest_wal: window.end.as_ref().map(|e| e.segment.clone()),
        newest_wal_stored: window.end.as_ref().map(|e| secs(&e.stored)),
        newest_wal_age_seconds: window.end.as_ref().map(|e| (now - e.stored).num_seconds().max(0)),
        restorable_from: window.start.as_ref().and_then(|s| s.consistent_at.as_ref()).map(secs),
        restorable_from_lsn: window.start.as_ref().map(|s| s.consistent_lsn.to_string()),
        restorable_to_lsn: window.end.as_ref().map(|e| e.end_lsn.to_string()),
    }
}

/// Each drill's newest event in the log.
fn last_drills(config: &radd::config::Config) -> anyhow::Result<Vec<DrillInfo>> {
    let log = radd::jobs::event_log(config)?;
    let events = log.read_all().map_err(radd::Error::from)?;
    let mut last: std::collections::BTreeMap<String, DrillInfo> = std::collections::BTreeMap::new();
    for event in events {
        let Some(drill) = event.source.strip_prefix("drill.") else { continue };
        let number = |key: &str| event.details.get(key).and_then(serde_json::Value::as_f64);
        last.insert(
            drill.to_owned(),
            DrillInfo {
                drill: drill.to_owned(),
                time: event.time.clone(),
                passed: event.kind == EventKind::Change,
                rpo_seconds: number("rpo_seconds"),
                rto_seconds: number("rto_seconds"),
                title: event.title.clone(),
            },
        );
    }
    Ok(last.into_values().collect())
}

fn print_text(info: &Info) {
    let age = |s: Option<i64>| {
        s.map_or("-".to_owned(), |s| {
            humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64)).to_string()
        })
    };
    outln!("repository {}", info.repository);
    if info.timelines.is_empty() {
        outln!("  no WAL archived and no base backup: nothing PostgreSQL can be restored to yet");
    }
    for t in &info.timelines {
        outln!(
            "  timeline {}: restorable from {} (LSN {}) to {} (LSN {}, stored {} ago); {} base backup(s)",
            t.timeline,
            t.restorable_from.as_deref().or(t.oldest_backup_start.as_deref()).unwrap_or("- (no base backup)"),
            t.restorable_from_lsn.as_deref().unwrap_or("-"),
            t.newest_wal.as_deref().unwrap_or("- (no WAL)"),
            t.restorable_to_lsn.as_deref().unwrap_or("-"),
            age(t.newest_wal_age_seconds),
            t.backups
        );
    }
    outln!("backups:");
    for b in &info.backups {
        outln!(
            "  {:<26} {:<2} finished {:<24} {:>8}  {:>10} total {:>10} new",
            b.id,
            b.kind,
            b.finished,
            b.duration_seconds.map_or("-".into(), |d| format!("{d:.1}s")),
            human_bytes(b.total_bytes),
            human_bytes(b.new_bytes)
        );
    }
    if !info.restore_points.is_empty() {
        outln!("restore points:");
    }
    for p in &info.restore_points {
        outln!("  {:<24} LSN {:<14} timeline {} created {} by {}", p.name, p.lsn.to_string(), p.timeline, p.time, p.by);
    }
    outln!("drills (last run):");
    if info.drills.is_empty() {
        outln!("  none recorded");
    }
    for d in &info.drills {
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{s:.1}s"));
        outln!(
            "  {:<20} {} {:<6} RPO {} RTO {}",
            d.drill,
            d.time,
            if d.passed { "PASSED" } else { "FAILED" },
            secs(d.rpo_seconds),
            secs(d.rto_seconds)
        );
    }
}
