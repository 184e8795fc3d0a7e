//! The WAL archive: one listing of `wal/`, segments grouped per timeline, every hole between a
//! timeline's lowest and highest archived segment reported as a gap (DESIGN.md: "`verify`
//! reports every gap per timeline"), because recovery through a gap silently loses data.

use std::collections::{BTreeMap, BTreeSet};

use super::{Error, Gap, ProblemKind, TimelineReport, VerifyReport};
use crate::archive;
use crate::pg::{PageCheck, SegmentSize, Timeline, WalFileName};
use crate::repo::ObjectKey;
use crate::repository::{self, Repository, Stored};

/// Lists the WAL archive, reports per-timeline gaps, misplaced objects and diverged timelines
/// (see [`archive::Timelines`]), and returns every WAL object for `--read-data`, each with the
/// check of its page headers against its name (segments and `.partial` files).
pub(super) async fn check(
    repo: &Repository,
    segment_size: Option<SegmentSize>,
    report: &mut VerifyReport,
) -> Result<Vec<(ObjectKey, Option<PageCheck>, u64)>, Error> {
    // Objects outside `wal/<timeline>/<name>` are skipped (with a warning) by the listing.
    let listed = repo.list_wal(None).await?;
    let mut timelines: BTreeMap<Timeline, BTreeSet<u64>> = BTreeMap::new();
    let mut objects = Vec::with_capacity(listed.len());
    for Stored { id: wal_key, size, .. } in &listed {
        let (dir, name, key) = (wal_key.dir.as_str(), wal_key.name.as_str(), wal_key.key().to_string());
        let key = key.as_str();
        // Without a size the repository holds no segment: every name is of another kind.
        let parsed = match segment_size
            .map_or_else(|| WalFileName::parse_auxiliary(name), |size| WalFileName::parse(name, size))
        {
            Ok(parsed) => parsed,
            Err(reason) => {
                tracing::warn!(key, reason, "ignoring an object that is not a WAL file name");
                continue;
            }
        };
        if dir != parsed.timeline().to_string() {
            report.problem(
                ProblemKind::Corrupt,
                key,
                format!("stored under timeline directory {dir}, but the file belongs to timeline {}; wal-fetch cannot find it", parsed.timeline()),
            );
        } else if let WalFileName::Segment { timeline, number } = parsed {
            timelines.entry(timeline).or_default().insert(number);
        }
        let pages = segment_size.and_then(|size| PageCheck::for_file(&parsed, size));
        objects.push((ObjectKey::Wal { dir: dir.to_owned(), name: name.to_owned() }, pages, *size));
    }
    // Without a known segment size the archive holds no segment, so no fork can have diverged.
    let Some(segment_size) = segment_size else { return Ok(objects) };
    for diverged in archive::Timelines::from_listed(repo, &listed, segment_size).await?.divergences() {
        let child = diverged.fork.child;
        let key = ObjectKey::Wal { dir: child.to_string(), name: format!("{child}.history") };
        report.problem(ProblemKind::Timeline, key.to_string(), diverged.describe());
    }
    let accepted = accepted_gaps(repo).await?;
    for (&timeline, segments) in &timelines {
        report.wal_segments += segments.len() as u64;
        for (first, last) in holes(segments) {
            let first_name = WalFileName::Segment { timeline, number: first }.to_name(segment_size);
            if accepted.contains(&first_name) {
                report.accepted_gaps.push(first_name);
                continue;
            }
            let (object, detail) = gap_problem(timeline, first, last, segment_size);
            report.problem(ProblemKind::Gap, object, detail);
        }
        report.timelines.push(timeline_report(timeline, segments, segment_size));
    }
    Ok(objects)
}

/// An operator's acceptance of a known WAL gap (`radd verify --accept-gap`): an authenticated
/// record, so no one without the id key can hide a gap by writing one.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AcceptedGap {
    /// The gap's first missing segment.
    pub segment: String,
    /// When it was accepted (RFC 3339).
    pub accepted_at: String,
    /// Who (OS user and host).
    pub by: String,
    /// Why, as the operator said.
    pub reason: String,
}

/// Stored under `accepted-gaps/<first missing segment>`.
impl repository::StoredRecord for AcceptedGap {
    type Id = str;
    fn key_of(segment: &str) -> ObjectKey {
        ObjectKey::AcceptedGap(segment.to_owned())
    }
    fn key(&self) -> ObjectKey {
        Self::key_of(&self.segment)
    }
}

