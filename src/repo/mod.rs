//! The repository's storage: typed object keys (the layout in one place), create-only puts,
//! reads, listings and deletes over `object_store` (local file system or S3).
//!
//! Stores opaque bytes: knows nothing of WAL, PostgreSQL, age or zstd. Every write is
//! create-only (`PutMode::Create`: `If-None-Match: *` on S3, hard-link publish with fsync on the
//! local backend), so an object, once visible, never changes and a crash never leaves a torn one.

mod layout;
mod litter;
pub mod lock;
mod staged;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use layout::ObjectKey;
pub use staged::NewObject;

use crate::config::{Backend, RepositoryConfig};
use crate::error::ErrorKind;

/// Errors from the storage backend, each naming the object and backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend could not be set up from the configuration.
    #[error("cannot open repository {location}: {message}")]
    Open {
        /// Where the repository is.
        location: String,
        /// Why.
        message: String,
    },
    /// The object does not exist.
    #[error("object {key} not found in repository {location}")]
    NotFound {
        /// Object key.
        key: String,
        /// Where the repository is.
        location: String,
    },
    /// A storage operation failed.
    #[error("{op} of {key} in repository {location} failed: {source}; check the storage backend is reachable and writable, then retry")]
    Backend {
        /// The operation (put, get, list, delete).
        op: &'static str,
        /// Object key or prefix.
        key: String,
        /// Where the repository is.
        location: String,
        /// The backend's error (boxed: it is large, and errors travel through every layer).
        source: Box<object_store::Error>,
    },
}

impl Error {
    /// Not-found is distinguishable; everything else is a storage failure.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Open { .. } => ErrorKind::Config,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Backend { .. } => ErrorKind::Storage,
        }
    }
}

/// Result of a create-only put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written.
    Created,
    /// An object already existed under that key and was left untouched; the caller must decide
    /// whether its content is acceptable (never assume it is).
    AlreadyExists,
}

/// An object listed in the repository.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key relative to the repository root, e.g. `wal/00000001/000000010000000000000003`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the store last wrote the object (its creation time: objects are never rewritten).
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// A handle on the repository's object store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Repo {
    store: Arc<dyn ObjectStore>,
    /// The local backend, for objects written in pieces straight to their staging file.
    local: Option<Arc<object_store::local::LocalFileSystem>>,
    prefix: String,
    location: String,
}

impl Repo {
    /// Opens the configured backend. The local backend creates its directory if missing.
    pub fn open(config: &RepositoryConfig) -> Result<Self, Error> {
        match config.backend {
            Backend::Local => {
                let path = config.path.clone().unwrap_or_default();
                let location = path.display().to_string();
                std::fs::create_dir_all(&path).map_err(|e| Error::Open {
                    location: location.clone(),
                    message: e.to_string(),
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&path)
                    .map_err(|e| Error::Open {
                        location: location.clone(),
                        message: e.to_string(),
                    })?
                    .with_fsync(true);
                let store = Arc::new(store);
                Ok(Repo {
                    local: Some(Arc::clone(&store)),
                    store,
                    prefix: String::new(),
                    location,
                })
            }
            Backend::S3 => {
                let bucket = config.bucket.clone().unwrap_or_default();
                let prefix = config.prefix.trim_matches('/').to_owned();
                let location = format!("s3://{bucket}/{prefix}");
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_region(config.region.as_deref().unwrap_or("us-east-1"))
                    .with_allow_http(config.allow_http);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                let store = builder.build().map_err(|e| Error::Open {
                    location: location.clone(),
                    message: e.to_string(),
                })?;
                Ok(Repo {
                    store: Arc::new(store),
                    local: None,
                    prefix,
                    location,
                })
            }
        }
    }

    /// Human-readable location (path or `s3://bucket/prefix`) for messages.
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(key)
        } else {
            StorePath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn backend_error(&self, op: &'static str, key: &str, source: object_store::Error) -> Error {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_owned(),
                location: self.location.clone(),
            },
            source => Error::Backend {
                op,
                key: key.to_owned(),
                location: self.location.clone(),
                source: Box::new(source),
            },
        }
    }

    /// Writes `data` under `key` unless an object already exists there (atomic, create-only).
    pub async fn put_new(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome, Error> {
        let key = key.to_string();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(&key), PutPayload::from_bytes(data), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.backend_error("put", &key, e)),
        }
    }

    /// Replaces (or creates) a small mutable object atomically. Only for objects a single
    /// process owns, such as its own lock with a heartbeat; repository data is never overwritten.
    pub async fn put_overwrite(&self, key: &ObjectKey, data: Bytes) -> Result<(), Error> {
        let key = key.to_string();
        self.store
            .put_opts(&self.path(&key), PutPayload::from_bytes(data), PutOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| self.backend_error("put", &key, e))
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &ObjectKey) -> Result<Bytes, Error> {
        let key = key.to_string();
        let result = self
            .store
            .get(&self.path(&key))
            .await
            .map_err(|e| self.backend_error("get", &key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.backend_error("get", &key, e))
    }

    /// Reads the first `len` bytes of an object (e.g. a header) with one ranged GET; the
    /// object must be at least `len` bytes long (every sealed object is).
    pub async fn get_prefix(&self, key: &ObjectKey, len: u64) -> Result<Bytes, Error> {
        let key = key.to_string();
        self.store
            .get_range(&self.path(&key), 0..len)
            .await
            .map_err(|e| self.backend_error("get", &key, e))
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &ObjectKey) -> Result<bool, Error> {
        let key = key.to_string();
        match self.store.head(&self.path(&key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend_error("head", &key, e)),
        }
    }

    /// Lists every object whose key starts with `dir/` (recursively), sorted by key.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>, Error> {
        let prefix = self.path(dir);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out: Vec<Listed> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| Listed {
                key: meta.location.as_ref()[strip..].to_owned(),
                size: meta.size,
                modified: meta.last_modified,
            })
            .try_collect()
            .await
            .map_err(|e| self.backend_error("list", dir, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object (used by tests and, later, prune). Deleting a missing object succeeds.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), Error> {
        let key = key.to_string();
        match self.store.delete(&self.path(&key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend_error("delete", &key, e)),
        }
    }
}
