//! WAL segment sizes other than 16 MiB (`initdb --wal-segsize`), and staging litter of killed
//! pushes (issue 12, items 2 and 9).
//!
//! 1 MiB segments past segment 0x100 and across a log id boundary (4096 segments per log id),
//! 64 MiB segments: fetch, restore, PITR, prune + restore, each on a real cluster of that size.
//! A repository holding one cluster's segment size refuses another's push and backup.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use radd::pg::{Lsn, ScratchCluster, SegmentSize, Timeline, WalFileName};

use crate::common::env::{Backend, TestEnv, json, noise, radd_binary, run, sql, stderr};

fn size(text: &str) -> SegmentSize {
    text.parse().expect("segment size")
}

/// 1 MiB, the smallest segment size.
fn mib() -> SegmentSize {
    size("1MB")
}

/// Archived ahead in batches, so that hundreds of small segments drain quickly.
fn push_in_batches(env: &TestEnv) {
    let config = std::fs::read_to_string(&env.push_config).expect("read push config");
    std::fs::write(&env.push_config, config + "\n[archive]\npush_parallel = 4\npush_ahead = 16\n")
        .expect("write push config");
}

fn insert(cluster: &ScratchCluster, batch: i32, rows: i32) {
    sql(
        cluster,
        &format!("INSERT INTO t (batch, payload) SELECT {batch}, md5(g::text) FROM generate_series(1, {rows}) g"),
    );
}

fn rows(cluster: &ScratchCluster, batch: i32) -> i64 {
    sql(cluster, &format!("SELECT count(*) FROM t WHERE batch = {batch}")).parse().expect("count")
}

fn current_segment(cluster: &ScratchCluster) -> String {
    sql(cluster, "SELECT pg_walfile_name(pg_current_wal_lsn())")
}

