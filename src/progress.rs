//! Progress of a long operation (backup, restore, verify, rewrap) as plain counters, so the
//! library can report how far it got without knowing how (or whether) it is shown.
//!
//! The library calls [`Progress::set_total`] once it knows how much there is to do and
//! [`Progress::advance`] as work flows (per batch, pack or object, never per byte); both are
//! relaxed atomic updates on a shared counter, with no lock and no allocation, and nothing at
//! all on the [`Progress::none`] handle every options struct defaults to. A display (the CLI's
//! terminal bar) reads a [`ProgressState`] from the same handle on its own schedule.
//!
//! Knows nothing of terminals, indicatif or of what is being counted (bytes or objects): the
//! caller that creates the handle decides how to render it. The lowest layer: imports nothing
//! from the crate, so every module may report progress.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `total` value meaning "not known (yet)".
const UNKNOWN: u64 = u64::MAX;

/// A cheap, cloneable handle on one operation's progress. Clones share the counters, so the
/// stages of a pipeline can each advance the same handle from their own threads.
///
/// The default ([`Progress::none`]) counts nothing and costs one branch per call.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Shared>>);

struct Shared {
    done: AtomicU64,
    total: AtomicU64,
    finished: AtomicBool,
    /// What the operation is doing now; written rarely (a phase change), read by the display.
    message: Mutex<String>,
}

/// What a display reads from a [`Progress`]: one consistent-enough look at its counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProgressState {
    /// Units done so far.
    pub done: u64,
    /// Units to do, when known.
    pub total: Option<u64>,
    /// The current phase, empty when none was set.
    pub message: String,
    /// [`Progress::finish`] was called.
    pub finished: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.state() {
            Some(state) => f.debug_tuple("Progress").field(&state).finish(),
            None => f.write_str("Progress(none)"),
        }
    }
}

impl Progress {
    /// A handle that counts nothing: what callers get that show no progress.
    #[must_use]
    pub fn none() -> Self {
        Self(None)
    }

    /// A handle whose counters a display can read with [`Progress::state`].
    #[must_use]
    pub fn counting() -> Self {
        Self(Some(Arc::new(Shared {
            done: AtomicU64::new(0),
            total: AtomicU64::new(UNKNOWN),
            finished: AtomicBool::new(false),
            message: Mutex::new(String::new()),
        })))
    }

    /// Whether anything reads this handle (false for [`Progress::none`]): lets a caller skip
    /// work done only to compute a total.
    #[must_use]
    pub fn is_counting(&self) -> bool {
        self.0.is_some()
    }

    /// Sets how many units the operation has to do (bytes or objects, as its caller defined).
    pub fn set_total(&self, total: u64) {
        if let Some(shared) = &self.0 {
            shared.total.store(total.min(UNKNOWN - 1), Ordering::Relaxed);
        }
    }

    /// Counts `units` more done. Safe from any number of threads at once.
    pub fn advance(&self, units: u64) {
        if let Some(shared) = &self.0 {
            shared.done.fetch_add(units, Ordering::Relaxed);
        }
    }

    /// Names the current phase ("reading files", "waiting for WAL"). Takes a lock: call it per
    /// phase, not per unit.
    pub fn set_message(&self, message: &str) {
        if let Some(shared) = &self.0
            && let Ok(mut current) = shared.message.lock()
        {
            message.clone_into(&mut current);
        }
    }

    /// Marks the operation done; a display stops showing it.
    pub fn finish(&self) {
        if let Some(shared) = &self.0 {
            shared.finished.store(true, Ordering::Relaxed);
        }
    }

    /// The counters now (`None` for [`Progress::none`]).
    #[must_use]
    pub fn state(&self) -> Option<ProgressState> {
        let shared = self.0.as_ref()?;
        let total = shared.total.load(Ordering::Relaxed);
        Some(ProgressState {
            done: shared.done.load(Ordering::Relaxed),
            total: (total != UNKNOWN).then_some(total),
            message: shared.message.lock().map(|m| m.clone()).unwrap_or_default(),
            finished: shared.finished.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let progress = Progress::counting();
        progress.set_total(8 * 10_000 * 3);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let handle = progress.clone();
                scope.spawn(move || {
                    for _ in 0..10_000 {
                        handle.advance(3);
                    }
                });
            }
        });
        let state = progress.state().expect("a counting handle has a state");
        assert_eq!(state.done, 240_000);
        assert_eq!(state.total, Some(240_000));
        assert!(!state.finished);
        progress.finish();
        assert!(progress.state().is_some_and(|s| s.finished));
    }

    #[test]
    fn the_default_counts_nothing() {
        let progress = Progress::default();
        progress.set_total(10);
        progress.advance(5);
        progress.set_message("reading");
        progress.finish();
        assert!(!progress.is_counting());
        assert_eq!(progress.state(), None);
        assert_eq!(format!("{progress:?}"), "Progress(none)");
    }

    #[test]
    fn total_is_unknown_until_set_and_messages_replace_each_other() {
        let progress = Progress::counting();
        assert_eq!(progress.state().map(|s| s.total), Some(None));
        progress.set_message("reading files");
        progress.set_message("waiting for WAL");
        progress.set_total(0);
        let state = progress.state().expect("counting");
        assert_eq!(state.total, Some(0));
        assert_eq!(state.message, "waiting for WAL");
    }
}
