//! Repositories written by the radd binaries that still created formats 1 and 2
//! (tests/fixtures/format-N, made by tests/fixtures/make-old-formats.sh), read and extended by
//! today's binary: listed, restored byte for byte, verified, their WAL fetched; new backups into
//! them keep the old format's objects; a damaged pack fails the restore naming it. Unlike
//! repo_format.rs, which relabels a fresh repository, nothing here was written by this code.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::Digest;

use crate::common::env::{TestEnv, json, noise, sql, stderr};

fn expected(env: &TestEnv) -> Value {
    serde_json::from_slice(&std::fs::read(env.path().join("expected.json")).unwrap()).unwrap()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn magic(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()[..8]).into_owned()
}

fn packs(env: &TestEnv) -> BTreeSet<PathBuf> {
    std::fs::read_dir(env.local_object("packs")).unwrap().map(|e| e.unwrap().path()).collect()
}

fn repo_format(env: &TestEnv) -> u64 {
    let config: Value = serde_json::from_slice(&std::fs::read(env.local_object("config")).unwrap()).unwrap();
    config["format"].as_u64().unwrap()
}

/// The tree `snapshot` was taken of (`source`, an absolute path) as restored under `target`.
fn restored_root(expected: &Value, target: &Path) -> PathBuf {
    target.join(expected["source"].as_str().unwrap().trim_start_matches('/'))
}

fn restore(env: &TestEnv, id: &str, name: &str) -> PathBuf {
    let target = env.path().join(name);
    let out = env.radd(&["restore", id, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "restore {id}: {}", stderr(&out));
    target
}

/// Every file, symlink and directory of `snapshot` (an entry of expected.json) is under `root`,
/// files byte for byte (SHA-256) with their mode and mtime; nothing else is.
fn assert_tree(root: &Path, snapshot: &Value) {
    let id = snapshot["id"].as_str().unwrap();
    let mut seen = BTreeSet::new();
    for (rel, want) in snapshot["files"].as_object().unwrap() {
        let path = root.join(rel);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{id}: {rel}: {e}"));
        assert_eq!(data.len() as u64, want["size"].as_u64().unwrap(), "{id}: {rel} size");
        assert_eq!(sha256(&data), want["sha256"].as_str().unwrap(), "{id}: {rel} content");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(u64::from(meta.mode() & 0o7777), want["mode"].as_u64().unwrap(), "{id}: {rel} mode");
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        assert_eq!(mtime_ns, i128::from(want["mtime_ns"].as_i64().unwrap()), "{id}: {rel} mtime");
        seen.insert(rel.clone());
    }
    for (rel, target) in snapshot["symlinks"].as_object().unwrap() {
        let link = std::fs::read_link(root.join(rel)).unwrap_or_else(|e| panic!("{id}: {rel}: {e}"));
        assert_eq!(link.to_str().unwrap(), target.as_str().unwrap(), "{id}: {rel} link target");
        seen.insert(rel.clone());
    }
    for rel in snapshot["dirs"].as_array().unwrap() {
        let rel = rel.as_str().unwrap();
        assert!(std::fs::symlink_metadata(root.join(rel)).unwrap().is_dir(), "{id}: {rel} is a directory");
        seen.insert(rel.to_owned());
    }
    assert_eq!(walk(root, root), seen, "{id}: the restored tree holds exactly the snapshot's entries");
}

fn walk(root: &Path, dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.insert(path.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk(root, &path));
        }
    }
    out
}

/// The name of the 16 MiB segment after `name`.
fn next_segment(name: &str) -> String {
    let number = |hex: &str| u64::from_str_radix(hex, 16).unwrap();
    let next = number(&name[8..16]) * 0x100 + number(&name[16..24]) + 1;
    format!("{}{:08X}{:08X}", &name[..8], next / 0x100, next % 0x100)
}