/// Switches WAL `n` times (a WAL record before each, so that every switch starts a segment) and
/// waits until the last switched segment is archived; returns its name.
fn switch_times(cluster: &ScratchCluster, n: u32) -> String {
    sql(
        cluster,
        &format!(
            "DO $$ BEGIN FOR i IN 1..{n} LOOP PERFORM pg_logical_emit_message(false, 'radd-test', 'x'); PERFORM pg_switch_wal(); END LOOP; END $$"
        ),
    );
    sql(cluster, "SELECT pg_logical_emit_message(false, 'radd-test', 'x')");
    let wal = sql(cluster, "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let last = sql(cluster, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        if last.len() >= 24 && last[..24] >= *wal.as_str() {
            return wal;
        }
        let failed = sql(cluster, "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver");
        assert!(
            Instant::now() < deadline,
            "segment {wal} not archived within 300 s (last archived {last:?}, last failed {failed:?}); see {}",
            cluster.log_file().display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Takes a base backup; returns its snapshot id and the name of its start segment.
fn backup(env: &TestEnv, segment_size: SegmentSize) -> (String, String) {
    let report = env.backup_pg();
    let start: Lsn = report["start_lsn"].as_str().expect("start lsn").parse().expect("lsn");
    let first =
        WalFileName::segment_for(Timeline(report["timeline"].as_u64().expect("timeline") as u32), start, segment_size)
            .to_name(segment_size);
    (report["snapshot_id"].as_str().expect("snapshot id").to_owned(), first)
}

fn archived_segments(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.local_object("wal/00000001"))
        .expect("wal dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| WalFileName::is_segment_name(n))
        .collect();
    names.sort();
    names
}

/// The repository's size record holds `size` (plaintext JSON after its magic and HMAC).
fn assert_recorded(env: &TestEnv, size: SegmentSize) {
    let record = std::fs::read(env.local_object("wal-segment-size")).expect("the repository records its segment size");
    let text = String::from_utf8_lossy(&record[40..]).into_owned();
    assert!(text.contains(&format!("\"segment_size\":{}", size.bytes())), "{text}");
}

/// wal-fetch `name` succeeds and yields one whole segment of `size`.
fn assert_fetches(env: &TestEnv, name: &str, size: SegmentSize) {
    let dest = env.path().join(format!("fetched-{name}"));
    let out = env.radd(&["wal-fetch", name, dest.to_str().expect("path")]);
    assert!(out.status.success(), "wal-fetch {name}: exit {:?}: {}", out.status.code(), stderr(&out));
    assert_eq!(std::fs::metadata(&dest).expect("fetched").len(), size.bytes(), "{name}");
    std::fs::remove_file(&dest).expect("remove fetched segment");
}

/// Keeps only the newest backup, prunes, and checks that prune names the right first kept
/// segment (`first_kept`), deleted everything below it and nothing from it on, and that the
/// repository still verifies.
fn keep_newest_and_prune(env: &TestEnv, first_kept: &str) {
    let before = archived_segments(env);
    assert!(before.first().is_some_and(|f| f.as_str() < first_kept), "nothing to prune below {first_kept}: {before:?}");
    json(&env.radd_push(&["--json", "forget", "--keep-last", "1"]));
    let out = env.radd(&["prune"]);
    assert!(out.status.success(), "prune: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&format!("timeline 00000001: WAL kept from {first_kept}")), "{text}");
    let after = archived_segments(env);
    assert_eq!(after.first().map(String::as_str), Some(first_kept), "{after:?}");
    let expected: Vec<&String> = before.iter().filter(|n| n.as_str() >= first_kept).collect();
    assert_eq!(after.iter().collect::<Vec<_>>(), expected, "prune deleted WAL the retained backup needs");
    let verify = env.radd(&["verify"]);
    assert!(verify.status.success(), "verify after prune: {}", stderr(&verify));
}

crate::pg_matrix! {
    /// 1 MiB segments past segment 0x100 (fetch exited 255 there): fetch, backup, restore,
    /// PITR between two batches, prune that keeps only the newest backup, restore it.
    fn one_mib_segments_past_0x100(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        push_in_batches(&env);
        let source = env.source_cluster_with(&["--wal-segsize=1"], &[]);
        assert_eq!(sql(&source, "SHOW wal_segment_size"), "1MB");
        sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, batch int, payload text)");
        insert(&source, 1, 4000);
        let past = switch_times(&source, 0x108);
        assert!(past.as_str() > "000000010000000000000100", "{past}");
        assert_recorded(&env, mib());
        assert_fetches(&env, "000000010000000000000101", mib());

        let (first, _) = backup(&env, mib());
        insert(&source, 2, 3000);
        let pitr_lsn = sql(&source, "SELECT pg_current_wal_lsn()");
        switch_times(&source, 3);
        insert(&source, 3, 2000);
        switch_times(&source, 2);
        let verify = env.radd(&["verify"]);
        assert!(verify.status.success(), "verify: {}", stderr(&verify));

        let latest = env.restore_and_start("latest", "latest", &[]);
        assert_eq!((rows(&latest, 1), rows(&latest, 2), rows(&latest, 3)), (4000, 3000, 2000));
        drop(latest);
        let pitr = env.restore_and_start(&first, "pitr", &["--lsn", &pitr_lsn]);
        assert_eq!((rows(&pitr, 1), rows(&pitr, 2), rows(&pitr, 3)), (4000, 3000, 0));
        drop(pitr);

        let (_, newest_start) = backup(&env, mib());
        insert(&source, 4, 1000);
        switch_times(&source, 2);
        keep_newest_and_prune(&env, &newest_start);
        let after = env.restore_and_start("latest", "after-prune", &[]);
        assert_eq!((rows(&after, 1), rows(&after, 2), rows(&after, 3), rows(&after, 4)), (4000, 3000, 2000, 1000));
    }
}

crate::pg_matrix! {
    /// 1 MiB segments across a log id boundary (segment 0/FFF is followed by 1/0): the cluster's
    /// WAL starts at 0/FFD (`pg_resetwal -l`), the first backup starts below the boundary, the
    /// PITR target and the newest backup lie above it; prune keeps exactly the newest backup's
    /// WAL, which restores.
    fn one_mib_segments_across_a_log_id_boundary(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        push_in_batches(&env);
        let source = env.source_cluster_prepared(&["--wal-segsize=1"], &[], |cluster| {
            cluster.reset_wal("000000010000000000000FFD").expect("pg_resetwal -l");
        });
        let start = current_segment(&source);
        assert!(start.as_str() >= "000000010000000000000FFD" && start.as_str() < "000000010000000100000000", "{start}");
        sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, batch int, payload text)");
        insert(&source, 1, 4000);
        let (first, first_start) = backup(&env, mib());
        assert!(first_start.starts_with("0000000100000000"), "{first_start}");
        insert(&source, 2, 3000);
        let crossed = switch_times(&source, 4);
        assert!(crossed.starts_with("0000000100000001"), "{crossed}");
        let pitr_lsn = sql(&source, "SELECT pg_current_wal_lsn()");
        switch_times(&source, 2);
        insert(&source, 3, 2000);
        switch_times(&source, 2);

        assert_fetches(&env, "000000010000000000000FFF", mib());
        assert_fetches(&env, "000000010000000100000000", mib());
        // No 1 MiB segment has this name: a bad request (recovery must abort), not the end.
        let out = env.radd(&["wal-fetch", "000000010000000000001000", env.path().join("never").to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
        assert!(stderr(&out).contains("1MB segments"), "{}", stderr(&out));

        let pitr = env.restore_and_start(&first, "pitr", &["--lsn", &pitr_lsn]);
        assert_eq!((rows(&pitr, 1), rows(&pitr, 2), rows(&pitr, 3)), (4000, 3000, 0));
        drop(pitr);

        let (_, newest_start) = backup(&env, mib());
        assert!(newest_start.starts_with("0000000100000001"), "{newest_start}");
        insert(&source, 4, 1000);
        switch_times(&source, 2);
        keep_newest_and_prune(&env, &newest_start);
        assert!(archived_segments(&env).iter().all(|n| n.starts_with("0000000100000001")));
        let after = env.restore_and_start("latest", "after-prune", &[]);
        assert_eq!((rows(&after, 1), rows(&after, 2), rows(&after, 3), rows(&after, 4)), (4000, 3000, 2000, 1000));
    }
}

/// 64 MiB segments: backup, restore, rows; prune keeping the newest backup, restore it.
#[test]
fn sixty_four_mib_segments() {
    let env = TestEnv::new(Backend::Local);
    let mib64 = size("64MB");
    let source = env.source_cluster_with(&["--wal-segsize=64"], &[]);
    assert_eq!(sql(&source, "SHOW wal_segment_size"), "64MB");
    sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, batch int, payload text)");
    insert(&source, 1, 4000);
    backup(&env, mib64);
    insert(&source, 2, 3000);
    switch_times(&source, 1);
    assert_recorded(&env, mib64);
    let restored = env.restore_and_start("latest", "latest", &[]);
    assert_eq!((rows(&restored, 1), rows(&restored, 2)), (4000, 3000));
    drop(restored);

    let (_, newest_start) = backup(&env, mib64);
    insert(&source, 3, 2000);
    let last = switch_times(&source, 1);
    assert_fetches(&env, &last, mib64);
    keep_newest_and_prune(&env, &newest_start);
    let after = env.restore_and_start("latest", "after-prune", &[]);
    assert_eq!((rows(&after, 1), rows(&after, 2), rows(&after, 3)), (4000, 3000, 2000));
}

/// A repository that holds 1 MiB segments refuses a 16 MiB cluster's wal-push and backup with
/// the two-clusters error, storing nothing of it.
#[test]
fn a_second_cluster_of_another_segment_size_is_refused() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster_with(&["--wal-segsize=1"], &[]);
    switch_times(&source, 1);
    assert_recorded(&env, mib());
    let archived = archived_segments(&env);
    assert!(!archived.is_empty());

    let work = env.path().join("other");
    std::fs::create_dir(&work).expect("create other dir");
    let mut other = ScratchCluster::new(env.pg_bin(), &work).expect("scratch cluster");
    other.initdb().expect("initdb");
    other.start(&[], &env.env).expect("start the other cluster");
    assert_eq!(sql(&other, "SHOW wal_segment_size"), "16MB");
    let segment = other.data_dir().join("pg_wal").join("000000010000000000000001");
    let out = env.radd_push(&["wal-push", segment.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("two clusters in one repository"), "{}", stderr(&out));
    assert!(stderr(&out).contains("1MB") && stderr(&out).contains("16MB"), "{}", stderr(&out));
    assert_eq!(archived_segments(&env), archived, "nothing of the other cluster is stored");
    assert!(!env.local_object("wal/00000001/000000010000000000000001").exists());
    assert_fetches(&env, &archived[0], mib());

    let config = other_cluster_config(&env, &other);
    let out = env.radd_with(&config, &["backup", "pg"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("two clusters in one repository"), "{}", stderr(&out));
    assert!(stderr(&out).contains("backup of"), "{}", stderr(&out));
    assert_eq!(json(&env.radd_push(&["--json", "snapshots"])).as_array().map(Vec::len), Some(0));
    assert_recorded(&env, mib());
}

/// The archiving-side config pointed at `cluster` instead of the source cluster.
fn other_cluster_config(env: &TestEnv, cluster: &ScratchCluster) -> PathBuf {
    let config = std::fs::read_to_string(&env.push_config).expect("read push config");
    let base = config.split("\n[postgres]").next().expect("config");
    let path = env.path().join("radd-other.toml");
    std::fs::write(
        &path,
        format!(
            "{base}\n[postgres]\nhost = \"127.0.0.1\"\nport = {}\ndata_dir = \"{}\"\nbin_dir = \"{}\"\n",
            cluster.port(),
            cluster.data_dir().display(),
            env.pg_bin().display()
        ),
    )
    .expect("write config");
    path
}

/// Staging files of `name` in the repository's `dir`.
fn staging_files(env: &TestEnv, dir: &str, name: &str) -> Vec<PathBuf> {
    std::fs::read_dir(env.local_object(dir))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{name}#"))))
        .collect()
}

/// `radd wal-push` ended abruptly (as by `kill -9`) right after its staging object is written.
fn killed_push(env: &TestEnv, segment: &Path) {
    let mut cmd = Command::new(radd_binary());
    cmd.arg("--config").arg(&env.push_config).arg("wal-push").arg(segment);
    let out = run(&mut cmd, &[("RADD_CRASH_AT".into(), "wal-push:staged".into())]);
    assert_eq!(out.status.code(), Some(137), "the push should have been killed: {}", stderr(&out));
}

/// A killed push leaves a staging object; the next push of that segment removes it, and prune
/// removes those older than its grace period (and only those), counting them.
#[test]
fn killed_pushes_leave_no_litter() {
    let env = TestEnv::new(Backend::Local);
    let wal = env.path().join("pg_wal");
    std::fs::create_dir(&wal).expect("create pg_wal");
    let name = "000000010000000000000007";
    let segment = wal.join(name);
    std::fs::write(&segment, crate::common::wal::segment(noise(1 << 20, 7), name)).expect("write segment");

    killed_push(&env, &segment);
    assert_eq!(staging_files(&env, "wal/00000001", name).len(), 1, "a killed push leaves its staging object");
    assert!(!env.local_object(&format!("wal/00000001/{name}")).exists());
    // Its pid may belong to another program by now (pid reuse): a live process that is no
    // wal-push is not taken for a pusher, so the next push neither waits for it (5 minutes)
    // nor keeps the litter.
    let mut other = Command::new("sleep").arg("300").spawn().expect("start sleep");
    let marker = wal.join("radd-archived").join(format!("{name}.pushing"));
    std::fs::write(&marker, format!("{}\n", other.id())).expect("rewrite the marker");
    let started = Instant::now();
    let out = env.radd_push(&["wal-push", segment.to_str().expect("path")]);
    let _ = other.kill();
    let _ = other.wait();
    assert!(started.elapsed() < Duration::from_secs(120), "the push waited for a process that is no pusher");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(staging_files(&env, "wal/00000001", name), Vec::<PathBuf>::new(), "the next push removes the litter");
    assert!(!wal.join("radd-archived").join(format!("{name}.pushing")).exists());
    assert_fetches(&env, name, mib());

    // Another killed push, whose litter is two days old, and a fresh staging object (a writer
    // that may still be running): prune removes the old one only.
    let next = "000000010000000000000008";
    std::fs::write(wal.join(next), crate::common::wal::segment(noise(1 << 20, 8), next)).expect("write segment");
    killed_push(&env, &wal.join(next));
    let old = staging_files(&env, "wal/00000001", next);
    assert_eq!(old.len(), 1);
    let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old[0])
        .expect("open staging")
        .set_modified(two_days_ago)
        .expect("age staging");
    let fresh = env.local_object(&format!("wal/00000001/{name}#{}000001", std::process::id()));
    std::fs::write(&fresh, b"being written").expect("plant staging");

    let report = json(&env.radd(&["--json", "prune"]));
    assert_eq!(report["staging_removed"], 1, "{report:#}");
    assert!(!old[0].exists(), "stale staging object removed");
    assert!(fresh.exists(), "a fresh staging object is left to its writer");
    assert_fetches(&env, name, mib());
    let out = env.radd_push(&["wal-push", wal.join(next).to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_fetches(&env, next, mib());
}
