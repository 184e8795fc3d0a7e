//! wal-push / wal-fetch semantics without a cluster: idempotence, no overwrite, exit codes.

use std::path::Path;

use crate::common::env::{Backend, TestEnv, stderr};

fn segment_file(dir: &Path, name: &str, fill: u8) -> String {
    let path = dir.join(name);
    let mut data = vec![fill; 16 << 20];
    data[..8].copy_from_slice(&[fill; 8]);
    std::fs::write(&path, data).expect("write fake segment");
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

#[test]
fn wal_push_idempotent_local() {
    push_is_idempotent_and_never_overwrites(Backend::Local);
}

#[test]
fn wal_push_idempotent_s3() {
    push_is_idempotent_and_never_overwrites(Backend::S3);
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
    std::fs::write(&env.push_config, std::fs::read_to_string(&env.push_config).unwrap() + "\n[archive]\npush_parallel = 4\n").unwrap();
    let wal = env.path().join("pg_wal");
    std::fs::create_dir_all(wal.join("archive_status")).unwrap();
    let names: Vec<String> = (1..=4).map(|n| format!("0000000100000000000000{n:02X}")).collect();
    for (i, name) in names.iter().enumerate() {
        segment_file(&wal, name, 10 + i as u8);
        std::fs::write(wal.join("archive_status").join(format!("{name}.ready")), "").unwrap();
    }
    // One call archives the requested segment and the three others waiting.
    let out = env.radd_push(&["wal-push", wal.join(&names[0]).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
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
