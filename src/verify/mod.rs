//! `radd verify`: proves the repository could be restored, without restoring it.
//!
//! A verify is a restore whose sink discards bytes (DESIGN.md): it reads through the same path
//! restore uses — authenticated records, the [`BlobIndex`](crate::snapshot::BlobIndex), [`Repository::get_open`]'s
//! decrypt-and-check — so a passing verify means a restore would find, decrypt and authenticate
//! every object it needs. Nothing is written, locally or to the repository.
//!
//! Structure checks (always): every snapshot record authenticates, its manifest exists and is
//! the one the record committed, every chunk a manifest references is in an index, every pack an
//! index names exists (one listing of `packs/`), each base backup's WAL from its start to
//! stop segment is archived, and every timeline's archived segments form an unbroken run.
//! With `--read-data`, every pack and WAL object is also downloaded and opened (keyed digest,
//! age authentication, for packs and version 3 objects also the name they are stored under),
//! every WAL segment's page headers are checked against its name (a segment moved to another
//! name is corruption whatever its format version), and each blob a snapshot uses is re-hashed
//! against its id; objects are
//! read two at a time so memory stays bounded by a few packs, whatever the repository size.
//!
//! Every problem found goes into the [`VerifyReport`] instead of ending the run, so one verify
//! names all the damage; only failures that make checking impossible (storage unreachable,
//! no identity) are errors. Knows nothing of the CLI, events or metrics: callers render the
//! report and decide what a problem costs.

mod data;
mod schedule;
mod snapshots;
mod wal;
mod wanted;

pub use schedule::VerifiedRecord;
pub use wal::{AcceptedGap, accept_gap};

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use crate::error::ErrorKind;
use crate::repo;
use crate::repository::{self, Repository};
use crate::snapshot;
use crate::{archive, codec, crypto};

/// Errors that stop a verify. Damage found in the repository is not an error of `run`; it is a
/// [`Problem`] in the report. [`Error::Problems`] is how callers that want a failing exit
/// status (the CLI, cron) turn a report with problems into an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The verify ran and found problems; carries the count and the first for the message.
    #[error("verify found {count} problem{s} in repository {location}; first: {first}", s = if *.count == 1 { "" } else { "s" })]
    Problems {
        /// How many problems the report lists.
        count: usize,
        /// The repository checked.
        location: String,
        /// The first problem, rendered.
        first: String,
    },
    /// Reading snapshots or indexes failed for a reason other than damage (storage, keys).
    #[error(transparent)]
    Snapshot(Box<snapshot::Error>),
    /// Listing WAL failed.
    #[error(transparent)]
    Archive(Box<archive::Error>),
    /// Storage or key failure that makes checking impossible.
    #[error(transparent)]
    Repository(Box<repository::Error>),
    /// `--accept-gap` named something that is not a missing segment.
    #[error("cannot accept a gap at {segment}: {why}; name the first missing segment verify reports")]
    NotAGap {
        /// What was named.
        segment: String,
        /// Why it is not a gap.
        why: String,
    },
    /// The identity is not one of the repository's recipients: it would fail on every object,
    /// so this is one key problem, not one "modified object" per object.
    #[error(
        "the identity in keys.identity_file (recipient {recipient}) is not one of the recipients of repository {location} ({recipients}); configure the identity of one of them (`radd key list` shows them)"
    )]
    NotARecipient {
        /// The identity's public key.
        recipient: String,
        /// The repository's current recipients.
        recipients: String,
        /// The repository.
        location: String,
    },
}

// Boxed sources keep `Result<_, Error>` small on the hot paths (clippy::result_large_err).
impl From<snapshot::Error> for Error {
    fn from(e: snapshot::Error) -> Self {
        Error::Snapshot(Box::new(e))
    }
}

impl From<archive::Error> for Error {
    fn from(e: archive::Error) -> Self {
        Error::Archive(Box::new(e))
    }
}

impl From<repository::Error> for Error {
    fn from(e: repository::Error) -> Self {
        Error::Repository(Box::new(e))
    }
}

impl Error {
    /// Problems found are integrity failures (exit 3); anything else keeps its own category,
    /// so an unreachable store (exit 1) is never mistaken for a damaged repository.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Problems { .. } => ErrorKind::Integrity,
            Error::Snapshot(e) => e.kind(),
            Error::Archive(e) => e.kind(),
            Error::Repository(e) => e.kind(),
            Error::NotARecipient { .. } => ErrorKind::Crypto,
            Error::NotAGap { .. } => ErrorKind::Config,
        }
    }
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Also download and open every pack and WAL object (reads the whole repository once).
    pub read_data: bool,
    /// With `read_data`: read only these packs and WAL objects (all when `None`).
    pub subset: Option<Subset>,
    /// With `read_data`: bytes of the objects read, against the total of those to read.
    pub progress: crate::progress::Progress,
}

/// A deterministic part of the data objects, for verification spread over time.
#[derive(Debug, Clone, Default)]
pub struct Subset {
    /// `(n, m)`: objects whose key hashes to `n - 1` modulo `m` (the n-th of m slices).
    pub slice: Option<(u64, u64)>,
    /// Objects read in any case (e.g. overdue ones).
    pub also: std::collections::HashSet<String>,
}

