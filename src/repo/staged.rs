//! Objects written in pieces, as they are produced (a WAL file while it is compressed and
//! encrypted), then published create-only.
//!
//! On the local backend the bytes go straight into a staging file beside the final path, under a
//! name the listing ignores (`<name>#<digits>`, as `object_store` names its own staging files);
//! publishing fsyncs the file, hard-links it into place (which fails if the name exists, so
//! nothing is overwritten), fsyncs the directory and removes the staging name. A sealed object is
//! thus never held in memory whole and never copied twice. The staging file is written past the
//! page cache ([`crate::dio`]) where the filesystem allows it, and every local put of a whole
//! object ([`Repo::put_new`]) takes this path too. Other backends buffer the bytes and publish
//! them with one create-only PUT.

use std::fs::{File, OpenOptions};
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;

use super::{Error, ObjectKey, PutOutcome, Repo};
use crate::dio::{self, DirectFile};

/// An object being written; see the module documentation. Dropping it unpublished removes its
/// staging file. The first write error is kept: a writer that fails part way (say, a
/// compressing pipeline whose other stages then stop with "ended early") asks
/// [`NewObject::write_error`] for the cause, named as a storage error of this object.
#[derive(Debug)]
pub struct NewObject {
    key: ObjectKey,
    /// Where the repository is, for errors.
    location: String,
    sink: Option<Sink>,
    failed: Option<std::io::Error>,
}

/// Bytes written to a staging file after which its writeback to disk is started (on another
/// thread), so that the final fsync only waits for the tail.
const WRITEBACK_EVERY: u64 = 4 << 20;

#[derive(Debug)]
enum Sink {
    /// Local backend: the open staging file, its path, the final path and the early writeback.
    File { file: File, staging: PathBuf, dest: PathBuf, writeback: Writeback },
    /// Local backend on a filesystem with `O_DIRECT`: the staging file written past the page
    /// cache ([`crate::dio`]), its path and the final path.
    Direct { file: DirectFile, staging: PathBuf, dest: PathBuf },
    /// Other backends: the bytes so far.
    Memory(Cursor<Vec<u8>>),
}

/// Early writeback of a staging file: every [`WRITEBACK_EVERY`] bytes, an `fdatasync` on a
/// clone of the file runs on its own thread while writing goes on. Its result is kept and
/// reported by [`Writeback::finish`]: an fsync error is reported only once by the kernel, so it
/// must not be lost.
#[derive(Debug, Default)]
struct Writeback {
    unsynced: u64,
    running: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    failed: Option<std::io::Error>,
}

impl Writeback {
    fn wrote(&mut self, file: &File, n: usize) {
        self.unsynced += n as u64;
        if self.unsynced < WRITEBACK_EVERY || self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        self.collect();
        if let Ok(clone) = file.try_clone() {
            self.unsynced = 0;
            self.running = Some(std::thread::spawn(move || clone.sync_data()));
        }
    }

    fn collect(&mut self) {
        if let Some(running) = self.running.take() {
            let result = running.join().unwrap_or_else(|_| Err(std::io::Error::other("writeback thread panicked")));
            if let Err(e) = result {
                self.failed.get_or_insert(e);
            }
        }
    }

    /// Waits for a running writeback; the first error any of them met.
    fn finish(&mut self) -> std::io::Result<()> {
        self.collect();
        self.failed.take().map_or(Ok(()), Err)
    }
}

impl NewObject {
    /// Flushes what was written to disk (local backend; a no-op otherwise), so that
    /// [`Repo::publish`] is left with only the link and the directory fsync. A failure (a full
    /// disk found only at writeback) names the object.
    pub fn sync(&mut self) -> Result<(), Error> {
        let synced = match self.sink() {
            Ok(Sink::File { file, writeback, .. }) => writeback.finish().and_then(|()| file.sync_all()),
            Ok(Sink::Direct { file, .. }) => file.finish(),
            Ok(Sink::Memory(_)) => Ok(()),
            Err(e) => Err(e),
        };
        synced.map_err(|e| self.error(e))
    }

