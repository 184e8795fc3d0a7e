//! radd proves backups can be restored: continuous encrypted WAL archiving, deduplicated
//! encrypted base backups, and restores verified against their manifests.
//!
//! ```text
//! PostgreSQL ─archive_command─► archive::push ─┐   CLI ─► snapshot::backup_pg ◄─ pg (backup API)
//!                                              ▼                  ▼ chunks (blocks | CDC), id = keyed hash
//!                      codec::seal: keyed digest → zstd → age  (no age identity on this host)
//!                                              ▼
//!                      repo::put_new (create-only) ──► object_store: local fs | S3
//!                                              ▼
//!                      repo::get → codec::open (identity) → digest check (kind, key, content)
//!                         ├─► restore::run (snapshot → data dir, SHA-256 per file)
//!                         └─► archive::fetch (restore_command = radd wal-fetch; page headers vs name)
//! ```
//! Dependencies point one way: cli → restore → snapshot/archive → repository → codec → crypto,
//! with `repo` (storage) and `pg` as leaves.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod archive;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod dio;
pub mod drill;
pub mod error;
pub mod events;
pub mod faults;
pub mod jobs;
pub mod keyset;
pub mod metrics;
pub mod pg;
pub mod preflight;
pub mod progress;
pub mod repo;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod scratch;
pub mod snapshot;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