/// First missing segments of the gaps operators accepted (unreadable records are not
/// acceptances: the gap is reported again).
async fn accepted_gaps(repo: &Repository) -> Result<BTreeSet<String>, Error> {
    let mut out = BTreeSet::new();
    for item in repo.list_accepted_gaps().await? {
        let key = ObjectKey::AcceptedGap(item.id.clone());
        match repo.read::<AcceptedGap>(&item.id).await {
            Ok(record) if record.segment == item.id => {
                out.insert(record.segment);
            }
            Ok(_) | Err(_) => {
                tracing::warn!(key = %key, "ignoring an accepted-gap record that does not authenticate")
            }
        }
    }
    Ok(out)
}

/// Records that the gap starting at `segment` is a known, accepted loss (verify stops
/// reporting it; restores still need `--allow-gap`). Refused when `segment` is archived.
pub async fn accept_gap(repo: &Repository, segment: &str, by: String, reason: String) -> Result<AcceptedGap, Error> {
    let timeline = segment.get(..8).unwrap_or_default();
    if segment.len() != 24 || !segment.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NotAGap {
            segment: segment.to_owned(),
            why: "not a WAL segment name (24 hex digits)".into(),
        });
    }
    if repo.exists(&ObjectKey::Wal { dir: timeline.to_owned(), name: segment.to_owned() }).await? {
        return Err(Error::NotAGap { segment: segment.to_owned(), why: "it is archived".into() });
    }
    let record = AcceptedGap {
        segment: segment.to_owned(),
        accepted_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        by,
        reason,
    };
    repo.write(&record).await.map_err(Error::from)?;
    Ok(record)
}

/// The problem for segments `first..=last` missing on `timeline`: the object is the first
/// missing segment's key, the detail names the whole run and the archived segments around it.
fn gap_problem(timeline: Timeline, first: u64, last: u64, segment_size: SegmentSize) -> (String, String) {
    let name = |number| WalFileName::Segment { timeline, number }.to_name(segment_size);
    let what = if first == last {
        format!("segment {} is missing", name(first))
    } else {
        format!("segments {} through {} ({}) are missing", name(first), name(last), last - first + 1)
    };
    (
        ObjectKey::Wal { dir: timeline.to_string(), name: name(first) }.to_string(),
        format!(
            "{what} on timeline {timeline} between archived {} and {}; recovery cannot pass this point",
            name(first - 1),
            name(last + 1)
        ),
    )
}

/// Summarises one timeline's archived segments (a non-empty set) and its gaps.
fn timeline_report(timeline: Timeline, segments: &BTreeSet<u64>, segment_size: SegmentSize) -> TimelineReport {
    let name = |number| WalFileName::Segment { timeline, number }.to_name(segment_size);
    TimelineReport {
        timeline: timeline.to_string(),
        first: segments.first().map(|&n| name(n)).unwrap_or_default(),
        last: segments.last().map(|&n| name(n)).unwrap_or_default(),
        segments: segments.len() as u64,
        gaps: holes(segments)
            .into_iter()
            .map(|(first, last)| Gap { first: name(first), last: name(last), missing: last - first + 1 })
            .collect(),
    }
}

/// Inclusive ranges of numbers absent between the lowest and highest member of `segments`.
fn holes(segments: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut previous: Option<u64> = None;
    for &number in segments {
        if let Some(p) = previous
            && number > p + 1
        {
            out.push((p + 1, number - 1));
        }
        previous = Some(number);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_every_missing_run_between_lowest_and_highest() {
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        assert!(holes(&set(&[])).is_empty());
        assert!(holes(&set(&[3, 4, 5])).is_empty());
        assert_eq!(holes(&set(&[2, 4, 5, 9])), vec![(3, 3), (6, 8)]);
    }

    #[test]
    fn gaps_are_named_like_postgres_names_segments() {
        let size: SegmentSize = "16MB".parse().unwrap();
        let segments: BTreeSet<u64> = [0xFE, 0x101].into_iter().collect();
        let report = timeline_report(Timeline(2), &segments, size);
        assert_eq!(report.first, "0000000200000000000000FE");
        assert_eq!(report.last, "000000020000000100000001");
        assert_eq!(report.gaps[0].first, "0000000200000000000000FF");
        assert_eq!(report.gaps[0].last, "000000020000000100000000");
        assert_eq!(report.gaps[0].missing, 2);
        let (object, detail) = gap_problem(Timeline(2), 0xFF, 0x100, size);
        assert_eq!(object, "wal/00000002/0000000200000000000000FF");
        assert!(detail.contains("between archived 0000000200000000000000FE and 000000020000000100000001"), "{detail}");
    }
}