/// Where [`reads_everything`] fetches segment `name` to (a `pg_wal`-like directory).
fn fetched(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.path().join("fetched");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Lists every snapshot, restores both fs snapshots, verifies every object, fetches every
/// segment and history file.
fn reads_everything(env: &TestEnv, expected: &Value) {
    let format = expected["format"].as_u64().unwrap();
    let snapshots = expected["snapshots"].as_array().unwrap();
    let mut ids: BTreeSet<String> = snapshots.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    if let Some(pg) = expected["pg"].as_object() {
        ids.insert(pg["snapshot_id"].as_str().unwrap().to_owned());
    }
    // The archiving side lists without the identity.
    let listed = json(&env.radd_push(&["--json", "snapshots"]));
    let listed: BTreeSet<String> =
        listed.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed, ids, "format {format}: every snapshot the old binary wrote is listed");

    for (i, snapshot) in snapshots.iter().enumerate() {
        let target = restore(env, snapshot["id"].as_str().unwrap(), &format!("restored-{i}"));
        assert_tree(&restored_root(expected, &target), snapshot);
    }

    let out = env.radd(&["--json", "verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(0), "format {format}: verify --read-data: {}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["problems"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["snapshots"].as_u64().unwrap(), ids.len() as u64, "{report}");
    let segments = expected["wal"].as_array().unwrap();
    let whole = segments.iter().filter(|s| s["name"].as_str().unwrap().len() == 24).count();
    assert_eq!(report["wal_segments"].as_u64().unwrap(), whole as u64, "{report}");

    for segment in segments {
        let name = segment["name"].as_str().unwrap();
        let dest = fetched(env, name);
        let out = env.radd(&["wal-fetch", name, dest.to_str().unwrap()]);
        assert!(out.status.success(), "format {format}: wal-fetch {name}: {}", stderr(&out));
        assert_eq!(sha256(&std::fs::read(&dest).unwrap()), segment["sha256"].as_str().unwrap(), "{name}");
    }
    // Past the end of the archive: "not found" (exit 1), PostgreSQL's end of recovery.
    let last = segments.iter().map(|s| &s["name"].as_str().unwrap()[..24]).max().unwrap();
    let next = next_segment(last);
    let out = env.radd(&["wal-fetch", &next, env.path().join("past-end").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "format {format}: {next} is past the end: {}", stderr(&out));
}

/// `wal-push` recognises the old binary's WAL objects: the same segment again succeeds
/// (idempotent), other content under the same name fails loudly and stores nothing.
fn wal_push_knows_old_objects(env: &TestEnv, expected: &Value) {
    let format = expected["format"].as_u64().unwrap();
    let segment = &expected["wal"][0];
    let name = segment["name"].as_str().unwrap();
    let path = fetched(env, name);
    let again = env.radd_push(&["wal-push", path.to_str().unwrap()]);
    assert!(again.status.success(), "format {format}: re-push of {name}: {}", stderr(&again));

    // One byte in the payload of the last page, whose header is zero (after the WAL switch): the
    // pages still match the name, the checksum does not.
    let mut data = std::fs::read(&path).unwrap();
    let at = data.len() - 100;
    data[at] ^= 0x01;
    let other = env.path().join("other").join(name);
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, &data).unwrap();
    let out = env.radd_push(&["wal-push", other.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "format {format}: other content under {name} must not be archived");
    assert!(err.contains(name) && err.contains("different checksum"), "format {format}: {err}");
    let dest = env.path().join("after-conflict");
    let out = env.radd(&["wal-fetch", name, dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256(&std::fs::read(&dest).unwrap()), segment["sha256"].as_str().unwrap(), "{name} unchanged");
}

/// A new backup into the old repository succeeds, deduplicates against the old binary's chunks
/// (same ids: the format's keyed hash), writes objects of the old format and restores.
fn extends_in_its_own_format(env: &TestEnv, expected: &Value) {
    let format = expected["format"].as_u64().unwrap();
    assert_eq!(repo_format(env), format, "the fixture is a format-{format} repository");
    let before = packs(env);
    for pack in &before {
        assert_eq!(magic(pack), "RADDOBJ1", "the old binary's pack {}", pack.display());
    }
    // The second snapshot's tree, restored, plus one new file.
    let second = &expected["snapshots"][1];
    let tree = restored_root(expected, &restore(env, second["id"].as_str().unwrap(), "again"));
    let fresh = noise(200 << 10, 99);
    std::fs::write(tree.join("fresh.bin"), &fresh).unwrap();
    let backup = json(&env.radd_push(&["--json", "backup", "fs", tree.to_str().unwrap()]));
    assert_eq!(
        backup["new_bytes"].as_u64().unwrap(),
        fresh.len() as u64,
        "format {format}: only the new file is new, the old chunks are found under their ids: {backup:#}"
    );
    let id = backup["snapshot_id"].as_str().unwrap();

    assert_eq!(repo_format(env), format, "the repository stays format {format}");
    let new: Vec<PathBuf> = packs(env).difference(&before).cloned().collect();
    assert!(!new.is_empty(), "the backup wrote packs");
    for pack in &new {
        assert_eq!(magic(pack), "RADDOBJ1", "format {format}: new pack {}", pack.display());
    }
    assert_eq!(magic(&env.local_object(&format!("snapshots/{id}"))), "RADDREC1", "format {format}: new record");

    let target = restore(env, id, "new-restored");
    let root = target.join(tree.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(root.join("fresh.bin")).unwrap(), fresh);
    for (rel, want) in second["files"].as_object().unwrap() {
        let data = std::fs::read(root.join(rel)).unwrap();
        assert_eq!(sha256(&data), want["sha256"].as_str().unwrap(), "format {format}: {rel} in the new snapshot");
    }
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "format {format}: verify after the new backup: {}", stderr(&verify));
}

/// One flipped byte in the old binary's largest pack: the restore of the snapshot it belongs to
/// and `verify --read-data` fail as integrity errors (exit 3) naming the pack.
fn damaged_pack_fails_the_restore(env: &TestEnv, expected: &Value) {
    let pack = env.corrupt_a_pack();
    // The largest pack holds the big file's 640 KiB of distinct noise (first fs snapshot, shared
    // by the second); the base backup's packs compress to less.
    let size = std::fs::metadata(env.local_object(&pack)).unwrap().len();
    assert!(size > 640 << 10, "{pack} ({size} bytes) is the big file's pack");
    let id = expected["snapshots"][1]["id"].as_str().unwrap();
    let target = env.path().join("damaged");
    let out = env.radd(&["restore", id, "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "a damaged pack is an integrity error: {err}");
    assert!(err.contains(&pack), "the error names {pack}: {err}");
    let out = env.radd(&["--json", "verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(3), "verify --read-data: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["problems"].to_string().contains(&pack), "verify names {pack}: {report}");
}

fn old_format(name: &str, format: u64) {
    let env = TestEnv::from_fixture(name);
    let expected = expected(&env);
    assert_eq!(expected["format"], format);
    reads_everything(&env, &expected);
    wal_push_knows_old_objects(&env, &expected);
    extends_in_its_own_format(&env, &expected);
    let env = TestEnv::from_fixture(name);
    damaged_pack_fails_the_restore(&env, &expected);
}

/// Format 1 (HMAC-SHA256 ids), written by the binary of 2ec9063^ (b78fca7).
#[test]
fn format_1_written_by_an_old_binary_reads_and_extends() {
    old_format("format-1", 1);
}

/// Format 2 (keyed BLAKE3 ids), written by the binary of 14f3a11^ (45f5f06).
#[test]
fn format_2_written_by_an_old_binary_reads_and_extends() {
    old_format("format-2", 2);
}

/// The format-2 fixture's base backup, taken by the old binary with rows written before and
/// after it: today's radd restores it, PostgreSQL replays the old binary's archived WAL through
/// today's `wal-fetch`, and every row is there.
#[test]
fn format_2_base_backup_restores_and_replays_old_wal() {
    let env = TestEnv::from_fixture("format-2");
    let expected = expected(&env);
    let pg = &expected["pg"];
    let id = pg["snapshot_id"].as_str().expect("the format-2 fixture holds a base backup");
    let cluster = env.restore_and_start(id, "pg", &["--no-archive"]);
    assert_eq!(sql(&cluster, pg["query"].as_str().unwrap()), pg["answer"].as_str().unwrap());
}