impl Subset {
    /// Which slice (0-based, of `m`) an object key falls in: stable across runs and hosts.
    #[must_use]
    pub fn slice_of(key: &str, m: u64) -> u64 {
        let digest = crate::crypto::Digest::sha256(key.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.0[..8]);
        u64::from_le_bytes(first) % m.max(1)
    }

    /// Whether the object with this key is in the subset.
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.also.contains(key) || self.slice.is_some_and(|(n, m)| Self::slice_of(key, m) == n.saturating_sub(1))
    }
}

/// What kind of damage a [`Problem`] is. Serialised lower-case (`corrupt`, `missing`, `gap`,
/// `decrypt`, `timeline`): a stable wire value for scripts reading `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// The object exists but its content fails a check (digest, authentication, format).
    Corrupt,
    /// An object something depends on is absent.
    Missing,
    /// Archived WAL segments on a timeline have a hole.
    Gap,
    /// The object cannot be decrypted: tampered ciphertext, or encrypted to another key.
    Decrypt,
    /// A timeline's history file shows a fork whose parent kept archiving after it: two
    /// servers wrote into this repository at once (`restore latest` refuses to follow it).
    Timeline,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Missing => "missing",
            ProblemKind::Gap => "gap",
            ProblemKind::Decrypt => "decrypt",
            ProblemKind::Timeline => "timeline",
        })
    }
}

/// One piece of damage, naming the object so an operator can act on it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Object key (e.g. `packs/<id>`, `wal/00000001/<segment>`, `snapshots/<id>`).
    pub object: String,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Details: what check failed and what it means for restores.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.detail)
    }
}

/// A run of missing segments on one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// First missing segment name.
    pub first: String,
    /// Last missing segment name.
    pub last: String,
    /// Number of missing segments.
    pub missing: u64,
}

/// The archived WAL of one timeline (`wal/<timeline>/`).
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    /// Timeline id, as in segment names (`00000001`).
    pub timeline: String,
    /// Lowest archived segment.
    pub first: String,
    /// Highest archived segment.
    pub last: String,
    /// Segments archived.
    pub segments: u64,
    /// Holes between `first` and `last`; each is also a [`Problem`].
    pub gaps: Vec<Gap>,
}

/// The result of a verify: a wire format for `--json` (fields are only ever added).
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// No problems were found.
    pub ok: bool,
    /// Whether packs and WAL objects were downloaded and opened.
    pub read_data: bool,
    /// Objects downloaded and checked in full (records, indexes, manifests; with `--read-data`
    /// also packs and WAL objects).
    pub objects_checked: u64,
    /// Stored bytes of those objects.
    pub bytes_read: u64,
    /// Snapshot records found.
    pub snapshots: u64,
    /// Packs listed under `packs/`.
    pub packs: u64,
    /// Listed packs no index names (left by an interrupted backup; harmless, removed by prune).
    pub unreferenced_packs: u64,
    /// WAL segments archived, all timelines.
    pub wal_segments: u64,
    /// Archived WAL per timeline, with gaps.
    pub timelines: Vec<TimelineReport>,
    /// Gaps (by first missing segment) an operator accepted with `--accept-gap`: listed, not
    /// problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_gaps: Vec<String>,
    /// Every problem found, in the order found.
    pub problems: Vec<Problem>,
    /// Wall time in seconds.
    pub duration_seconds: f64,
    /// Keys of the packs and WAL objects read in full (for the record of what was verified when).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_objects_read: Vec<String>,
}

impl VerifyReport {
    fn problem(&mut self, kind: ProblemKind, object: impl Into<String>, detail: impl Into<String>) {
        self.push(Problem { object: object.into(), kind, detail: detail.into() });
    }

    fn push(&mut self, problem: Problem) {
        tracing::warn!(object = %problem.object, kind = %problem.kind, detail = %problem.detail, "verify problem");
        self.problems.push(problem);
    }

    /// Counts one object read and checked in full.
    fn read(&mut self, bytes: u64) {
        self.objects_checked += 1;
        self.bytes_read += bytes;
    }

    /// The report itself when it lists no problem, for callers that must fail on damage.
    ///
    /// # Errors
    /// [`Error::Problems`] (kind Integrity) naming the count and the first problem.
    pub fn into_result(self, location: &str) -> Result<Self, Error> {
        match self.problems.first() {
            None => Ok(self),
            Some(first) => Err(Error::Problems {
                count: self.problems.len(),
                location: location.to_owned(),
                first: first.to_string(),
            }),
        }
    }
}