    /// The first error met writing this object, as a storage error naming it (e.g. "no space
    /// left on device writing wal/… in repository …"), if any.
    pub fn write_error(&mut self) -> Option<Error> {
        let failed = self.failed.take()?;
        Some(self.error(failed))
    }

    fn error(&self, source: std::io::Error) -> Error {
        let source = object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(source) };
        super::classify(&self.location, "put", &self.key.to_string(), source)
    }

    /// Keeps the first write error and hands the writer a copy of it.
    fn failing(&mut self, e: std::io::Error) -> std::io::Error {
        let copy = std::io::Error::new(e.kind(), e.to_string());
        self.failed.get_or_insert(e);
        copy
    }

    fn sink(&mut self) -> std::io::Result<&mut Sink> {
        self.sink.as_mut().ok_or_else(|| std::io::Error::other("object already published"))
    }
}

impl Write for NewObject {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = match self.sink()? {
            Sink::File { file, writeback, .. } => file.write(buf).inspect(|&n| writeback.wrote(file, n)),
            Sink::Direct { file, .. } => file.write(buf),
            Sink::Memory(bytes) => bytes.write(buf),
        };
        written.map_err(|e| self.failing(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = match self.sink()? {
            Sink::File { file, .. } => file.flush(),
            Sink::Direct { file, .. } => file.flush(),
            Sink::Memory(_) => Ok(()),
        };
        flushed.map_err(|e| self.failing(e))
    }
}

impl Seek for NewObject {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let moved = match self.sink()? {
            Sink::File { file, .. } => file.seek(pos),
            Sink::Direct { file, .. } => file.seek(pos),
            Sink::Memory(bytes) => bytes.seek(pos),
        };
        moved.map_err(|e| self.failing(e))
    }
}

impl Drop for NewObject {
    fn drop(&mut self) {
        match &mut self.sink {
            Some(Sink::File { staging, writeback, .. }) => {
                writeback.collect();
                let _ = std::fs::remove_file(staging);
            }
            Some(Sink::Direct { staging, .. }) => {
                let _ = std::fs::remove_file(staging);
            }
            Some(Sink::Memory(_)) | None => {}
        }
    }
}

impl Repo {
    /// Starts a new object under `key`, to be written with [`Write`]/[`Seek`] and published with
    /// [`Repo::publish`]. Blocking (creates the staging file and any missing directories,
    /// durably): call it where blocking is allowed. `size_hint` sizes the buffer of non-local
    /// backends.
    pub fn new_object(&self, key: &ObjectKey, size_hint: usize) -> Result<NewObject, Error> {
        let Some(local) = &self.local else {
            return Ok(NewObject {
                key: key.clone(),
                location: self.location.clone(),
                sink: Some(Sink::Memory(Cursor::new(Vec::with_capacity(size_hint)))),
                failed: None,
            });
        };
        let name = key.to_string();
        let dest = local.path_to_filesystem(&self.path(&name)).map_err(|e| self.backend_error("put", &name, e))?;
        let sink = create_staging(dest).map_err(|e| self.io_error("put", &name, e))?;
        Ok(NewObject { key: key.clone(), location: self.location.clone(), sink: Some(sink), failed: None })
    }

    /// Publishes a written object create-only and durably: on `Created` its content and name are
    /// on disk (local: file fsync, hard link, directory fsync) or acknowledged by the store. On
    /// `AlreadyExists` the existing object is left untouched (and, locally, its directory entry
    /// is made durable too, in case its writer has not done so yet): the caller decides whether
    /// it is acceptable.
    pub async fn publish(&self, mut object: NewObject) -> Result<PutOutcome, Error> {
        let name = object.key.to_string();
        match object.sink.take() {
            Some(Sink::Memory(bytes)) => self.put_new(&object.key, Bytes::from(bytes.into_inner())).await,
            Some(sink) => tokio::task::spawn_blocking(move || publish_sink(sink))
                .await
                .map_err(|e| self.io_error("put", &name, std::io::Error::other(e)))?
                .map_err(|e| self.io_error("put", &name, e)),
            None => Err(self.io_error("put", &name, std::io::Error::other("object already published"))),
        }
    }

