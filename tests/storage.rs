//! The storage contract (docs/design.md §8.1) checked once per backend through radd's own
//! storage handle, [`radd::repo::Repo`]: each check is a plain `async fn` taking a store, run on
//! a local directory and on the real S3 server (`storage::<check>::local`, `…::s3`), so the two
//! backends are held to one contract instead of hand-paired test bodies.
//!
//! Every check gets a fresh, empty store (its own directory or S3 prefix), so listings can be
//! compared exactly.

use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use radd::error::ErrorKind;
use radd::repo::{Error, ObjectKey, PutOutcome, Repo};

use crate::common::backend::TestStore;
use crate::common::env::{block_on, noise};

/// One `#[test]` per check and backend; the check runs on a fresh store of that backend.
macro_rules! contract {
    ($($(#[$meta:meta])* $check:ident),* $(,)?) => {
        $(
            crate::backend_matrix! {
                $(#[$meta])*
                fn $check(backend) {
                    let store = TestStore::new(backend);
                    block_on(super::$check(&store.repo));
                }
            }
        )*
    };
}

contract! {
    create_only_put,
    overwrite_put,
    missing_object_is_not_found,
    ranged_get,
    list_is_confined_to_its_prefix,
    delete,
    large_objects,
    keys_radd_uses,
    unpublished_object_is_invisible,
}

fn pack(id: &str) -> ObjectKey {
    ObjectKey::Pack(id.to_owned())
}

fn wal(dir: &str, name: &str) -> ObjectKey {
    ObjectKey::Wal { dir: dir.to_owned(), name: name.to_owned() }
}

async fn get(repo: &Repo, key: &ObjectKey) -> Bytes {
    repo.get(key).await.unwrap_or_else(|e| panic!("get {key}: {e}"))
}

async fn put_new(repo: &Repo, key: &ObjectKey, data: impl Into<Bytes>) -> PutOutcome {
    repo.put_new(key, data.into()).await.unwrap_or_else(|e| panic!("put {key}: {e}"))
}

/// The keys listed under `dir`, in the listing's order.
async fn keys(repo: &Repo, dir: &str) -> Vec<String> {
    repo.list(dir).await.unwrap_or_else(|e| panic!("list {dir:?}: {e}")).into_iter().map(|l| l.key).collect()
}

/// Writes `data` as a streamed object (the way WAL is written) in pieces of `piece` bytes.
fn write_streamed(repo: &Repo, key: &ObjectKey, data: &[u8], piece: usize) -> radd::repo::NewObject {
    let mut object = repo.new_object(key, data.len()).expect("new object");
    for part in data.chunks(piece) {
        object.write_all(part).expect("write a piece");
    }
    object.sync().expect("sync");
    object
}

fn assert_not_found(result: Result<Bytes, Error>, key: &ObjectKey) {
    match result {
        Err(e @ Error::NotFound { .. }) => {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains(&key.to_string()), "the error names the key: {e}");
        }
        Err(e) => panic!("{key}: expected a not-found error, got {e}"),
        Ok(bytes) => panic!("{key}: expected a not-found error, got {} bytes", bytes.len()),
    }
}

/// A second create-only put of a key, by a single request or a published streamed object,
/// reports that the object exists and leaves its content as the first put wrote it.
async fn create_only_put(repo: &Repo) {
    let key = pack("create-only");
    assert_eq!(put_new(repo, &key, "the first content").await, PutOutcome::Created);
    assert_eq!(put_new(repo, &key, "other content").await, PutOutcome::AlreadyExists);
    assert_eq!(put_new(repo, &key, "the first content").await, PutOutcome::AlreadyExists, "even the same bytes");
    let streamed = write_streamed(repo, &key, b"streamed other content", 4);
    assert_eq!(repo.publish(streamed).await.expect("publish"), PutOutcome::AlreadyExists);
    assert_eq!(get(repo, &key).await, "the first content", "the object never changes");
    assert!(repo.exists(&key).await.expect("head"));
    assert_eq!(keys(repo, "").await, [key.to_string()], "no second object, no staging file listed");
}

/// An overwriting put (a lock's heartbeat) creates the object, then replaces it whole.
async fn overwrite_put(repo: &Repo) {
    let key = ObjectKey::Lock("host-4242-conform".to_owned());
    repo.put_overwrite(&key, Bytes::from_static(b"heartbeat 1, a longer first version")).await.expect("create");
    assert_eq!(get(repo, &key).await, "heartbeat 1, a longer first version");
    repo.put_overwrite(&key, Bytes::from_static(b"heartbeat 2")).await.expect("overwrite");
    assert_eq!(get(repo, &key).await, "heartbeat 2", "replaced whole, no tail of the longer version");
    let listed = repo.list(ObjectKey::LOCK_DIR).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].key.as_str(), listed[0].size), (key.to_string().as_str(), 11));
}

