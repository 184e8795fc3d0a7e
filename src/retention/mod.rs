//! Retention: which snapshots a policy keeps, and why.
//!
//! A pure computation over snapshot times, with "now" passed in (an injectable clock: tests
//! and `radd forget --now` choose it), so what is kept is decided without sleeps or guesses.
//! Snapshots are grouped (kind, host, paths) and the policy applies within each group, as in
//! restic: `keep_last` keeps the newest N; `keep_hourly/daily/weekly/monthly` keep the newest
//! snapshot of each of the last N distinct hours/days/ISO weeks/months that have one;
//! `keep_within` keeps everything younger than the duration; pinned snapshots are always kept.
//! A group's newest snapshot is always kept, so a policy can never empty a group.

mod prune;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

pub use crate::config::retention::Policy;
pub use prune::{PruneOptions, PruneReport, prune};

/// What the policy needs to know about a snapshot.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Snapshot id.
    pub id: String,
    /// When it started.
    pub time: DateTime<Utc>,
    /// Retention group (kind, host, paths).
    pub group: String,
    /// Pinned by `radd pin`.
    pub pinned: bool,
}

/// The decision for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Retention group.
    pub group: String,
    /// Start time (RFC 3339).
    pub time: String,
    /// Kept or forgotten.
    pub keep: bool,
    /// Every rule that keeps it ("last", "daily 2026-11-25", "within 30d", "pinned", "newest").
    pub reasons: Vec<String>,
}

/// Names the calendar bucket (hour, day, ISO week, month) a time falls in.
type Bucket = fn(&DateTime<Utc>) -> String;

/// Applies `policy` at `now`; returns one decision per candidate, newest first per group.
pub fn apply(policy: &Policy, candidates: &[Candidate], now: DateTime<Utc>) -> Result<Vec<Decision>, String> {
    let within = match &policy.keep_within {
        Some(d) => Some(
            chrono::Duration::from_std(humantime::parse_duration(d).map_err(|e| format!("keep_within {d:?}: {e}"))?)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let mut groups: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        groups.entry(&c.group).or_default().push(c);
    }
    let mut out = Vec::new();
    for (_, mut snaps) in groups {
        snaps.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
        reasons[0].push("newest".into());
        if policy.is_empty() {
            reasons.iter_mut().for_each(|r| r.push("no retention policy".into()));
        }
        if let Some(n) = policy.keep_last {
            for r in reasons.iter_mut().take(n as usize) {
                r.push("last".into());
            }
        }
        let buckets: [(Option<u32>, &str, Bucket); 4] = [
            (policy.keep_hourly, "hourly", |t| format!("{}-{:02}-{:02}T{:02}", t.year(), t.month(), t.day(), t.hour())),
            (policy.keep_daily, "daily", |t| t.format("%Y-%m-%d").to_string()),
            (policy.keep_weekly, "weekly", |t| format!("{}-W{:02}", t.iso_week().year(), t.iso_week().week())),
            (policy.keep_monthly, "monthly", |t| t.format("%Y-%m").to_string()),
        ];
        for (limit, name, bucket) in buckets {
            let Some(limit) = limit else { continue };
            let mut seen = HashSet::new();
            for (i, s) in snaps.iter().enumerate() {
                let key = bucket(&s.time);
                if seen.len() < limit as usize && seen.insert(key.clone()) {
                    reasons[i].push(format!("{name} {key}"));
                }
            }
        }
        for (i, s) in snaps.iter().enumerate() {
            if within.is_some_and(|w| s.time >= now - w) {
                reasons[i].push(format!("within {}", policy.keep_within.as_deref().unwrap_or_default()));
            }
            if s.pinned {
                reasons[i].push("pinned".into());
            }
        }
        for (s, why) in snaps.iter().zip(reasons) {
            out.push(Decision {
                snapshot_id: s.id.clone(),
                group: s.group.clone(),
                time: s.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                keep: !why.is_empty(),
                reasons: why,
            });
        }
    }
    Ok(out)
}

/// The result of `radd forget`.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    /// Whether anything was deleted (false with `--dry-run`).
    pub applied: bool,
    /// One decision per snapshot.
    pub decisions: Vec<Decision>,
    /// Snapshots forgotten (or that would be).
    pub forgotten: usize,
}

/// The retention group of a snapshot: kind, host and what was backed up.
#[must_use]
pub fn group_of(record: &crate::snapshot::SnapshotRecord) -> String {
    match &record.pg {
        Some(pg) => format!("pg {} {}", record.hostname, pg.data_dir),
        None => format!("fs {} {}", record.hostname, record.paths.join(",")),
    }
}

/// Ids of pinned snapshots.
pub async fn pinned(repo: &crate::repository::Repository) -> Result<HashSet<String>, crate::repository::Error> {
    Ok(repo.list_pins().await?.into_iter().map(|l| l.id).collect())
}

