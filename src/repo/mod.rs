//! The repository's storage: typed object keys (the layout in one place), create-only puts,
//! reads, listings and deletes over `object_store` (local file system or S3).
//!
//! Stores opaque bytes: knows nothing of WAL, PostgreSQL, age or zstd. Every write is
//! create-only (`PutMode::Create`: `If-None-Match: *` on S3, hard-link publish with fsync on the
//! local backend), so an object, once visible, never changes and a crash never leaves a torn one.

mod id;
mod layout;
mod litter;
pub mod lock;
mod retry;
mod staged;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path as StorePath;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use id::{BlobId, PackId, SnapshotId};
pub use layout::ObjectKey;
pub use retry::RetryPolicy;
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
    #[error(
        "{op} of {key} in repository {location} failed: {source}; check the storage backend is reachable and writable, then retry"
    )]
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
    /// A write found the file system full, over quota or read-only: nothing more can be
    /// stored until an operator acts, so it is not retried.
    #[error("{cause} writing {key} in repository {location}; {hint}")]
    NoRoom {
        /// Object key (or staging path) being written.
        key: String,
        /// Where the repository is.
        location: String,
        /// "no space left on device", "disk quota exceeded" or "read-only file system".
        cause: &'static str,
        /// What to do.
        hint: &'static str,
        /// The backend's error.
        source: Box<object_store::Error>,
    },
    /// A transient failure (5xx, SlowDown, reset connection, timeout) lasted longer than the
    /// retry budget.
    #[error(
        "{op} of {key} in repository {location} failed {spent}: {source}; check that the storage backend is reachable, then retry (or raise repository.retry_budget)"
    )]
    GaveUp {
        /// The operation (put, get, head, list, delete).
        op: &'static str,
        /// Object key or prefix.
        key: String,
        /// Where the repository is.
        location: String,
        /// How long it was retried.
        spent: Box<RetrySpent>,
        /// The last attempt's error.
        source: Box<object_store::Error>,
    },
}

/// How long an operation that failed was retried. Boxed in [`Error::GaveUp`]: every error of
/// the crate wraps this one, and each `Result` is as large as its largest error.
#[derive(Debug)]
pub struct RetrySpent {
    /// Attempts made.
    pub attempts: u32,
    /// Time spent.
    pub elapsed: std::time::Duration,
    /// The configured budget.
    pub budget: std::time::Duration,
}

impl std::fmt::Display for RetrySpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let RetrySpent { attempts, elapsed, budget } = self;
        write!(f, "after {attempts} attempt(s) over {elapsed:.1?} (repository.retry_budget = {budget:?})")
    }
}

impl Error {
    /// Not-found is distinguishable; everything else is a storage failure.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Open { .. } => ErrorKind::Config,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Backend { .. } | Error::NoRoom { .. } | Error::GaveUp { .. } => ErrorKind::Storage,
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

/// S3 credentials given explicitly instead of through the process environment, for a process
/// that opens stores of several identities at once (the storage conformance tests); radd itself
/// takes them from `AWS_*` variables or the instance's role (see [`Repo::open`]).
#[derive(Clone)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// A handle on the repository's object store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Repo {
    store: Arc<dyn ObjectStore>,
    /// The local backend, for objects written in pieces straight to their staging file.
    local: Option<Arc<object_store::local::LocalFileSystem>>,
    prefix: String,
    location: String,
    /// How failed operations are retried.
    retry: RetryPolicy,
}

impl Repo {
    /// Opens the configured backend. The local backend creates its directory if missing. S3
    /// requests are bounded by `request_timeout` and `connect_timeout`; `object_store`'s own
    /// retries are off, every operation retries through [`Repo::with_retries`] instead.
    /// S3 credentials come from the environment (`AWS_ACCESS_KEY_ID`, …, as
    /// `AmazonS3Builder::from_env` reads them).
    pub fn open(config: &RepositoryConfig) -> Result<Self, Error> {
        Self::open_with(config, None)
    }

