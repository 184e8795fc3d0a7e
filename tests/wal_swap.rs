//! Issue 13 item 0: WAL objects moved to another name are caught — by the keyed digest of format
//! version 3, which covers the object's key, and by the segment's page headers (position,
//! timeline, magic) for objects of older versions — in `verify --read-data` (exit 3),
//! `wal-fetch` (exit above 125) and so in recovery, which aborts instead of promoting early;
//! `wal-push` refuses a file whose pages hold another segment than its name says. Item 9: a
//! damaged ciphertext reads as corruption of that object, not as a key problem.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use radd::codec::{self, ObjectKind, Version};
use radd::pg::ScratchCluster;
use serde_json::Value;

use crate::common::env::{Backend, TestEnv, json, noise, sql, stderr, switch_and_wait_archived};
use crate::common::wal::segment;

/// Swaps two objects of the local repository by renaming them.
fn swap_local(env: &TestEnv, a: &str, b: &str) {
    let (a, b) = (env.local_object(a), env.local_object(b));
    let parked = a.with_extension("swap");
    std::fs::rename(&a, &parked).expect("park a");
    std::fs::rename(&b, &a).expect("b to a");
    std::fs::rename(&parked, &b).expect("a to b");
}

fn wal_key(name: &str) -> String {
    format!("wal/00000001/{name}")
}

/// `verify --read-data --json`, which must fail with exit 3; its report.
fn verify_fails(env: &TestEnv) -> Value {
    let out = env.radd(&["--json", "verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(3), "verify must report integrity problems: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("verify prints its report as JSON")
}

/// The detail of the `corrupt` problem verify reported for `object`.
fn corrupt_problem<'a>(report: &'a Value, object: &str) -> &'a str {
    let problems = report["problems"].as_array().expect("problems");
    let problem = problems
        .iter()
        .find(|p| p["object"] == object)
        .unwrap_or_else(|| panic!("no problem named {object}: {report:#}"));
    assert_eq!(problem["kind"], "corrupt", "{problem:#}");
    problem["detail"].as_str().expect("detail")
}

/// `wal-fetch name`, which must refuse (exit above 125: PostgreSQL aborts recovery) and write
/// nothing; its stderr.
fn fetch_refused(env: &TestEnv, name: &str) -> String {
    let dest = env.path().join(format!("fetched-{name}"));
    let out = env.radd(&["wal-fetch", name, dest.to_str().expect("path")]);
    let code = out.status.code().expect("exit code");
    assert!(code > 125, "wal-fetch {name} must abort recovery, exit {code}: {}", stderr(&out));
    assert!(!dest.exists(), "nothing may be handed to PostgreSQL");
    stderr(&out)
}

/// Writes stamped segments `names` (16 MiB, distinct, half compressible) into `<dir>/pg_wal`
/// and archives each; returns that directory.
fn push_segments(env: &TestEnv, names: &[&str]) -> PathBuf {
    let wal = env.path().join("pg_wal");
    std::fs::create_dir_all(&wal).expect("create pg_wal");
    for (i, name) in names.iter().enumerate() {
        let mut data = noise(16 << 20, 100 + i as u64);
        data[..8 << 20].fill(i as u8);
        std::fs::write(wal.join(name), segment(data, name)).expect("write segment");
        let out = env.radd_push(&["wal-push", wal.join(name).to_str().expect("path")]);
        assert!(out.status.success(), "wal-push {name}: {}", stderr(&out));
    }
    wal
}

