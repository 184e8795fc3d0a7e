//! Retries of storage operations that failed for a reason that may pass, and the classification
//! of storage failures.
//!
//! `object_store`'s own retry loop is switched off (see [`Repo::open`]): it retries 5xx replies
//! but not a reset connection or a timeout of a PUT (not idempotent to it), nor a LIST whose
//! reply body broke off, and it logs below warn. Every operation of [`Repo`] runs through
//! [`Repo::with_retries`] instead: transient failures (5xx, 429 and 408 replies, SlowDown,
//! connection errors and resets, timeouts) are retried with exponential backoff and jitter
//! until `repository.retry_budget` has passed since the first attempt; permanent ones
//! (not found, already exists, denied, a full or read-only file system, any failure of the
//! local backend's disk) fail at once. A
//! create-only PUT retried after a failed attempt may find its own first attempt stored: see
//! [`Repo::settle_create`].
//!
//! No-room failures (ENOSPC, EDQUOT, EROFS) are recognised anywhere in an error's source chain
//! and reported as such ([`Error::NoRoom`]), never as a generic I/O failure.

use std::error::Error as StdError;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Error, ObjectKey, PutOutcome, Repo};

/// How storage operations are retried (from `[repository]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Time within which every retry of one operation starts (the last pause is cut short to
    /// fit): the operation ends at most one request later (zero: no retries).
    pub budget: Duration,
    /// Pause before the first retry; doubled after each, up to `max_backoff`, with jitter.
    pub first_backoff: Duration,
    /// Longest pause between two attempts.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The policy for a retry budget: pauses from 100 ms up to 5 s.
    #[must_use]
    pub fn with_budget(budget: Duration) -> Self {
        RetryPolicy { budget, first_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5) }
    }
}

/// Why a write found no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoRoom {
    /// ENOSPC.
    Space,
    /// EDQUOT.
    Quota,
    /// EROFS.
    ReadOnly,
}

impl NoRoom {
    fn of(io: &std::io::Error) -> Option<Self> {
        use std::io::ErrorKind;
        match io.kind() {
            ErrorKind::StorageFull => Some(NoRoom::Space),
            ErrorKind::QuotaExceeded => Some(NoRoom::Quota),
            ErrorKind::ReadOnlyFilesystem => Some(NoRoom::ReadOnly),
            _ => None,
        }
    }

    /// The cause, as the message names it.
    pub(super) fn cause(self) -> &'static str {
        match self {
            NoRoom::Space => "no space left on device",
            NoRoom::Quota => "disk quota exceeded",
            NoRoom::ReadOnly => "read-only file system",
        }
    }

    /// What the operator does about it.
    pub(super) fn hint(self) -> &'static str {
        match self {
            NoRoom::Space => "free space or grow the filesystem, then retry",
            NoRoom::Quota => "free space or raise the quota, then retry",
            NoRoom::ReadOnly => "remount it read-write, then retry",
        }
    }
}

/// The errors in `error`'s source chain, itself first.
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// Whether some error in the chain is a full, over-quota or read-only file system.
pub(super) fn no_room(error: &(dyn StdError + 'static)) -> Option<NoRoom> {
    chain(error).find_map(|e| e.downcast_ref::<std::io::Error>().and_then(NoRoom::of))
}

/// The HTTP status in an `object_store` request error's text ("… status code: 503 …"): its
/// status-carrying error type is private, and the text format is fixed by the locked version.
fn status_in(text: &str) -> Option<u16> {
    let (_, after) = text.split_once("status code: ")?;
    after.get(..3)?.parse().ok()
}

/// Whether a failed storage operation may succeed when tried again.
pub(super) fn transient(error: &object_store::Error) -> bool {
    let object_store::Error::Generic { store, source } = error else {
        // Not found, already exists, precondition, denied, unauthenticated, not implemented,
        // invalid path: trying again gives the same answer.
        return false;
    };
    if *store == "LocalFileSystem" {
        // A local disk's failures (I/O errors, permissions, a short file) do not pass by waiting.
        return false;
    }
    let source: &(dyn StdError + 'static) = source.as_ref();
    if no_room(source).is_some() {
        return false;
    }
    if let Some(status) = status_in(&source.to_string()) {
        return status >= 500 || status == 429 || status == 408;
    }
    chain(source).any(|e| {
        // Any failure of the HTTP exchange itself: connect, reset, timeout, a body that broke off.
        e.is::<object_store::client::HttpError>()
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                use std::io::ErrorKind::{
                    BrokenPipe, ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted, NotConnected,
                    TimedOut, UnexpectedEof,
                };
                matches!(
                    io.kind(),
                    BrokenPipe
                        | ConnectionAborted
                        | ConnectionRefused
                        | ConnectionReset
                        | Interrupted
                        | NotConnected
                        | TimedOut
                        | UnexpectedEof
                )
            })
    })
}