    /// [`Repo::open`] with explicit S3 credentials, which take precedence over the environment's
    /// (the other `AWS_*` variables still apply); ignored by the local backend.
    pub fn open_with(config: &RepositoryConfig, credentials: Option<&S3Credentials>) -> Result<Self, Error> {
        let retry = RetryPolicy::with_budget(config.retry_budget());
        match config.backend {
            Backend::Local => {
                let path = config.path.clone().unwrap_or_default();
                let location = path.display().to_string();
                std::fs::create_dir_all(&path)
                    .map_err(|e| Error::Open { location: location.clone(), message: e.to_string() })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&path)
                    .map_err(|e| Error::Open { location: location.clone(), message: e.to_string() })?
                    .with_fsync(true);
                let store = Arc::new(store);
                Ok(Repo { local: Some(Arc::clone(&store)), store, prefix: String::new(), location, retry })
            }
            Backend::S3 => {
                let bucket = config.bucket.clone().unwrap_or_default();
                let prefix = config.prefix.trim_matches('/').to_owned();
                let location = format!("s3://{bucket}/{prefix}");
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_region(config.region.as_deref().unwrap_or("us-east-1"))
                    .with_allow_http(config.allow_http)
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), millis(config.request_timeout()))
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        millis(config.connect_timeout()),
                    )
                    .with_retry(object_store::RetryConfig { max_retries: 0, ..object_store::RetryConfig::default() });
                if let Some(credentials) = credentials {
                    builder = builder
                        .with_access_key_id(&credentials.access_key_id)
                        .with_secret_access_key(&credentials.secret_access_key);
                }
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
                }
                let store =
                    builder.build().map_err(|e| Error::Open { location: location.clone(), message: e.to_string() })?;
                Ok(Repo { store: Arc::new(store), local: None, prefix, location, retry })
            }
        }
    }

    /// Human-readable location (path or `s3://bucket/prefix`) for messages.
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> StorePath {
        if self.prefix.is_empty() { StorePath::from(key) } else { StorePath::from(format!("{}/{key}", self.prefix)) }
    }

    fn backend_error(&self, op: &'static str, key: &str, source: object_store::Error) -> Error {
        classify(&self.location, op, key, source)
    }

    /// Writes `data` under `key` unless an object already exists there (atomic, create-only).
    /// Retried on transient failures; a retry that finds an object there compares it with
    /// `data` (see [`Repo::settle_create`]), so a first attempt stored before its reply was
    /// lost counts as `Created`.
    pub async fn put_new(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome, Error> {
        if self.local.is_some() {
            // A staging file written past the page cache, linked into place: what the local
            // store's own create-only put does, without copying the object into the cache.
            return self.put_new_staged(key, data).await;
        }
        let name = key.to_string();
        let path = self.path(&name);
        let (outcome, attempts) = self
            .with_retries("put", &name, |_| {
                let (path, payload) = (&path, PutPayload::from_bytes(data.clone()));
                async move {
                    let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
                    match self.store.put_opts(path, payload, opts).await {
                        Ok(_) => Ok(PutOutcome::Created),
                        Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        self.settle_create(key, &data, outcome, attempts > 1).await
    }

    /// Replaces (or creates) a small mutable object atomically. Only for objects a single
    /// process owns, such as its own lock with a heartbeat; repository data is never overwritten.
    pub async fn put_overwrite(&self, key: &ObjectKey, data: Bytes) -> Result<(), Error> {
        let name = key.to_string();
        let path = self.path(&name);
        self.with_retries("put", &name, |_| {
            let (path, payload) = (&path, PutPayload::from_bytes(data.clone()));
            async move { self.store.put_opts(path, payload, PutOptions::default()).await.map(|_| ()) }
        })
        .await
        .map(|((), _)| ())
    }

    /// Reads a whole object (retried, body included, on transient failures).
    pub async fn get(&self, key: &ObjectKey) -> Result<Bytes, Error> {
        let name = key.to_string();
        let path = self.path(&name);
        let path = &path;
        self.with_retries("get", &name, |_| async move { self.store.get(path).await?.bytes().await })
            .await
            .map(|(bytes, _)| bytes)
    }

    /// [`Repo::get`] into `buffer` (its content is replaced), so a caller that recycles its
    /// buffers reads every object into memory it already holds. The body is streamed into it
    /// (the local backend reads the file on a blocking thread): no object-sized allocation is
    /// made on `object_store`'s threads and freed on another, which glibc's per-thread arenas
    /// would keep long after (peak RSS of a restore or verify).
    pub async fn get_into(&self, key: &ObjectKey, buffer: Vec<u8>) -> Result<Vec<u8>, Error> {
        let name = key.to_string();
        let path = self.path(&name);
        let path = &path;
        // Each attempt takes the buffer; one that fails leaves the next a fresh one.
        let spare = std::sync::Mutex::new(Some(buffer));
        let spare = &spare;
        self.with_retries("get", &name, |_| async move {
            let mut buffer = spare.lock().ok().and_then(|mut spare| spare.take()).unwrap_or_default();
            buffer.clear();
            let got = self.store.get(path).await?;
            let (range, path_of) = (got.range.clone(), got.meta.location.clone());
            match got.payload {
                object_store::GetResultPayload::File(file, file_path) => {
                    tokio::task::spawn_blocking(move || read_file_range(file, &file_path, range, buffer))
                        .await
                        .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?
                }
                object_store::GetResultPayload::Stream(mut body) => {
                    let wanted = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
                    buffer.reserve(wanted);
                    while let Some(chunk) = body.try_next().await? {
                        buffer.extend_from_slice(&chunk);
                    }
                    if buffer.len() != wanted {
                        return Err(object_store::Error::Generic {
                            store: "S3",
                            source: format!("{path_of}: the reply held {} bytes, not {wanted}", buffer.len()).into(),
                        });
                    }
                    Ok(buffer)
                }
            }
        })
        .await
        .map(|(buffer, _)| buffer)
    }

    /// Reads the first `len` bytes of an object (e.g. a header) with one ranged GET; the
    /// object must be at least `len` bytes long (every sealed object is).
    pub async fn get_prefix(&self, key: &ObjectKey, len: u64) -> Result<Bytes, Error> {
        let name = key.to_string();
        let path = self.path(&name);
        let path = &path;
        self.with_retries("get", &name, |_| async move { self.store.get_range(path, 0..len).await })
            .await
            .map(|(bytes, _)| bytes)
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &ObjectKey) -> Result<bool, Error> {
        let name = key.to_string();
        let path = self.path(&name);
        let path = &path;
        self.with_retries("head", &name, |_| async move {
            match self.store.head(path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
        .map(|(found, _)| found)
    }

    /// Lists every object whose key starts with `dir/` (recursively), sorted by key. A listing
    /// that fails part way (a reply body that broke off) is retried from the start.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>, Error> {
        let prefix = self.path(dir);
        let prefix = &prefix;
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let (mut out, _) = self
            .with_retries("list", dir, |_| async move {
                self.store
                    .list(Some(prefix))
                    .map_ok(|meta| Listed {
                        key: meta.location.as_ref()[strip..].to_owned(),
                        size: meta.size,
                        modified: meta.last_modified,
                    })
                    .try_collect::<Vec<Listed>>()
                    .await
            })
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object (used by tests and, later, prune). Deleting a missing object succeeds.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), Error> {
        let name = key.to_string();
        let path = self.path(&name);
        let path = &path;
        self.with_retries("delete", &name, |_| async move {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map(|((), _)| ())
    }
}

/// The error of a failed operation `op` on `key` in the repository at `location`: not found,
/// no room (full, over quota, read-only), or a backend failure.
fn classify(location: &str, op: &'static str, key: &str, source: object_store::Error) -> Error {
    if let Some(no_room) = retry::no_room(&source) {
        return Error::NoRoom {
            key: key.to_owned(),
            location: location.to_owned(),
            cause: no_room.cause(),
            hint: no_room.hint(),
            source: Box::new(source),
        };
    }
    match source {
        object_store::Error::NotFound { .. } => Error::NotFound { key: key.to_owned(), location: location.to_owned() },
        source => Error::Backend { op, key: key.to_owned(), location: location.to_owned(), source: Box::new(source) },
    }
}

/// A duration in the form `object_store`'s client options parse.
fn millis(duration: std::time::Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Reads `range` of a local object's open file into `buffer` (on a blocking thread).
fn read_file_range(
    mut file: std::fs::File,
    path: &std::path::Path,
    range: std::ops::Range<u64>,
    mut buffer: Vec<u8>,
) -> Result<Vec<u8>, object_store::Error> {
    use std::io::{Read, Seek, SeekFrom};
    let unreadable = |source: std::io::Error| object_store::Error::Generic {
        store: "local",
        source: format!("cannot read {}: {source}", path.display()).into(),
    };
    let wanted = range.end - range.start;
    buffer.reserve(usize::try_from(wanted).unwrap_or(0));
    file.seek(SeekFrom::Start(range.start)).map_err(unreadable)?;
    let read = file.take(wanted).read_to_end(&mut buffer).map_err(unreadable)?;
    if read as u64 != wanted {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{read} of {wanted} bytes: the object is shorter than its listing"),
        )));
    }
    Ok(buffer)
}