/// Checks the repository; with `options.read_data` also reads every pack and WAL object.
/// Needs the identity (manifests are encrypted). Returns every problem found in the report;
/// fails only when checking itself is impossible (listing fails, storage unreachable, no
/// identity), never because of damage.
///
/// # Errors
/// Storage failures (listing or reading), a missing identity: kinds Storage, Config.
pub async fn run(repo: &Repository, options: &VerifyOptions) -> Result<VerifyReport, Error> {
    let clock = Instant::now();
    let recipient = repo.identity()?.recipients().to_strings();
    let recipients = repo.recipients.to_strings();
    if !recipient.iter().all(|r| recipients.contains(r)) {
        return Err(Error::NotARecipient {
            recipient: recipient.join(", "),
            recipients: recipients.join(", "),
            location: repo.location().to_owned(),
        });
    }
    let mut report = VerifyReport { read_data: options.read_data, ..VerifyReport::default() };
    options.progress.set_message("checking structure");

    let records = snapshots::records(repo, &mut report).await?;
    let index = snapshots::load_index(repo, &mut report).await?;
    let mut chunks = snapshots::ChunkCheck::new(index.as_ref(), options.read_data);
    snapshots::check_all(repo, &records, &mut chunks, &mut report).await?;
    let packs = data::check_packs(repo, index.as_ref(), &mut report).await?;

    let segment_size = match archive::segment_size(repo).await {
        Ok(size) => size,
        Err(e) if e.kind() == ErrorKind::Storage => return Err(e.into()),
        // A damaged size record (or, without one, a damaged segment to learn it from): reported,
        // and the WAL is read with the size the snapshots record.
        Err(e) => {
            report.problem(
                ProblemKind::Corrupt,
                repo::ObjectKey::SegmentSize.to_string(),
                format!("cannot tell the WAL segment size: {e}"),
            );
            records.iter().find_map(|r| r.pg.as_ref().map(|pg| pg.segment_size))
        }
    };
    let wal_objects = wal::check(repo, segment_size, &mut report).await?;

    if options.read_data {
        tracing::info!(packs = packs.len(), wal_objects = wal_objects.len(), "reading every pack and WAL object");
        let wanted = chunks.into_wanted()?;
        let subset = options.subset.clone();
        let jobs: Vec<data::Job> = data::pack_jobs(packs)
            .chain(data::wal_jobs(wal_objects))
            .filter(move |job| subset.as_ref().is_none_or(|s| s.contains(&job.key_string())))
            .collect();
        options.progress.set_total(jobs.iter().map(|job| job.size).sum());
        options.progress.set_message("reading objects");
        data::read_all(repo, jobs.into_iter(), &wanted, &mut report, &options.progress).await?;
    }
    report.ok = report.problems.is_empty();
    report.duration_seconds = clock.elapsed().as_secs_f64();
    tracing::info!(
        ok = report.ok,
        problems = report.problems.len(),
        objects = report.objects_checked,
        bytes = report.bytes_read,
        "verify finished"
    );
    Ok(report)
}

/// Turns a failure to read one object into a problem naming it, or passes the failure through
/// when it says nothing about the object (storage unreachable, no identity): those stop the
/// verify, because "could not look" must never read as "looked and found it fine or broken".
fn classify(error: repository::Error, object: &str) -> Result<Problem, Error> {
    use repository::Error as R;
    let (kind, detail) = match error {
        R::CorruptRecord { reason, .. } | R::Codec(codec::Error::Corrupt { reason, .. }) => {
            (ProblemKind::Corrupt, reason)
        }
        R::Repo(repo::Error::NotFound { .. }) => (ProblemKind::Missing, "not found in the repository".to_owned()),
        R::Codec(codec::Error::Crypto { source: source @ crypto::Error::Decrypt(_), .. }) => {
            (ProblemKind::Decrypt, format!("{source}; if other objects decrypt, this one was modified"))
        }
        R::Codec(codec::Error::Crypto { source, .. }) => (ProblemKind::Corrupt, source.to_string()),
        other => return Err(other.into()),
    };
    Ok(Problem { object: object.to_owned(), kind, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_one_integrity_error_naming_the_first() {
        let mut report = VerifyReport::default();
        assert!(report.clone().into_result("here").is_ok());
        report.problem(ProblemKind::Gap, "wal/00000001/000000010000000000000004", "segment missing");
        report.problem(ProblemKind::Corrupt, "packs/ab", "bad");
        let err = report.into_result("here").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        let message = err.to_string();
        assert!(message.contains("2 problems"), "{message}");
        assert!(message.contains("gap wal/00000001/000000010000000000000004"), "{message}");
    }

    #[test]
    fn storage_failures_are_not_problems() {
        let missing = repository::Error::Repo(repo::Error::NotFound { key: "packs/x".into(), location: "l".into() });
        assert_eq!(classify(missing, "packs/x").unwrap().kind, ProblemKind::Missing);
        let unreachable = repository::Error::Repo(repo::Error::Open { location: "l".into(), message: "down".into() });
        assert!(classify(unreachable, "packs/x").is_err());
        let decrypt = repository::Error::Codec(codec::Error::Crypto {
            object: "packs/x".into(),
            source: crypto::Error::Decrypt("bad tag".into()),
        });
        assert_eq!(classify(decrypt, "packs/x").unwrap().kind, ProblemKind::Decrypt);
    }
}
