//! The shared test harness: real S3 server, real PostgreSQL clusters, the real radd binary.
#![allow(dead_code)]

pub mod backend;
pub mod env;
pub mod faults;
pub mod pause;
pub mod pg;
pub mod s3;
pub mod setup;
pub mod wal;