/// `pause` with jitter: uniformly between half of it and all of it, so that concurrent
/// uploads that failed together do not retry in lockstep.
fn jittered(pause: Duration) -> Duration {
    let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::random_range(millis / 2..=millis))
}

impl Repo {
    /// Runs `call` (given the attempt number, from 1) until it succeeds, fails permanently, or
    /// the retry budget is spent; returns its value and the number of attempts. Each retry is
    /// logged at warn with the operation, key, attempt and error. A permanent failure is mapped
    /// by [`Repo::backend_error`]; a transient one that outlasts the budget becomes
    /// [`Error::GaveUp`].
    pub(super) async fn with_retries<T, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut call: impl FnMut(u32) -> Fut,
    ) -> Result<(T, u32), Error>
    where
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        let started = Instant::now();
        let mut pause = self.retry.first_backoff;
        let mut attempt = 1u32;
        loop {
            match call(attempt).await {
                Ok(value) => {
                    if attempt > 1 {
                        tracing::info!(
                            op,
                            key,
                            attempts = attempt,
                            seconds = started.elapsed().as_secs_f64(),
                            "storage operation succeeded after retries"
                        );
                    }
                    return Ok((value, attempt));
                }
                Err(error) if transient(&error) => {
                    let elapsed = started.elapsed();
                    if elapsed >= self.retry.budget {
                        return Err(Error::GaveUp {
                            op,
                            key: key.to_owned(),
                            location: self.location.clone(),
                            spent: Box::new(super::RetrySpent {
                                attempts: attempt,
                                elapsed,
                                budget: self.retry.budget,
                            }),
                            source: Box::new(error),
                        });
                    }
                    let wait = jittered(pause).min(self.retry.budget - elapsed);
                    tracing::warn!(op, key, attempt, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %error, "storage operation failed; retrying");
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(error) => return Err(self.backend_error(op, key, error)),
            }
        }
    }

    /// The outcome of a create-only PUT of `data` that answered "already exists". After a
    /// failed attempt (`retried`) that answer may be our own first attempt, stored before its
    /// reply was lost: the existing object is read and compared byte for byte — the same bytes
    /// are `Created`, other bytes stay `AlreadyExists` (the caller treats that as a conflict,
    /// or checks the content itself). A first attempt's answer is passed on untouched.
    pub(super) async fn settle_create(
        &self,
        key: &ObjectKey,
        data: &Bytes,
        outcome: PutOutcome,
        retried: bool,
    ) -> Result<PutOutcome, Error> {
        if outcome != PutOutcome::AlreadyExists || !retried {
            return Ok(outcome);
        }
        let existing = self.get(key).await?;
        if existing == *data {
            tracing::info!(key = %key, "a retried create-only put found its own earlier attempt stored");
            Ok(PutOutcome::Created)
        } else {
            tracing::warn!(key = %key, "a retried create-only put found a different object under its key");
            Ok(PutOutcome::AlreadyExists)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::config::RepositoryConfig;

    fn local_repo(dir: &std::path::Path, budget: Duration) -> Repo {
        let config: RepositoryConfig =
            toml::from_str(&format!("path = {:?}", dir.display().to_string())).expect("config");
        let mut repo = Repo::open(&config).expect("open local repo");
        repo.retry =
            RetryPolicy { budget, first_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(4) };
        repo
    }

    fn generic(source: impl StdError + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: Box::new(source) }
    }

    #[test]
    fn failures_are_classified() {
        let reset = generic(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(transient(&reset));
        let full = generic(std::io::Error::from_raw_os_error(28));
        assert!(!transient(&full));
        let local = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        };
        assert!(!transient(&local), "local disk failures are not retried");
        assert_eq!(no_room(&full), Some(NoRoom::Space));
        assert_eq!(no_room(&generic(std::io::Error::from_raw_os_error(30))), Some(NoRoom::ReadOnly));
        assert_eq!(no_room(&generic(std::io::Error::from_raw_os_error(122))), Some(NoRoom::Quota));
        let status = |s: &str| {
            generic(std::io::Error::other(format!(
                "Error performing PUT http://127.0.0.1/b/k in 2ms - Server returned non-2xx status code: {s}: <Error/>"
            )))
        };
        assert!(transient(&status("503 Service Unavailable")));
        assert!(transient(&status("500 Internal Server Error")));
        assert!(transient(&status("429 Too Many Requests")));
        assert!(!transient(&status("400 Bad Request")));
        let missing = object_store::Error::NotFound { path: "k".into(), source: "gone".into() };
        assert!(!transient(&missing));
        assert!(!transient(&generic(std::io::Error::other("invalid list response"))));
        assert_eq!(status_in("status code: 503 Service Unavailable"), Some(503));
        assert_eq!(status_in("no status here"), None);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_within_the_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = local_repo(dir.path(), Duration::from_secs(10));
        let calls = AtomicU32::new(0);
        let (value, attempts) = repo
            .with_retries("put", "packs/x", |attempt| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if attempt < 3 {
                        Err(generic(std::io::Error::from(std::io::ErrorKind::ConnectionReset)))
                    } else {
                        Ok(attempt)
                    }
                }
            })
            .await
            .expect("succeeds on the third attempt");
        assert_eq!((value, attempts, calls.load(Ordering::SeqCst)), (3, 3, 3));

        let permanent = repo
            .with_retries("get", "packs/x", |_| async {
                Err::<(), _>(object_store::Error::NotFound { path: "packs/x".into(), source: "gone".into() })
            })
            .await
            .expect_err("not found is not retried");
        assert!(matches!(permanent, Error::NotFound { .. }), "{permanent}");

        let repo = local_repo(dir.path(), Duration::from_millis(30));
        let started = Instant::now();
        let gave_up = repo
            .with_retries("list", "wal", |_| async {
                Err::<(), _>(generic(std::io::Error::from(std::io::ErrorKind::TimedOut)))
            })
            .await
            .expect_err("an outage longer than the budget fails");
        assert!(started.elapsed() < Duration::from_secs(5), "gave up within the budget");
        let text = gave_up.to_string();
        assert!(matches!(gave_up, Error::GaveUp { spent, .. } if spent.attempts > 1), "{text}");
        assert!(text.contains("list of wal in repository") && text.contains("retry_budget"), "{text}");
    }

    #[tokio::test]
    async fn a_retried_create_finds_its_own_object_and_not_another() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = local_repo(dir.path(), Duration::from_secs(1));
        let key = ObjectKey::Pack("abc".into());
        let ours = Bytes::from_static(b"the pack as sealed");
        assert_eq!(repo.put_new(&key, ours.clone()).await.expect("put"), PutOutcome::Created);
        // As if the first attempt's reply had been lost and the retry met the stored object.
        assert_eq!(
            repo.settle_create(&key, &ours, PutOutcome::AlreadyExists, true).await.expect("settle"),
            PutOutcome::Created
        );
        let other = Bytes::from_static(b"a different object");
        assert_eq!(
            repo.settle_create(&key, &other, PutOutcome::AlreadyExists, true).await.expect("settle"),
            PutOutcome::AlreadyExists,
            "a different object is a conflict"
        );
        assert_eq!(
            repo.settle_create(&key, &ours, PutOutcome::AlreadyExists, false).await.expect("settle"),
            PutOutcome::AlreadyExists,
            "a first attempt's answer is kept"
        );
        assert_eq!(repo.put_new(&key, other).await.expect("put"), PutOutcome::AlreadyExists);
    }
}
