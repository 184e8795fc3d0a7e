//! `[archive]`: how `wal-push` drains a backlog and `wal-fetch` reads ahead.

use serde::{Deserialize, Serialize};

/// `[archive]`: how wal-push drains a backlog and wal-fetch reads ahead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveConfig {
    /// WAL files one `wal-push` seals at the same time: the requested one and others already
    /// marked `.ready` (see `push_ahead`); 1 = one after the other. They are streamed from disk
    /// to the repository, so each in flight holds only a few MiB (S3: its compressed size).
    #[serde(default = "default_push_parallel")]
    pub push_parallel: usize,
    /// Other `.ready` segments one `wal-push` archives after the requested one, published in
    /// name order (0 = only the requested one; `push_parallel = 1` also means none).
    #[serde(default = "default_push_ahead")]
    pub push_ahead: usize,
    /// Whether the backlog is archived by a detached drainer (`wal-push --drain`, one per
    /// `pg_wal`) while `wal-push` returns as soon as the requested file is durable (true), or by
    /// `wal-push` itself before it returns (false). Either way PostgreSQL's call for a file is
    /// acknowledged only once that file is durable in the repository.
    #[serde(default = "default_push_async")]
    pub push_async: bool,
    /// Threads compressing the 1 MiB blocks of one WAL file in parallel (each block is its own
    /// zstd frame); default: the number of CPUs. A backlog uses one per file, since several
    /// files are sealed at once.
    #[serde(default = "default_compress_workers")]
    pub compress_workers: u32,
    /// Segments `wal-fetch` prefetches into `pg_wal/radd-spool` (0 disables prefetching).
    #[serde(default = "default_prefetch")]
    pub fetch_prefetch: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            push_parallel: default_push_parallel(),
            push_ahead: default_push_ahead(),
            push_async: true,
            compress_workers: default_compress_workers(),
            fetch_prefetch: default_prefetch(),
        }
    }
}

fn default_push_parallel() -> usize {
    2
}
fn default_push_ahead() -> usize {
    16
}
fn default_push_async() -> bool {
    true
}
fn default_compress_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
}
fn default_prefetch() -> u64 {
    4
}
