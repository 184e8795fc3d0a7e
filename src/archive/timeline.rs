//! Timelines in the archive: the history files PostgreSQL archives when a server is promoted,
//! and the forks among them that *diverged*.
//!
//! A fork is timeline `child` branching off `parent` at `switchpoint` (the last line of
//! `<child>.history`). It diverged when the parent timeline went on archiving WAL past the switch
//! point *after* the child's history file was archived: two servers were writing at once — a
//! restored copy archiving beside production, or a split brain. Following such a fork silently
//! drops everything the parent committed after the switch point (and takes the copy's writes),
//! so `restore latest` refuses it unless the operator names the timeline, `verify` reports it and
//! drills fail their `timeline` check. A fork whose parent stopped archiving before the history
//! file appeared (failover, or a point-in-time restore that became the new primary while the old
//! one was stopped) is the normal case and is followed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Error;
use crate::codec::ObjectKind;
use crate::pg::{Lsn, SegmentSize, Timeline, WalFileName};
use crate::repo::ObjectKey;
use crate::repository::{Repository, Stored, WalKey};

/// One branch point: `child` starts where `parent` was at `switchpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Fork {
    /// The timeline branched off.
    pub parent: Timeline,
    /// The new timeline.
    pub child: Timeline,
    /// The parent's last position that the child shares.
    pub switchpoint: Lsn,
}

/// A fork whose parent kept archiving after the child appeared.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    /// The fork.
    #[serde(flatten)]
    pub fork: Fork,
    /// When the child's history file was archived.
    pub history_archived: DateTime<Utc>,
    /// Parent segments past the switch point archived after that (first and last name, count).
    pub parent_segments: (String, String, u64),
}

impl Divergence {
    /// One line for reports and errors: what diverged, the evidence, what it means.
    #[must_use]
    pub fn describe(&self) -> String {
        let (first, last, count) = &self.parent_segments;
        format!(
            "timeline {child} branched off timeline {parent} at {lsn}, but timeline {parent} kept archiving after that \
             ({count} segment(s) past the switch point, {first} … {last}, archived after {child_n}.history at {at}): \
             two servers wrote at once (a restored copy archiving into this repository, or a split brain)",
            child = self.fork.child.0,
            parent = self.fork.parent.0,
            lsn = self.fork.switchpoint,
            child_n = self.fork.child,
            at = self.history_archived.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    }
}

/// Parses `<timeline>.history`: one `parentTLI <tab> X/Y <tab> reason` line per ancestor,
/// oldest first; returns the forks in that order (the last one creates `timeline`).
///
/// # Errors
/// A line that is not in PostgreSQL's format (the file is damaged or not a history file).
pub fn parse_history(timeline: Timeline, text: &str) -> Result<Vec<Fork>, String> {
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let bad = || format!("{timeline}.history: cannot parse line {line:?} (expected `timeline<TAB>X/Y<TAB>reason`)");
        let parent = fields.next().and_then(|f| f.parse::<u32>().ok()).ok_or_else(bad)?;
        let switchpoint = fields.next().and_then(|f| f.parse::<Lsn>().ok()).ok_or_else(bad)?;
        entries.push((Timeline(parent), switchpoint));
    }
    let children = entries.iter().skip(1).map(|e| e.0).chain(std::iter::once(timeline));
    Ok(entries
        .iter()
        .zip(children)
        .map(|(&(parent, switchpoint), child)| Fork { parent, child, switchpoint })
        .collect())
}

/// What the archive holds per timeline: history files (decrypted) and segment store times.
#[derive(Debug)]
pub struct Timelines {
    histories: BTreeMap<Timeline, (Vec<Fork>, DateTime<Utc>)>,
    segments: BTreeMap<Timeline, BTreeMap<u64, DateTime<Utc>>>,
    segment_size: SegmentSize,
}

impl Timelines {
    /// Lists `wal/` once and reads every history file (they are small and few).
    ///
    /// # Errors
    /// Listing or reading fails, or a history file cannot be parsed.
    pub async fn load(repo: &Repository, segment_size: SegmentSize) -> Result<Self, Error> {
        let listed = repo.list_wal(None).await?;
        Self::from_listed(repo, &listed, segment_size).await
    }