/// Reading a key nobody wrote is a typed not-found (never an empty object or a storage failure).
async fn missing_object_is_not_found(repo: &Repo) {
    let key = pack("never-written");
    assert_not_found(repo.get(&key).await, &key);
    assert_not_found(repo.get_prefix(&key, 40).await, &key);
    assert!(!repo.exists(&key).await.expect("head"));
    assert!(keys(repo, ObjectKey::PACK_DIR).await.is_empty());
    assert!(keys(repo, "").await.is_empty(), "the store is empty");
}

/// The first 40 bytes (a sealed object's header) come back with one ranged read.
async fn ranged_get(repo: &Repo) {
    let key = wal("00000001", "000000010000000000000001");
    let data = noise(100_000, 1);
    put_new(repo, &key, data.clone()).await;
    let head = repo.get_prefix(&key, 40).await.expect("ranged get");
    assert_eq!(head.len(), 40);
    assert_eq!(&head[..], &data[..40]);
    assert_eq!(get(repo, &key).await, data, "the whole object is still there");
}

/// A listing returns every object under its prefix, recursively and sorted, with its size and
/// creation time; nothing outside it, not even a key that merely starts with the same letters
/// (`wal-segment-size` beside `wal/`); the empty prefix lists the whole repository.
async fn list_is_confined_to_its_prefix(repo: &Repo) {
    let started = chrono::Utc::now() - chrono::Duration::minutes(5);
    let objects = [
        (wal("00000001", "000000010000000000000002"), 3),
        (wal("00000001", "000000010000000000000001"), 5),
        (wal("00000002", "00000002.history"), 7),
        (ObjectKey::SegmentSize, 11),
        (pack("aa"), 13),
        (ObjectKey::Index("aa".to_owned()), 17),
    ];
    for (key, size) in &objects {
        put_new(repo, key, vec![b'x'; *size]).await;
    }
    let listed = repo.list(ObjectKey::WAL_DIR).await.expect("list wal");
    let got: Vec<(&str, u64)> = listed.iter().map(|l| (l.key.as_str(), l.size)).collect();
    assert_eq!(
        got,
        [
            ("wal/00000001/000000010000000000000001", 5),
            ("wal/00000001/000000010000000000000002", 3),
            ("wal/00000002/00000002.history", 7),
        ],
        "sorted, recursive, with sizes, and not wal-segment-size"
    );
    let now = chrono::Utc::now() + chrono::Duration::minutes(5);
    assert!(listed.iter().all(|l| l.modified > started && l.modified < now), "{listed:?}");
    assert_eq!(
        keys(repo, "wal/00000001").await,
        ["wal/00000001/000000010000000000000001", "wal/00000001/000000010000000000000002"]
    );
    assert_eq!(keys(repo, ObjectKey::PACK_DIR).await, ["packs/aa"]);
    assert!(keys(repo, "wal/00000003").await.is_empty());
    assert!(keys(repo, "pack").await.is_empty(), "a prefix is whole path segments");
    let mut all: Vec<String> = objects.iter().map(|(key, _)| key.to_string()).collect();
    all.sort();
    assert_eq!(keys(repo, "").await, all, "the empty prefix lists everything, relative to the repository");
}

/// A deleted object is gone from reads and listings; deleting a missing object succeeds.
async fn delete(repo: &Repo) {
    let (gone, kept) = (pack("to-delete"), pack("to-keep"));
    put_new(repo, &gone, "doomed").await;
    put_new(repo, &kept, "kept").await;
    repo.delete(&gone).await.expect("delete");
    assert_not_found(repo.get(&gone).await, &gone);
    assert!(!repo.exists(&gone).await.expect("head"));
    assert_eq!(keys(repo, ObjectKey::PACK_DIR).await, ["packs/to-keep"]);
    repo.delete(&gone).await.expect("deleting a deleted object succeeds");
    repo.delete(&pack("never-written")).await.expect("deleting a missing object succeeds");
    assert_eq!(get(repo, &kept).await, "kept", "only the named object is deleted");
    // A deleted key may be created again (prune deletes, a later backup may re-upload).
    assert_eq!(put_new(repo, &gone, "again").await, PutOutcome::Created);
    assert_eq!(get(repo, &gone).await, "again");
}