    /// [`Repo::put_new`] on the local backend: `data` written to a staging file (directly
    /// where the filesystem allows it) and published create-only like a streamed object.
    pub(super) async fn put_new_staged(&self, key: &ObjectKey, data: Bytes) -> Result<PutOutcome, Error> {
        let (repo, key, name) = (self.clone(), key.clone(), key.to_string());
        let shown = name.clone();
        tokio::task::spawn_blocking(move || {
            let mut object = repo.new_object(&key, 0)?;
            if let Err(e) = object.write_all(&data) {
                return Err(object.write_error().unwrap_or_else(|| repo.io_error("put", &name, e)));
            }
            match object.sink.take() {
                Some(sink) => publish_sink(sink).map_err(|e| repo.io_error("put", &name, e)),
                None => Err(repo.io_error("put", &name, std::io::Error::other("object already published"))),
            }
        })
        .await
        .map_err(|e| self.io_error("put", &shown, std::io::Error::other(e)))?
    }

    pub(super) fn io_error(&self, op: &'static str, key: &str, source: std::io::Error) -> Error {
        let source = object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(source) };
        self.backend_error(op, key, source)
    }
}

/// Creates a staging file `<dest>#<pid><n>` (digits only: hidden from listings) and its sink,
/// for direct writes where the filesystem allows them, creating missing parent directories
/// durably.
fn create_staging(dest: PathBuf) -> std::io::Result<Sink> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut created_dirs = false;
    loop {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{}{:06}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let staging = PathBuf::from(staging);
        let created = match dio::create_new(&staging) {
            Ok(Some(file)) => Ok(Sink::Direct { file, staging, dest: dest.clone() }),
            Ok(None) => OpenOptions::new().write(true).create_new(true).open(&staging).map(|file| Sink::File {
                file,
                staging,
                dest: dest.clone(),
                writeback: Writeback::default(),
            }),
            Err(e) => Err(e),
        };
        match created {
            Ok(sink) => return Ok(sink),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !created_dirs => {
                create_dirs_durably(dest.parent().unwrap_or(Path::new(".")))?;
                created_dirs = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates `dir` and its missing ancestors, then fsyncs each new directory and the existing
/// ancestor that gained an entry, so the new path survives a crash.
fn create_dirs_durably(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_owned());
        match d.parent() {
            Some(parent) => d = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for new in missing.iter().rev() {
        fsync_dir(new)?;
        fsync_dir(new.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Publishes a local staging file (blocking): waits for its writeback or writes its last
/// direct block, then [`publish_file`].
fn publish_sink(sink: Sink) -> std::io::Result<PutOutcome> {
    match sink {
        Sink::File { file, staging, dest, mut writeback } => {
            if let Err(e) = writeback.finish() {
                let _ = std::fs::remove_file(&staging);
                return Err(e);
            }
            if let Err(e) = file.sync_all() {
                let _ = std::fs::remove_file(&staging);
                return Err(e);
            }
            publish_file(&staging, &dest)
        }
        Sink::Direct { mut file, staging, dest } => {
            // Durable after this (a no-op if `NewObject::sync` already finished it).
            if let Err(e) = file.finish() {
                let _ = std::fs::remove_file(&staging);
                return Err(e);
            }
            publish_file(&staging, &dest)
        }
        Sink::Memory(_) => Err(std::io::Error::other("an object of a remote store has no staging file")),
    }
}

/// Hard-links a durable (fsync'd) staging file into place (create-only), fsyncs the directory,
/// drops the staging name.
fn publish_file(staging: &Path, dest: &Path) -> std::io::Result<PutOutcome> {
    let result = match std::fs::hard_link(staging, dest) {
        Ok(()) => Ok(PutOutcome::Created),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(staging);
    let outcome = result?;
    fsync_dir(dest.parent().unwrap_or(Path::new(".")))?;
    Ok(outcome)
}
