//! Where a restore can go, decided before anything is written: which snapshot serves a
//! point-in-time target (the newest one consistent before it, as pgBackRest and Barman pick),
//! whether the target lies inside the restorable window (after the oldest backup's consistency
//! point, before the end of the archive), and which timeline recovery follows (never a diverged
//! one unless the operator names it).

use super::window::{self, consistent_at};
use super::{Error, RecoveryTarget};
use crate::archive::Timelines;
use crate::pg::{Lsn, Timeline, WalFileName};
use crate::repository::Repository;
use crate::snapshot::{self, PgInfo, SnapshotKind, SnapshotRecord};

fn describe(record: &SnapshotRecord) -> String {
    match (consistent_at(record), &record.pg) {
        (Some(at), Some(pg)) => format!(
            "snapshot {} (consistent at {}, LSN {})",
            record.id,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            pg.stop_lsn
        ),
        _ => format!("snapshot {}", record.id),
    }
}

/// Resolves `wanted` for `recovery`. `latest` with a time or LSN target is the newest
/// PostgreSQL snapshot consistent before it (a later backup cannot go back in time: PostgreSQL
/// would stop with "recovery ended before configured recovery target was reached"). An explicit
/// snapshot consistent after the target is refused. `on` (a restore point's timeline) also
/// leaves out snapshots of later timelines, which cannot lead to it.
///
/// # Errors
/// [`Error::OutsideWindow`] when no snapshot can reach the target; snapshot lookup failures.
pub(super) async fn choose_snapshot(
    repo: &Repository,
    wanted: &str,
    recovery: &RecoveryTarget,
    on: Option<Timeline>,
) -> Result<SnapshotRecord, Error> {
    let before_target = |record: &SnapshotRecord| match (recovery, &record.pg) {
        (RecoveryTarget::Time(t), Some(_)) => consistent_at(record).is_some_and(|at| at <= *t),
        (RecoveryTarget::Lsn(l), Some(pg)) => pg.stop_lsn <= *l && on.is_none_or(|on| pg.timeline <= on),
        _ => true,
    };
    let pit = matches!(recovery, RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_));
    if wanted != "latest" || !pit {
        let record = snapshot::resolve(repo, wanted).await?;
        if record.pg.is_some() && !before_target(&record) {
            return Err(Error::OutsideWindow {
                target: recovery.to_string(),
                reason: format!(
                    "{} became consistent after it; restore an older snapshot, or `latest` to let radd pick one",
                    describe(&record)
                ),
            });
        }
        return Ok(record);
    }
    let pg: Vec<SnapshotRecord> =
        snapshot::list(repo).await?.into_iter().filter(|s| s.kind == SnapshotKind::Pg).collect();
    let Some(oldest) = pg.first() else {
        return Err(snapshot::Error::Empty.into());
    };
    let oldest_text = describe(oldest);
    if let Some(found) = pg.iter().rev().find(|r| before_target(r)) {
        return Ok(found.clone());
    }
    let mut reason = format!("it is before the oldest backup, {oldest_text}: the restorable window starts there");
    if let Some(window) = window_of(repo, &pg, oldest).await {
        reason = format!("it is before the oldest backup: the restorable window is {window}");
    }
    Err(Error::OutsideWindow { target: recovery.to_string(), reason })
}

/// The window of `oldest`'s timeline, for an error message (`None` when the archive cannot be
/// listed: the message then names the oldest backup alone).
async fn window_of(repo: &Repository, records: &[SnapshotRecord], oldest: &SnapshotRecord) -> Option<window::Window> {
    let pg = oldest.pg.as_ref()?;
    let timelines = Timelines::load(repo, pg.segment_size).await.ok()?;
    Some(window::window(records, &timelines, pg.timeline))
}

/// The timeline recovery follows: `wanted` if given (it must descend from the backup's), else
/// the one `recovery_target_timeline = 'latest'` would pick — refused when a fork on the way
/// diverged (see [`crate::archive::Divergence`]).
///
/// # Errors
/// [`Error::Diverged`], [`Error::BadTimeline`].
pub(super) fn timeline(timelines: &Timelines, pg: &PgInfo, wanted: Option<Timeline>) -> Result<Timeline, Error> {
    let backup = pg.timeline;
    if let Some(wanted) = wanted {
        if timelines.path(backup, wanted).is_none() {
            return Err(Error::BadTimeline {
                wanted: wanted.0,
                backup: backup.0,
                newest: timelines.newest_from(backup).0,
            });
        }
        return Ok(wanted);
    }
    let newest = timelines.newest_from(backup);
    let diverged = timelines.divergences_on_path(backup, newest);
    if diverged.is_empty() {
        return Ok(newest);
    }
    Err(Error::Diverged {
        detail: diverged.iter().map(crate::archive::Divergence::describe).collect::<Vec<_>>().join("; "),
        backup: backup.0,
        newest: newest.0,
    })
}

/// Refuses a time or LSN target past the end of the archive on the followed timeline: WAL that
/// is not archived cannot be replayed, and PostgreSQL would stop with an error after the whole
/// restore. (A time is compared with when the newest segment was stored: WAL written later
/// cannot be in it.)
///
/// # Errors
/// [`Error::OutsideWindow`] naming the window.
pub(super) fn check_end(
    timelines: &Timelines,
    record: &SnapshotRecord,
    pg: &PgInfo,
    follow: Timeline,
    recovery: &RecoveryTarget,
) -> Result<(), Error> {
    let Some((number, stored)) = timelines.newest_segment(follow) else {
        return Ok(());
    };
    let size = pg.segment_size;
    let name = WalFileName::Segment { timeline: follow, number }.to_name(size);
    let from = describe(record);
    let (past, end) = match recovery {
        RecoveryTarget::Time(t) => (
            *t > stored,
            format!("{} (when segment {name} was archived)", stored.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ),
        RecoveryTarget::Lsn(l) => {
            let end = Lsn((number + 1) * size.bytes());
            (*l > end, format!("LSN {end} (end of segment {name})"))
        }
        _ => (false, String::new()),
    };
    if past {
        return Err(Error::OutsideWindow {
            target: recovery.to_string(),
            reason: format!(
                "it is past the end of the archive: the restorable window from {from} ends at {end}; wait for the WAL to be archived or choose an earlier target"
            ),
        });
    }
    Ok(())
}
