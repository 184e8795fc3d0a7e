//! Running one test body on every storage backend, and the repository handle of a backend for
//! tests that talk to storage in-process (the storage conformance checks of tests/storage.rs).
//!
//! A body is written once with [`backend_matrix!`](crate::backend_matrix) and becomes one
//! `#[test]` per backend (`name::local`, `name::s3`), so a failure names its backend and
//! `cargo test s3` runs one column.

use radd::config::RepositoryConfig;
use radd::repo::{Repo, S3Credentials};
use tempfile::TempDir;

use super::env::{self, Backend};
use super::s3;

/// Every backend a repository can live on.
pub const ALL: [Backend; 2] = [Backend::Local, Backend::S3];

/// Writes a test once and runs it on every storage backend: the body becomes
/// `fn run(backend: Backend)` in a module named after the test, with one `#[test]` per backend
/// (`name::local`, `name::s3`).
#[macro_export]
macro_rules! backend_matrix {
    ($(#[$meta:meta])* fn $name:ident($backend:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::common::env::Backend;
            fn run($backend: Backend) $body
            #[test]
            fn local() { run(Backend::Local) }
            #[test]
            fn s3() { run(Backend::S3) }
        }
    };
}

/// A fresh, empty repository store opened in this process: a directory in a temp dir, or a
/// private prefix on the shared S3 server with its credentials given explicitly (no process-wide
/// environment). Not initialised: radd's format is not needed to check the storage contract.
pub struct TestStore {
    /// Owns the local repository (and names the S3 prefix); removed on drop.
    pub dir: TempDir,
    /// The backend.
    pub backend: Backend,
    /// The handle under test.
    pub repo: Repo,
}

impl TestStore {
    /// Opens an empty store on `backend`.
    pub fn new(backend: Backend) -> Self {
        let dir = tempfile::Builder::new().prefix("radd-store-").tempdir().expect("temp dir");
        let (repository, credentials) = match backend {
            Backend::Local => (format!("path = {:?}\n", dir.path().join("repo").display().to_string()), None),
            Backend::S3 => {
                let server = s3::shared();
                let repository = format!(
                    "backend = \"s3\"\nbucket = \"{}\"\nprefix = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\nallow_http = true\n",
                    server.bucket,
                    env::s3_prefix(dir.path()),
                    server.endpoint,
                    server.region
                );
                let credentials = S3Credentials {
                    access_key_id: server.access_key.clone(),
                    secret_access_key: server.secret_key.clone(),
                };
                (repository, Some(credentials))
            }
        };
        let config: RepositoryConfig = toml::from_str(&repository).expect("repository config");
        let repo = Repo::open_with(&config, credentials.as_ref()).expect("open the store");
        TestStore { dir, backend, repo }
    }
}
