//! Direct reads of a large file kept ahead of the reading stage: two threads each hold one
//! read in flight, so the device always has the next batch to fetch (and a second to start
//! on) while the reader hands the last one to the hashers.
//!
//! A direct read bypasses the kernel's readahead: one thread reading batch after batch leaves
//! the device idle for every moment the thread spends between reads — waking a hasher, waiting
//! for a free place in the queue — which on the bench VM was a third of an incremental
//! backup's reading time. Two reads in flight also let the device work on both at once (a cold
//! 1 GiB file: 0.54–0.63 s with one `dd` at a time, 0.50 s with two halves at once).

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::dio;

/// Reads in flight at once (one per thread).
const LANES: usize = 2;

/// One read: `want` bytes of `file` at `offset` into `data`.
struct Request {
    file: Arc<File>,
    data: Vec<u8>,
    offset: u64,
    want: usize,
}

/// A finished read: the buffer and what [`dio::read_at`] read into it.
type Done = std::io::Result<(Vec<u8>, dio::Batch)>;

/// A reading thread with its request and result channels.
struct Lane {
    requests: SyncSender<Request>,
    results: Receiver<Done>,
}

/// The reading threads; see the module documentation. Dropping it ends them.
pub(super) struct ReadAhead {
    lanes: Vec<Lane>,
    /// Lanes with a read in flight, oldest first (results are taken in submission order).
    in_flight: VecDeque<usize>,
    next_lane: usize,
}

impl ReadAhead {
    /// Starts the threads.
    pub(super) fn start() -> std::io::Result<Self> {
        let lanes = (0..LANES)
            .map(|_| {
                let (requests, incoming) = sync_channel::<Request>(1);
                let (done, results) = sync_channel::<Done>(1);
                std::thread::Builder::new().name("radd-read-ahead".into()).spawn(move || {
                    for Request { file, mut data, offset, want } in incoming {
                        let read = dio::read_at(&file, &mut data, offset, want).map(|batch| (data, batch));
                        if done.send(read).is_err() {
                            return;
                        }
                    }
                })?;
                Ok(Lane { requests, results })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(ReadAhead { lanes, in_flight: VecDeque::new(), next_lane: 0 })
    }

    /// Whether another read can be submitted now.
    pub(super) fn has_room(&self) -> bool {
        self.in_flight.len() < LANES
    }

    /// Whether any read is in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Starts reading `want` bytes of `file` at `offset` into `data` (see [`dio::read_at`]).
    pub(super) fn submit(&mut self, file: &Arc<File>, data: Vec<u8>, offset: u64, want: usize) -> std::io::Result<()> {
        let lane = self.next_lane;
        let request = Request { file: Arc::clone(file), data, offset, want };
        self.lanes[lane].requests.send(request).map_err(|_| stopped())?;
        self.in_flight.push_back(lane);
        self.next_lane = (lane + 1) % LANES;
        Ok(())
    }

    /// The oldest read's result (waits for it); `None` when nothing is in flight.
    pub(super) fn next(&mut self) -> Option<Done> {
        let lane = self.in_flight.pop_front()?;
        Some(self.lanes[lane].results.recv().unwrap_or_else(|_| Err(stopped())))
    }

    /// Waits for every read in flight and drops what they read (a file that ended early or
    /// failed: nothing of it may reach the next file's reads).
    pub(super) fn discard(&mut self) {
        while self.next().is_some() {}
    }
}

fn stopped() -> std::io::Error {
    std::io::Error::other("a read-ahead thread stopped")
}