    /// Like [`Timelines::load`] from a listing of `wal/` the caller already has.
    ///
    /// # Errors
    /// Reading a history file fails, or it cannot be parsed.
    pub async fn from_listed(
        repo: &Repository,
        listed: &[Stored<WalKey>],
        segment_size: SegmentSize,
    ) -> Result<Self, Error> {
        let mut out = Timelines { segment_size, histories: BTreeMap::new(), segments: BTreeMap::new() };
        for object in listed {
            let name = object.id.name.as_str();
            match WalFileName::parse(name, segment_size) {
                Ok(WalFileName::Segment { timeline, number }) => {
                    out.segments.entry(timeline).or_default().insert(number, object.modified);
                }
                Ok(WalFileName::History(timeline)) => {
                    let key = ObjectKey::Wal { dir: timeline.to_string(), name: name.to_owned() };
                    let text = repo.get_open(ObjectKind::Wal, &key).await?;
                    let forks = parse_history(timeline, &String::from_utf8_lossy(&text)).map_err(Error::BadName)?;
                    out.histories.insert(timeline, (forks, object.modified));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The timeline PostgreSQL's `recovery_target_timeline = 'latest'` picks starting from
    /// `from`: it probes `from + 1`, `from + 2`, … while a history file exists.
    #[must_use]
    pub fn newest_from(&self, from: Timeline) -> Timeline {
        let mut newest = from;
        while self.histories.contains_key(&Timeline(newest.0 + 1)) {
            newest = Timeline(newest.0 + 1);
        }
        newest
    }

    /// The forks recovery passes through going from `from` to `to` (empty when equal), or
    /// `None` when `to` does not descend from `from`.
    #[must_use]
    pub fn path(&self, from: Timeline, to: Timeline) -> Option<Vec<Fork>> {
        if from == to {
            return Some(Vec::new());
        }
        let (forks, _) = self.histories.get(&to)?;
        let start = forks.iter().position(|f| f.parent == from)?;
        Some(forks[start..].to_vec())
    }

    /// Every timeline the archive has a segment or a history file of, oldest first.
    #[must_use]
    pub fn timelines(&self) -> Vec<Timeline> {
        let mut all: BTreeSet<Timeline> = self.segments.keys().copied().collect();
        all.extend(self.histories.keys().copied());
        all.into_iter().collect()
    }

    /// The segment size names were read with.
    #[must_use]
    pub fn segment_size(&self) -> SegmentSize {
        self.segment_size
    }

    /// Numbers of the segments archived on `timeline`.
    #[must_use]
    pub fn segment_numbers(&self, timeline: Timeline) -> BTreeSet<u64> {
        self.segments.get(&timeline).map(|s| s.keys().copied().collect()).unwrap_or_default()
    }

    /// The newest archived segment of `timeline` and when it was stored.
    #[must_use]
    pub fn newest_segment(&self, timeline: Timeline) -> Option<(u64, DateTime<Utc>)> {
        self.segments.get(&timeline)?.last_key_value().map(|(&n, &t)| (n, t))
    }

    /// Every fork in the archive whose parent kept archiving after the fork appeared.
    #[must_use]
    pub fn divergences(&self) -> Vec<Divergence> {
        let mut out = Vec::new();
        for (&child, (forks, history_archived)) in &self.histories {
            let Some(fork) = forks.last().filter(|f| f.child == child) else { continue };
            let Some(parent) = self.segments.get(&fork.parent) else { continue };
            let after: Vec<u64> = parent
                .range(fork.switchpoint.segment_no(self.segment_size)..)
                .filter(|(_, stored)| *stored > history_archived)
                .map(|(&n, _)| n)
                .collect();
            if let (Some(&first), Some(&last)) = (after.first(), after.last()) {
                let name = |number| WalFileName::Segment { timeline: fork.parent, number }.to_name(self.segment_size);
                out.push(Divergence {
                    fork: *fork,
                    history_archived: *history_archived,
                    parent_segments: (name(first), name(last), after.len() as u64),
                });
            }
        }
        out
    }

    /// The diverged forks on the way from `from` to `to`.
    #[must_use]
    pub fn divergences_on_path(&self, from: Timeline, to: Timeline) -> Vec<Divergence> {
        let path = self.path(from, to).unwrap_or_default();
        self.divergences().into_iter().filter(|d| path.contains(&d.fork)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lines_become_forks_oldest_first() {
        let text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A28\tbefore 2026-11-30 14:05:00+00\n";
        let forks = parse_history(Timeline(3), text).unwrap();
        assert_eq!(
            forks,
            vec![
                Fork { parent: Timeline(1), child: Timeline(2), switchpoint: Lsn(0x300_0000) },
                Fork { parent: Timeline(2), child: Timeline(3), switchpoint: Lsn(0x500_0A28) },
            ]
        );
        assert!(parse_history(Timeline(2), "one 0/1 x").is_err());
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    fn archive(parent_segments: &[(u64, i64)]) -> Timelines {
        let size = SegmentSize::DEFAULT;
        let mut t = Timelines { segment_size: size, histories: BTreeMap::new(), segments: BTreeMap::new() };
        let fork = Fork { parent: Timeline(1), child: Timeline(2), switchpoint: Lsn(5 * size.bytes() + 0x28) };
        t.histories.insert(Timeline(2), (vec![fork], at(100)));
        t.segments.insert(Timeline(1), parent_segments.iter().map(|&(n, s)| (n, at(s))).collect());
        t
    }

    #[test]
    fn a_parent_archiving_past_the_switch_point_after_the_fork_diverged() {
        let t = archive(&[(4, 10), (5, 150), (6, 160)]);
        let d = t.divergences();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].parent_segments, ("000000010000000000000005".into(), "000000010000000000000006".into(), 2));
        assert!(d[0].describe().contains("timeline 2 branched off timeline 1 at 0/5000028"), "{}", d[0].describe());
        assert_eq!(t.newest_from(Timeline(1)), Timeline(2));
        assert_eq!(t.divergences_on_path(Timeline(1), Timeline(2)).len(), 1);
        assert!(t.divergences_on_path(Timeline(1), Timeline(1)).is_empty());
    }

    #[test]
    fn a_point_in_time_restore_after_the_parent_stopped_is_not_a_divergence() {
        // The parent archived past the switch point before the fork (the restore went back in
        // time), then stopped: the new timeline is production now.
        let t = archive(&[(4, 10), (5, 20), (6, 30)]);
        assert!(t.divergences().is_empty());
        // Earlier segments archived later (a slow backlog) are not past the switch point.
        assert!(archive(&[(4, 200)]).divergences().is_empty());
    }
}