/// Starts the restored data directory `target` and waits until its server has stopped (or
/// promoted, which fails the test); returns the server log.
fn start_until_recovery_aborts(env: &TestEnv, target: &Path, name: &str) -> String {
    let work = env.path().join(format!("{name}-run"));
    std::fs::create_dir(&work).expect("create run dir");
    let mut cluster = ScratchCluster::new(env.pg_bin(), &work).expect("scratch cluster").with_data_dir(target);
    // pg_ctl may report the start as failed (recovery aborted before the server was ready) or
    // as done (ready for read-only connections, then aborted): the log decides.
    let _ = cluster.start(&[], &env.env);
    let deadline = Instant::now() + Duration::from_secs(120);
    while target.join("postmaster.pid").exists() {
        let log = std::fs::read_to_string(cluster.log_file()).unwrap_or_default();
        assert!(!log.contains("selected new timeline ID"), "recovery promoted past a swapped segment:\n{log}");
        assert!(Instant::now() < deadline, "the restored server neither stopped nor promoted within 120 s:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::read_to_string(cluster.log_file()).expect("server log")
}

#[test]
fn swapped_segments_fail_verify_and_fetch_and_abort_recovery() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    sql(&source, "CREATE TABLE t (batch int, payload text)");
    env.backup_pg();
    let mut segments = Vec::new();
    for batch in 1..=4 {
        sql(&source, &format!("INSERT INTO t SELECT {batch}, md5(g::text) FROM generate_series(1, 2000) g"));
        segments.push(switch_and_wait_archived(&source));
    }
    let (a, b) = (segments[1].as_str(), segments[2].as_str());
    swap_local(&env, &wal_key(a), &wal_key(b));

    let report = verify_fails(&env);
    for name in [a, b] {
        let detail = corrupt_problem(&report, &wal_key(name));
        assert!(detail.contains("moved or copied here from another name"), "{detail}");
    }
    let err = fetch_refused(&env, a);
    assert!(err.contains(&wal_key(a)) && err.contains("is corrupt") && err.contains("moved or copied"), "{err}");

    // The restore itself reads no WAL; recovery fetches the swapped segment and aborts.
    let target = env.path().join("swapped");
    let out = env.radd(&["restore", "latest", "--target", target.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = start_until_recovery_aborts(&env, &target, "swapped");
    assert!(
        log.contains(&wal_key(a)) && log.contains("moved or copied"),
        "the server log must say why recovery stopped:\n{log}"
    );
    assert!(!log.contains("archive recovery complete"), "{log}");

    // Put back, everything reads again: the checks pass real WAL (zeroed pages after each
    // switch included) all the way through recovery.
    swap_local(&env, &wal_key(a), &wal_key(b));
    let out = env.radd(&["verify", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = env.restore_and_start("latest", "put-back", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM t"), "8000");

    // A pack under another pack's name: its content digest is its id, so the name it is read
    // from no longer matches.
    let mut packs: Vec<String> = std::fs::read_dir(env.local_object("packs"))
        .expect("packs")
        .map(|e| format!("packs/{}", e.expect("entry").file_name().to_string_lossy()))
        .collect();
    packs.sort();
    assert!(packs.len() >= 2, "{packs:?}");
    swap_local(&env, &packs[0], &packs[1]);
    let report = verify_fails(&env);
    for pack in &packs[..2] {
        let detail = corrupt_problem(&report, pack);
        assert!(detail.contains("its header says it is pack") && detail.contains("moved or copied"), "{detail}");
    }
}

#[test]
fn swapped_objects_of_the_previous_format_are_caught_by_their_page_headers() {
    let env = TestEnv::new(Backend::Local);
    let names = ["000000010000000000000003", "000000010000000000000004", "000000010000000000000005"];
    let wal = push_segments(&env, &names);
    // Segments 4 and 5 as radd wrote WAL before format 3 (version 2: the digest covers kind
    // and content, not the name).
    let id_key = env.id_key();
    let recipients = radd::crypto::Identity::load(&env.path().join("identity.key")).expect("identity").recipients();
    for name in &names[1..] {
        let data = std::fs::read(wal.join(name)).expect("segment");
        let key = wal_key(name);
        let (mut stored, _) = codec::seal(ObjectKind::Wal, &data, &id_key, &recipients, 1, &key).expect("seal");
        stored[..8].copy_from_slice(Version::V2.magic());
        stored[8..codec::HEADER_LEN].copy_from_slice(&Version::V2.digest(&id_key, ObjectKind::Wal, &key, &data).0);
        std::fs::remove_file(env.local_object(&key)).expect("remove version 3 object");
        std::fs::write(env.local_object(&key), &stored).expect("write version 2 object");
    }
    // Under their own names they read, verify and compare (re-push: same content) as before.
    let out = env.radd(&["verify", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.radd_push(&["wal-push", wal.join(names[1]).to_str().expect("path")]);
    assert!(out.status.success(), "a re-push compares with the version 2 digest: {}", stderr(&out));
    let dest = env.path().join("fetched");
    let out = env.radd(&["wal-fetch", names[1], dest.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&dest).expect("fetched") == std::fs::read(wal.join(names[1])).expect("segment"));

    swap_local(&env, &wal_key(names[1]), &wal_key(names[2]));
    let err = fetch_refused(&env, names[1]);
    assert!(err.contains("holds WAL position 0/5000000, but the name says 0/4000000"), "{err}");
    assert!(err.contains(&wal_key(names[1])) && err.contains("refusing to hand it to PostgreSQL"), "{err}");
    let report = verify_fails(&env);
    for (name, other) in [(names[1], names[2]), (names[2], names[1])] {
        let detail = corrupt_problem(&report, &wal_key(name));
        assert!(detail.contains("does not hold the WAL its name says"), "{detail}");
        let position = format!("holds WAL position 0/{}000000", &other[23..]);
        assert!(detail.contains(&position), "{detail}");
    }
    assert_eq!(report["problems"].as_array().expect("problems").len(), 2, "{report:#}");
    // The verify run recorded an S1 incident naming the damage.
    let events = json(&env.radd(&["--json", "events"]));
    let last = events.as_array().and_then(|e| e.last()).cloned().expect("a verify event");
    assert_eq!(
        (last["source"].as_str(), last["kind"].as_str(), last["severity"].as_str()),
        (Some("verify"), Some("incident"), Some("S1")),
        "{last:#}"
    );
    assert!(last["title"].as_str().expect("title").contains(&wal_key(names[1])), "{last:#}");
}

#[test]
fn wal_push_refuses_a_file_whose_pages_are_another_segment() {
    let env = TestEnv::new(Backend::Local);
    let wal = env.path().join("pg_wal");
    std::fs::create_dir(&wal).expect("create pg_wal");
    let (name, other) = ("000000010000000000000005", "000000010000000000000004");
    let path = wal.join(name);
    let push = |data: Vec<u8>| {
        std::fs::write(&path, data).expect("write segment");
        env.radd_push(&["wal-push", path.to_str().expect("path")])
    };
    let nothing_stored = || {
        assert!(!env.local_object(&wal_key(name)).exists(), "a refused file must not be archived");
        let staged = std::fs::read_dir(env.local_object("wal/00000001"))
            .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().contains('#')).count())
            .unwrap_or(0);
        assert_eq!(staged, 0, "no staging object left");
    };
    // Another segment's content under this name: refused on its first page, before the
    // repository records anything (not even the segment size).
    let out = push(segment(noise(16 << 20, 1), other));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(path.to_str().expect("path"))
            && err.contains("holds WAL position 0/4000000, but the name says 0/5000000"),
        "{err}"
    );
    assert!(err.contains("refusing to archive it"), "{err}");
    nothing_stored();
    assert!(!env.local_object("wal-segment-size").exists(), "nothing recorded for a refused file");

    // Only a page in the middle is another segment's: found while streaming, never published.
    let mut spliced = segment(noise(16 << 20, 2), name);
    spliced[8192 * 700..8192 * 701].copy_from_slice(&segment(noise(16 << 20, 3), other)[8192 * 700..8192 * 701]);
    let out = push(spliced);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("its page at offset {}", 8192 * 700)), "{}", stderr(&out));
    nothing_stored();

    // A later timeline's segment under timeline 1's name; a file that is no WAL at all.
    let out = push(segment(noise(16 << 20, 4), "000000020000000000000005"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("timeline 00000002, later than the name's timeline 00000001"), "{}", stderr(&out));
    let out = push(noise(16 << 20, 5));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not the WAL page magic of PostgreSQL"), "{}", stderr(&out));
    nothing_stored();

    // The right content archives.
    let out = push(segment(noise(16 << 20, 6), name));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.local_object(&wal_key(name)).exists());
}

#[test]
fn a_damaged_wal_object_reads_as_corrupt_not_as_a_key_problem() {
    let env = TestEnv::new(Backend::Local);
    let name = "000000010000000000000003";
    push_segments(&env, &[name]);
    let object = env.local_object(&wal_key(name));
    let mut stored = std::fs::read(&object).expect("object");
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    std::fs::remove_file(&object).expect("remove object");
    std::fs::write(&object, &stored).expect("write damaged object");

    let err = fetch_refused(&env, name);
    assert!(
        err.contains(&wal_key(name)) && err.contains("is corrupt") && err.contains("ciphertext does not authenticate"),
        "{err}"
    );
    assert!(!err.contains("identity"), "a damaged object is not a key problem: {err}");
    let report = verify_fails(&env);
    let detail = corrupt_problem(&report, &wal_key(name));
    assert!(detail.contains("ciphertext does not authenticate") && !detail.contains("identity"), "{detail}");
}

#[test]
fn swapped_segments_on_s3_fail_verify_and_fetch() {
    use object_store::{ObjectStoreExt, PutPayload};
    let env = TestEnv::new(Backend::S3);
    let names = ["000000010000000000000007", "000000010000000000000008"];
    push_segments(&env, &names);
    // Swapped straight in the bucket (explicit test credentials).
    let config = radd::config::Config::load(&env.config).expect("config");
    let server = crate::common::s3::shared();
    crate::common::env::block_on(async {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_bucket_name(&server.bucket)
            .with_region(&server.region)
            .with_access_key_id(&server.access_key)
            .with_secret_access_key(&server.secret_key)
            .with_allow_http(true)
            .build()
            .expect("s3 client");
        let path =
            |name: &str| object_store::path::Path::from(format!("{}/{}", config.repository.prefix, wal_key(name)));
        let a = store.get(&path(names[0])).await.expect("get a").bytes().await.expect("read a");
        let b = store.get(&path(names[1])).await.expect("get b").bytes().await.expect("read b");
        store.put(&path(names[0]), PutPayload::from(b)).await.expect("put b as a");
        store.put(&path(names[1]), PutPayload::from(a)).await.expect("put a as b");
    });
    let report = verify_fails(&env);
    for name in names {
        assert!(corrupt_problem(&report, &wal_key(name)).contains("moved or copied"), "{report:#}");
    }
    let err = fetch_refused(&env, names[1]);
    assert!(err.contains(&wal_key(names[1])) && err.contains("moved or copied"), "{err}");
}
