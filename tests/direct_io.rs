//! Direct I/O (issue 16, items 2 and 3): a backup reads relation files past the page cache
//! (`backup.direct_io`) and a local repository is written past it, measured on the real file
//! with `fincore`: after a backup the table's pages are not cached, with `direct_io = false`
//! they are. A restore writes relation files past the cache too (`RADD_RESTORE_DIRECT=0`, the
//! bench's knob, writes them through it). A tablespace on tmpfs, which refuses `O_DIRECT`, is
//! read through the cache instead, into a repository on tmpfs written through it too, and both
//! restore byte for byte.

use std::path::Path;
use std::process::Command;

use crate::common::env::{Backend, RepoOptions, TestEnv, radd_binary, run, sql, stderr, switch_and_wait_archived};
use crate::common::faults::SmallDisk;

/// Bytes of `file` in the page cache (`fincore`, util-linux).
fn cached_bytes(file: &Path) -> u64 {
    let out = Command::new("fincore").args(["--bytes", "--noheadings", "--output", "RES"]).arg(file).output();
    let out = out.expect("run fincore (util-linux)");
    assert!(out.status.success(), "fincore {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("fincore prints a byte count")
}

/// Drops `file`'s pages from the page cache (only this file's: other tests run beside): writes
/// them back (test clusters run with `fsync = off`), then drops the clean pages.
fn uncache(file: &Path) {
    let synced = Command::new("sync").arg(file).status().expect("run sync");
    assert!(synced.success(), "sync {}", file.display());
    let status = Command::new("dd")
        .arg(format!("if={}", file.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .expect("run dd");
    assert!(status.success(), "dd iflag=nocache {}", file.display());
    assert!(cached_bytes(file) < 64 << 10, "{} still cached after dd iflag=nocache", file.display());
}

/// Sets `[backup] direct_io` in the archiving-side config.
fn set_direct_io(env: &TestEnv, on: bool) {
    let text = std::fs::read_to_string(&env.push_config).expect("read config");
    let text: String = text.lines().filter(|l| !l.starts_with("direct_io = ")).map(|l| format!("{l}\n")).collect();
    let text = text.replacen("[backup]\n", &format!("[backup]\ndirect_io = {on}\n"), 1);
    std::fs::write(&env.push_config, text).expect("write config");
}

#[test]
fn a_backup_reads_relation_files_past_the_page_cache_unless_told_not_to() {
    let env = TestEnv::new(Backend::Local);
    // Autovacuum off: its reads of the table would put its pages in the cache themselves.
    let source = env.source_cluster_with(&[], &[("autovacuum", "off".to_owned())]);
    sql(&source, "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g");
    sql(&source, "CHECKPOINT");
    let file = source.data_dir().join(sql(&source, "SELECT pg_relation_filepath('big')"));
    let size = std::fs::metadata(&file).expect("relation file").len();
    assert!(size > 16 << 20, "the table spans {size} bytes");

    for direct in [true, false] {
        set_direct_io(&env, direct);
        uncache(&file);
        let backup = env.radd_push(&["--json", "backup", "pg"]);
        assert!(backup.status.success(), "backup (direct_io = {direct}): {}", stderr(&backup));
        let cached = cached_bytes(&file);
        if direct {
            assert!(
                cached < size / 10,
                "direct_io = true: {cached} of {size} bytes of the table cached after the backup"
            );
        } else {
            assert!(cached > size / 2, "direct_io = false: only {cached} of {size} bytes cached after the backup");
        }
    }

    // Both backups restore (the last one, read through the cache, shares every block with the
    // first) and hold every row; the repository's objects, written directly, verify.
    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "verify --read-data: {}", stderr(&verify));
    switch_and_wait_archived(&source);
    let restored = env.restore_and_start("latest", "restored", &[]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM big"), "300000");
    assert_eq!(sql(&restored, "SELECT sum(length(v)) FROM big"), "9600000");
}

#[test]
fn a_tablespace_and_a_repository_on_tmpfs_fall_back_to_the_page_cache() {
    // tmpfs refuses O_DIRECT at open: the tablespace's files are read, and the repository's
    // objects written, through the page cache.
    let disk = SmallDisk::mount("256m");
    let env = TestEnv::with_repository(
        Backend::Local,
        &RepoOptions { local_path: Some(disk.path().join("repo")), ..RepoOptions::default() },
    );
    let source = env.source_cluster();
    let location = disk.path().join("ts");
    std::fs::create_dir(&location).expect("create tablespace dir");
    radd::pg::hand_over(&location).expect("hand tablespace dir to postgres");
    sql(&source, &format!("CREATE TABLESPACE ts LOCATION '{}'", location.display()));
    sql(
        &source,
        "CREATE TABLE in_ts TABLESPACE ts AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g",
    );
    sql(&source, "CREATE TABLE in_default AS SELECT g AS id FROM generate_series(1, 20000) g");
    let backup = env.radd_push(&["--json", "backup", "pg"]);
    assert!(backup.status.success(), "backup: {}", stderr(&backup));
    switch_and_wait_archived(&source);

    let verify = env.radd(&["verify", "--read-data"]);
    assert!(verify.status.success(), "verify --read-data: {}", stderr(&verify));
    let target = env.path().join("ts-restored");
    let mapping = format!("ts={}", target.display());
    let restored = env.restore_and_start("latest", "restored", &["--tablespace-map", &mapping]);
    assert_eq!(sql(&restored, "SELECT count(*) FROM in_ts"), "50000");
    assert_eq!(sql(&restored, "SELECT sum(length(v)) FROM in_ts"), "1600000");
    assert_eq!(sql(&restored, "SELECT count(*) FROM in_default"), "20000");
}

#[test]
fn a_restore_writes_relation_files_past_the_page_cache() {
    let env = TestEnv::new(Backend::Local);
    let source = env.source_cluster();
    // Rows with an odd-sized text column: the table's last page is partly filled, its blobs
    // and pages all 8 KiB at 8 KiB offsets (direct); small files and odd tails go buffered.
    sql(
        &source,
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 1 + g % 3) AS v FROM generate_series(1, 200000) g",
    );
    sql(&source, "CHECKPOINT");
    let relation = sql(&source, "SELECT pg_relation_filepath('big')");
    let size = std::fs::metadata(source.data_dir().join(&relation)).expect("relation file").len();
    assert!(size > 16 << 20, "the table spans {size} bytes");
    let backup = env.radd_push(&["--json", "backup", "pg"]);
    assert!(backup.status.success(), "backup: {}", stderr(&backup));
    switch_and_wait_archived(&source);

    for direct in [true, false] {
        let target = env.path().join(format!("restored-direct-{direct}"));
        let mut cmd = std::process::Command::new(radd_binary());
        cmd.arg("--config").arg(&env.config).arg("restore").arg("latest").arg("--target").arg(&target);
        if !direct {
            cmd.env("RADD_RESTORE_DIRECT", "0");
        }
        let out = run(&mut cmd, &env.env);
        assert!(out.status.success(), "restore (direct {direct}): {}", stderr(&out));
        let cached = cached_bytes(&target.join(&relation));
        if direct {
            assert!(cached < size / 10, "direct: {cached} of {size} bytes of the restored table cached");
        } else {
            assert!(cached > size / 2, "buffered: only {cached} of {size} bytes of the restored table cached");
        }
    }
    // The directly written copy is the table, row for row.
    let restored = env.restore_and_start_dir(&env.path().join("restored-direct-true"), "restored");
    assert_eq!(sql(&restored, "SELECT count(*) FROM big"), "200000");
    assert_eq!(sql(&restored, "SELECT sum(length(v)) FROM big"), sql(&source, "SELECT sum(length(v)) FROM big"),);
}