/// Pins (or unpins) a snapshot: a pinned snapshot is never forgotten by a policy.
pub async fn set_pin(
    repo: &crate::repository::Repository,
    snapshot: &str,
    pin: bool,
) -> Result<String, crate::snapshot::Error> {
    let record = crate::snapshot::resolve(repo, snapshot).await?;
    let key = crate::repo::ObjectKey::Pin(record.id.clone());
    if pin {
        repo.put_new(&key, bytes::Bytes::from_static(b"pinned\n")).await?;
    } else {
        repo.delete(&key).await?;
    }
    Ok(record.id)
}

/// Per-job policies: file-tree snapshots of exactly these root paths use this policy instead
/// of the default one.
pub type JobPolicies = Vec<(Vec<String>, Policy)>;

/// Computes the plan and, unless `dry_run`, forgets the snapshots it does not keep: the record
/// goes first (the snapshot disappears atomically), then its manifest. Chunks stay until prune.
pub async fn forget(
    repo: &crate::repository::Repository,
    policy: &Policy,
    jobs: &JobPolicies,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ForgetReport, crate::snapshot::Error> {
    let records = crate::snapshot::list(repo).await?;
    let pins = pinned(repo).await?;
    let candidates: Vec<Candidate> = records
        .iter()
        .map(|r| Candidate {
            id: r.id.clone(),
            time: DateTime::parse_from_rfc3339(&r.started).map(|t| t.with_timezone(&Utc)).unwrap_or(now),
            group: group_of(r),
            pinned: pins.contains(&r.id),
        })
        .collect();
    // Each group under the policy of the job it belongs to (default: `policy`).
    let mut by_job: BTreeMap<Option<usize>, Vec<Candidate>> = BTreeMap::new();
    for (record, candidate) in records.iter().zip(candidates) {
        let job = jobs.iter().position(|(paths, _)| record.pg.is_none() && *paths == record.paths);
        by_job.entry(job).or_default().push(candidate);
    }
    let mut decisions = Vec::new();
    for (job, list) in by_job {
        let chosen = job.map_or(policy, |i| &jobs[i].1);
        decisions.extend(apply(chosen, &list, now).map_err(crate::snapshot::Error::Internal)?);
    }
    let forgotten = decisions.iter().filter(|d| !d.keep).count();
    if !dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            repo.delete(&crate::repo::ObjectKey::Snapshot(d.snapshot_id.clone())).await?;
            repo.delete(&crate::repo::ObjectKey::Manifest(d.snapshot_id.clone())).await?;
            tracing::info!(snapshot_id = %d.snapshot_id, "snapshot forgotten");
        }
    }
    Ok(ForgetReport { applied: !dry_run, decisions, forgotten })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Two snapshots a day at 01:00 and 13:00 for 60 days ending 2026-11-26.
    fn history() -> Vec<Candidate> {
        let end = at("2026-11-26T13:00:00Z");
        (0..120)
            .map(|i| {
                let time = end - chrono::Duration::hours(12 * i);
                Candidate { id: time.format("%Y%m%dT%H%M%SZ").to_string(), time, group: "pg".into(), pinned: false }
            })
            .collect()
    }

    fn kept(policy: &Policy, candidates: &[Candidate]) -> Vec<String> {
        apply(policy, candidates, at("2026-11-26T14:00:00Z"))
            .unwrap()
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.snapshot_id)
            .collect()
    }

    #[test]
    fn daily_weekly_monthly_keep_exactly_the_newest_per_bucket() {
        let policy = Policy { keep_daily: Some(7), keep_weekly: Some(4), keep_monthly: Some(3), ..Policy::default() };
        let kept = kept(&policy, &history());
        // 7 days (13:00 each); 4 ISO weeks: this one (already kept) and the Sundays 22nd (kept),
        // 15th and 8th; 3 months: November (kept), October 31st and September 30th.
        let expected = [
            "20261126T130000Z",
            "20261125T130000Z",
            "20261124T130000Z",
            "20261123T130000Z",
            "20261122T130000Z",
            "20261121T130000Z",
            "20261120T130000Z",
            "20261115T130000Z",
            "20261108T130000Z",
            "20261031T130000Z",
            "20260930T130000Z",
        ];
        let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        let mut got = kept.clone();
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn keep_last_within_and_pins() {
        let mut candidates = history();
        candidates.last_mut().unwrap().pinned = true;
        let oldest = candidates.last().unwrap().id.clone();
        let policy = Policy { keep_last: Some(3), keep_within: Some("2d".into()), ..Policy::default() };
        let kept = kept(&policy, &candidates);
        // Within 2 days of the 26th 14:00: 26th 13:00/01:00, 25th 13:00/01:00 (keep_last's 3 are
        // among them), plus the pinned oldest one.
        assert!(kept.contains(&oldest), "a pinned snapshot survives every policy");
        assert_eq!(kept.len(), 5, "{kept:?}");
    }

    #[test]
    fn an_empty_policy_keeps_everything_and_groups_never_empty() {
        let candidates = history();
        assert_eq!(kept(&Policy::default(), &candidates).len(), candidates.len());
        let one = Policy { keep_last: Some(0), ..Policy::default() };
        assert_eq!(kept(&one, &candidates), vec![candidates[0].id.clone()], "the newest is always kept");
    }
}
