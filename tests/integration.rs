//! radd's integration tests: the real binary against real PostgreSQL 15 clusters (initdb in temp
//! dirs on free ports) and real storage (a local directory, and SeaweedFS's S3 server started by
//! the harness on 127.0.0.1). Nothing is mocked and nothing is skipped.

mod common;

mod architecture;
mod archive;
mod backup_restore;
mod bad_input;
mod cli_edges;
mod concurrency;
mod daemon;
mod debian_layout;
mod deploy;
mod direct_io;
mod drill;
mod drill_safety;
mod event_rules;
mod faults;
mod fs;
mod index_format;
mod info;
mod interrupted;
mod old_formats;
mod pg_verifybackup;
mod pitr;
mod preflight;
mod progress;
mod prometheus;
mod repo_format;
mod restore_once;
mod restore_points;
mod restore_safety;
mod restore_spill;
mod retention;
mod scratch;
mod segsize;
mod standby;
mod storage;
mod tablespace;
mod verify;
mod wal_swap;
