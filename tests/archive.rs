//! wal-push / wal-fetch semantics without a cluster: idempotence, no overwrite, exit codes.

use std::path::Path;

use crate::common::env::{Backend, TestEnv, stderr};

fn segment_file(dir: &Path, name: &str, fill: u8) -> String {
    let path = dir.join(name);
    std::fs::write(&path, crate::common::wal::segment(vec![fill; 16 << 20], name)).expect("write fake segment");
    path.display().to_string()
}

fn push_is_idempotent_and_never_overwrites(backend: Backend) {
    let env = TestEnv::new(backend);
    let wal = env.path().join("pg_wal");
    std::fs::create_dir(&wal).unwrap();
    let seg = segment_file(&wal, "000000010000000000000005", 7);
    let out = env.radd_push(&["wal-push", &seg]);
    assert!(out.status.success(), "first push: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "wal-push must be silent on success");
    let out = env.radd_push(&["wal-push", &seg]);
    assert!(out.status.success(), "identical re-push must succeed: {}", stderr(&out));

    let other = env.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let changed = segment_file(&other, "000000010000000000000005", 9);
    let out = env.radd_push(&["wal-push", &changed]);
    assert_eq!(out.status.code(), Some(1), "different content must fail: {}", stderr(&out));
    assert!(stderr(&out).contains("different checksum"), "{}", stderr(&out));

    // The original is intact: fetch returns the first content.
    let dest = env.path().join("fetched");
    let out = env.radd(&["wal-fetch", "000000010000000000000005", dest.to_str().unwrap()]);
    assert!(out.status.success(), "fetch: {}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&seg).unwrap());

    // History and .backup files are archived too; odd names are refused.
    std::fs::write(wal.join("00000002.history"), "1\t0/5000000\tno recovery target specified\n").unwrap();
    let out = env.radd_push(&["wal-push", wal.join("00000002.history").to_str().unwrap()]);
    assert!(out.status.success(), "history push: {}", stderr(&out));
    std::fs::write(wal.join("000000010000000000000005.00000028.backup"), "START WAL LOCATION: 0/5000028\n").unwrap();
    let out = env.radd_push(&["wal-push", wal.join("000000010000000000000005.00000028.backup").to_str().unwrap()]);
    assert!(out.status.success(), "backup history push: {}", stderr(&out));
    std::fs::write(wal.join("notawal"), "x").unwrap();
    let out = env.radd_push(&["wal-push", wal.join("notawal").to_str().unwrap()]);
    assert!(!out.status.success(), "a non-WAL name must be refused");

    // Past the end of the archive: exit 1 (PostgreSQL ends recovery). Absent history: exit 1.
    let out = env.radd(&["wal-fetch", "000000010000000000000006", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = env.radd(&["wal-fetch", "00000003.history", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // A hole before an archived segment is a gap: exit > 125 so recovery aborts.
    let out = env.radd(&["wal-fetch", "000000010000000000000004", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("WAL gap"), "{}", stderr(&out));
}

crate::backend_matrix! {
    /// Identical re-pushes succeed, different content is refused, odd names too; fetch exit codes.
    fn wal_push_idempotent(backend) {
        push_is_idempotent_and_never_overwrites(backend);
    }
}

#[test]
fn archiving_host_cannot_decrypt() {
    let env = TestEnv::new(Backend::Local);
    let wal = env.path().join("pg_wal");
    std::fs::create_dir(&wal).unwrap();
    let seg = segment_file(&wal, "000000010000000000000001", 3);
    assert!(env.radd_push(&["wal-push", &seg]).status.success());
    let out = env.radd_push(&["wal-fetch", "000000010000000000000001", "/tmp/never"]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("identity"), "{}", stderr(&out));
    // Stored bytes are not the plaintext.
    let stored = std::fs::read(env.local_object("wal/00000001/000000010000000000000001")).unwrap();
    assert!(!stored.windows(64).any(|w| w.iter().all(|&b| b == 3)), "segment stored unencrypted");
}

#[test]
fn wal_push_drains_the_ready_backlog_and_fetch_prefetches() {
    let env = TestEnv::new(Backend::Local);
    std::fs::write(
        &env.push_config,
        std::fs::read_to_string(&env.push_config).unwrap() + "\n[archive]\npush_parallel = 4\n",
    )
    .unwrap();
    let wal = env.path().join("pg_wal");
    std::fs::create_dir_all(wal.join("archive_status")).unwrap();
    let names: Vec<String> = (1..=4).map(|n| format!("0000000100000000000000{n:02X}")).collect();
    for (i, name) in names.iter().enumerate() {
        segment_file(&wal, name, 10 + i as u8);
        std::fs::write(wal.join("archive_status").join(format!("{name}.ready")), "").unwrap();
    }
    // One call archives the requested segment and starts the drainer, which archives the three
    // others waiting.
    let out = env.radd_push(&["wal-push", wal.join(&names[0]).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.local_object(&format!("wal/00000001/{}", names[0])).exists(), "the requested one is durable first");
    assert_eq!(wait_for_drainer(&wal), 3, "the drainer stores the three waiting");
    for name in &names {
        assert!(env.local_object(&format!("wal/00000001/{name}")).exists(), "{name} not archived ahead");
    }
    // PostgreSQL's later calls for them succeed as "already archived".
    let out = env.radd_push(&["wal-push", wal.join(&names[3]).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Fetch the first: the next ones land, verified, in the spool and are served from there.
    let restore = env.path().join("restore_wal");
    std::fs::create_dir(&restore).unwrap();
    let out = env.radd(&["wal-fetch", &names[0], restore.join("RECOVERYXLOG").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spool = restore.join("radd-spool");
    for name in &names[1..] {
        assert!(spool.join(name).exists(), "{name} not prefetched");
    }
    let out = env.radd(&["wal-fetch", &names[1], restore.join("RECOVERYXLOG").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!spool.join(&names[1]).exists(), "served segment must leave the spool");
    assert_eq!(std::fs::read(restore.join("RECOVERYXLOG")).unwrap(), std::fs::read(wal.join(&names[1])).unwrap());
    // End of the archive: exit 1 and the spool is cleaned.
    let out = env.radd(&["wal-fetch", "000000010000000000000009", restore.join("RECOVERYXLOG").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!spool.exists(), "spool must be removed at the end of recovery");
}

// --- Streamed pushes, backlog drain, markers (issue 5) ------------------------------------------

/// A fake `pg_wal` with `n` segments 1..=n marked `.ready` (distinct contents); their names.
fn ready_backlog(env: &TestEnv, n: u32) -> (std::path::PathBuf, Vec<String>) {
    let wal = env.path().join("pg_wal");
    std::fs::create_dir_all(wal.join("archive_status")).unwrap();
    let names: Vec<String> = (1..=n).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut data = crate::common::env::noise(16 << 20, i as u64);
        data[..(8 << 20)].fill(i as u8); // half compressible, half not
        std::fs::write(wal.join(name), crate::common::wal::segment(data, name)).unwrap();
        std::fs::write(wal.join("archive_status").join(format!("{name}.ready")), "").unwrap();
    }
    (wal, names)
}

/// Waits for the backlog drainer a `wal-push` started (`archive.push_async`) to finish (its log
/// ends with "backlog drained"); returns how many segments it stored.
fn wait_for_drainer(wal: &Path) -> usize {
    let log = wal.join(radd::archive::MARKER_DIR).join(radd::archive::DRAIN_LOG);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("backlog drained")) {
            let stored = line.rsplit("stored=").next().and_then(|n| n.trim().parse().ok());
            return stored.unwrap_or_else(|| panic!("no count in {line:?}"));
        }
        assert!(std::time::Instant::now() < deadline, "the drainer did not finish; its log: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn set_archive(env: &TestEnv, settings: &str) {
    let config = std::fs::read_to_string(&env.push_config).unwrap();
    std::fs::write(&env.push_config, format!("{config}\n[archive]\n{settings}\n")).unwrap();
}

/// PostgreSQL's archiver: one call per `.ready` segment, oldest first, `.ready` → `.done` on
/// exit 0. Panics on a failed call.
fn archive_like_postgres(env: &TestEnv, wal: &Path, names: &[String]) {
    for name in names {
        let out = env.radd_push(&["wal-push", wal.join(name).to_str().unwrap()]);
        assert!(out.status.success(), "wal-push {name}: {}", stderr(&out));
        let status = wal.join("archive_status");
        std::fs::rename(status.join(format!("{name}.ready")), status.join(format!("{name}.done"))).unwrap();
    }
}

fn backlog_drains_in_order_and_round_trips(backend: Backend, push_async: bool) {
    let env = TestEnv::new(backend);
    set_archive(&env, &format!("push_parallel = 3\npush_ahead = 4\ncompress_workers = 2\npush_async = {push_async}"));
    let (wal, names) = ready_backlog(&env, 11);
    archive_like_postgres(&env, &wal, &names);
    if backend == Backend::Local {
        // Published in name order: each object's inode changed (linked into place) no earlier
        // than the one before it.
        use std::os::unix::fs::MetadataExt;
        let published: Vec<(i64, i64)> = names
            .iter()
            .map(|name| {
                let meta = std::fs::metadata(env.local_object(&format!("wal/00000001/{name}"))).unwrap();
                (meta.ctime(), meta.ctime_nsec())
            })
            .collect();
        assert!(published.windows(2).all(|w| w[0] <= w[1]), "published out of order: {published:?}");
    }
    // Every segment reads back exactly (streamed objects open with the identity, digest checked).
    for name in &names {
        let dest = env.path().join("fetched");
        let out = env.radd(&["wal-fetch", name, dest.to_str().unwrap()]);
        assert!(out.status.success(), "fetch {name}: {}", stderr(&out));
        assert!(std::fs::read(&dest).unwrap() == std::fs::read(wal.join(name)).unwrap(), "{name} differs");
    }
    // The markers of segments archived ahead were all used up, and the chain is complete.
    let markers = wal.join(radd::archive::MARKER_DIR);
    // (The drainer's lock and log, dot files, stay.)
    let left: Vec<_> = std::fs::read_dir(&markers)
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.file_name()).filter(|n| !n.to_string_lossy().starts_with('.')).collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "markers left behind: {left:?}");
    let out = env.radd(&["verify"]);
    assert!(out.status.success(), "verify: {}", stderr(&out));
}

crate::backend_matrix! {
    /// A `.ready` backlog is archived ahead in order and every segment reads back exactly.
    fn wal_push_backlog_drain(backend) {
        backlog_drains_in_order_and_round_trips(backend, true);
    }
}

/// The same with `push_async = false`: each call archives the files after its own before it
/// returns.
#[test]
fn wal_push_backlog_drains_inline() {
    backlog_drains_in_order_and_round_trips(Backend::Local, false);
}

#[test]
fn wal_push_backlog_stops_at_a_failure_without_leaving_a_gap() {
    let env = TestEnv::new(Backend::Local);
    set_archive(&env, "push_parallel = 2\npush_ahead = 5");
    let (wal, names) = ready_backlog(&env, 6);
    // Segment 3 cannot be read (a directory where the file should be).
    std::fs::remove_file(wal.join(&names[2])).unwrap();
    std::fs::create_dir(wal.join(&names[2])).unwrap();
    let out = env.radd_push(&["wal-push", wal.join(&names[0]).to_str().unwrap()]);
    assert!(out.status.success(), "the requested segment alone decides: {}", stderr(&out));
    assert_eq!(wait_for_drainer(&wal), 1, "the drainer stops at the broken segment");
    let archived = |name: &str| env.local_object(&format!("wal/00000001/{name}")).exists();
    assert!(archived(&names[0]) && archived(&names[1]), "segments before the failure are archived");
    for name in &names[2..] {
        assert!(!archived(name), "{name} published after a failed segment: the archive would show a gap");
    }
    let staged: Vec<_> = std::fs::read_dir(env.local_object("wal/00000001"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains('#'))
        .collect();
    assert!(staged.is_empty(), "staging files left behind: {staged:?}");
    // PostgreSQL's own call for the broken one fails loudly, and nothing after it is archived.
    let out = env.radd_push(&["wal-push", wal.join(&names[2]).to_str().unwrap()]);
    assert!(!out.status.success(), "an unreadable segment must not be acknowledged");
    assert!(!archived(&names[3]));
}

#[test]
fn wal_push_marker_is_no_acknowledgement_without_the_stored_object() {
    let env = TestEnv::new(Backend::Local);
    set_archive(&env, "push_parallel = 2\npush_ahead = 3");
    let (wal, names) = ready_backlog(&env, 4);
    let out = env.radd_push(&["wal-push", wal.join(&names[0]).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_drainer(&wal);
    let markers = wal.join(radd::archive::MARKER_DIR);
    assert!(markers.join(&names[1]).exists(), "a segment archived ahead gets a marker");

    // The object vanished from the repository: the marker alone does not acknowledge it, the
    // call archives the segment again (durably) before exit 0.
    std::fs::remove_file(env.local_object(&format!("wal/00000001/{}", names[1]))).unwrap();
    let out = env.radd_push(&["wal-push", wal.join(&names[1]).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.local_object(&format!("wal/00000001/{}", names[1])).exists(), "re-archived");

    // The file changed after it was archived ahead (new content, new mtime): its marker no longer
    // matches, so the file is read and compared, and the difference is refused loudly.
    std::fs::write(wal.join(&names[2]), crate::common::wal::segment(vec![0xA5u8; 16 << 20], &names[2])).unwrap();
    let out = env.radd_push(&["wal-push", wal.join(&names[2]).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("different checksum"), "{}", stderr(&out));

    // An unchanged file with its marker is acknowledged from the marker, and the marker is used up.
    let out = env.radd_push(&["wal-push", wal.join(&names[3]).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!markers.join(&names[3]).exists(), "marker must be removed once used");
}

#[test]
fn wal_objects_of_the_previous_format_still_open_and_compare() {
    use radd::codec::{self, ObjectKind};
    let env = TestEnv::new(Backend::Local);
    let wal = env.path().join("pg_wal");
    std::fs::create_dir(&wal).unwrap();
    let name = "000000010000000000000007";
    let seg = segment_file(&wal, name, 42);
    let data = std::fs::read(&seg).unwrap();
    // A version 1 object (HMAC-SHA256 digest), as radd wrote WAL before the streamed format, in
    // a repository of that time (format 1).
    let id_key = env.make_format(1);
    let recipients = radd::crypto::Identity::load(&env.path().join("identity.key")).unwrap().recipients();
    let (stored, _) = codec::seal(ObjectKind::Wal, &data, &id_key, &recipients, 1, name).unwrap();
    assert_eq!(&stored[..8], b"RADDOBJ1");
    let object = env.local_object(&format!("wal/00000001/{name}"));
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    std::fs::write(&object, &stored).unwrap();

    let out = env.radd_push(&["wal-push", &seg]);
    assert!(out.status.success(), "identical content under a version 1 object: {}", stderr(&out));
    assert_eq!(std::fs::read(&object).unwrap(), stored, "the old object is never rewritten");
    let other = env.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let changed = segment_file(&other, name, 43);
    let out = env.radd_push(&["wal-push", &changed]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dest = env.path().join("fetched");
    let out = env.radd(&["wal-fetch", name, dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&dest).unwrap() == data);
    // New pushes write version 3 (the digest covers the object's key).
    let next = segment_file(&wal, "000000010000000000000008", 44);
    assert!(env.radd_push(&["wal-push", &next]).status.success());
    let stored = std::fs::read(env.local_object("wal/00000001/000000010000000000000008")).unwrap();
    assert_eq!(&stored[..8], b"RADDOBJ3");
}