/// Objects far larger than a WAL segment round-trip exactly, put whole and streamed (the
/// streamed one past several of the local backend's early-writeback steps). `Repo` writes every
/// object with one request (it has no multipart path), so this is the single-PUT limit in use.
async fn large_objects(repo: &Repo) {
    let whole = pack("large-whole");
    let data = noise(40 << 20, 2);
    assert_eq!(put_new(repo, &whole, data.clone()).await, PutOutcome::Created);
    assert!(get(repo, &whole).await == data, "the 40 MiB object reads back exactly");

    let streamed = wal("00000001", "000000010000000000000010");
    let data = noise(24 << 20, 3);
    let object = write_streamed(repo, &streamed, &data, 1 << 20);
    assert_eq!(repo.publish(object).await.expect("publish"), PutOutcome::Created);
    assert!(get(repo, &streamed).await == data, "the streamed 24 MiB object reads back exactly");
    let sizes: Vec<u64> = repo.list("").await.expect("list").iter().map(|l| l.size).collect();
    assert_eq!(sizes, [40 << 20, 24 << 20], "ordered by key: packs/… then wal/…");
}

/// Every shape of key radd writes (WAL names with `.`, history and `.partial` files, `_`-escaped
/// gap and restore-point names, `-` in locks and key sets, top-level records) stores, lists and
/// reads back under exactly that key.
async fn keys_radd_uses(repo: &Repo) {
    let all = [
        ObjectKey::Config,
        ObjectKey::IdKey,
        ObjectKey::KeySet(3),
        ObjectKey::SegmentSize,
        wal("00000001", "000000010000000000000005"),
        wal("00000001", "000000010000000000000005.00000028.backup"),
        wal("00000001", "00000001000000000000000A.partial"),
        wal("0000000A", "0000000A.history"),
        pack("3f9c0e7d1b2a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5"),
        ObjectKey::Index("0123abcd".to_owned()),
        ObjectKey::Manifest("20261202T183700Z-1a2b3c4d".to_owned()),
        ObjectKey::Snapshot("20261202T183700Z-1a2b3c4d".to_owned()),
        ObjectKey::Pin("20261202T183700Z-1a2b3c4d".to_owned()),
        ObjectKey::Condemned("0123abcd".to_owned()),
        ObjectKey::Lock("db-1.example-31337-1764700000".to_owned()),
        ObjectKey::AcceptedGap("wal_00000001_000000010000000000000004".to_owned()),
        ObjectKey::RestorePoint("before_20upgrade_3A-v2".to_owned()),
    ];
    for (i, key) in all.iter().enumerate() {
        assert_eq!(put_new(repo, key, format!("object {i}: {key}")).await, PutOutcome::Created, "{key}");
    }
    for (i, key) in all.iter().enumerate() {
        assert_eq!(get(repo, key).await, format!("object {i}: {key}"), "{key}");
        assert!(repo.exists(key).await.expect("head"), "{key}");
    }
    let mut expected: Vec<String> = all.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(keys(repo, "").await, expected);
}

/// An object written but never published (its writer failed or was stopped part way) is not
/// visible: no read, head or listing finds it, and dropping it leaves no staging file behind.
async fn unpublished_object_is_invisible(repo: &Repo) {
    let key = wal("00000001", "000000010000000000000003");
    let cutoff = SystemTime::now() + Duration::from_secs(3600);
    let object = write_streamed(repo, &key, &noise(5 << 20, 4), 64 << 10);
    assert_not_found(repo.get(&key).await, &key);
    assert!(!repo.exists(&key).await.expect("head"));
    assert!(keys(repo, "").await.is_empty(), "a staging object is never listed");
    let staging = repo.remove_stale_staging(cutoff, true).expect("count staging files");
    let local = !repo.location().starts_with("s3://");
    assert_eq!(staging, usize::from(local), "the local backend stages a file, S3 buffers in memory");
    drop(object);
    assert_eq!(repo.remove_stale_staging(cutoff, true).expect("count staging files"), 0, "staging file removed");
    assert_not_found(repo.get(&key).await, &key);
    // The key is still free: the next writer creates it.
    assert_eq!(put_new(repo, &key, "the real segment").await, PutOutcome::Created);
    assert_eq!(get(repo, &key).await, "the real segment");
}
