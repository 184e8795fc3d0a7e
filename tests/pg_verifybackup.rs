//! PostgreSQL's own check of a restore (issue 16 item 4): every restore of a base backup writes
//! a `backup_manifest` with the backup-time checksums, so `pg_verifybackup` — a tool radd did not
//! write — confirms the restored files, tablespaces included, on every supported version; a byte
//! changed after the restore (same size, same mtime) is caught; a drill runs it as a check.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};
use crate::common::pg::PgVersion;

fn pg_verifybackup(pg: PgVersion, data: &Path) -> std::process::Output {
    // Reading needs no privileges beyond the files' owner (postgres when the tests run as root).
    Command::new(pg.program("pg_verifybackup")).arg("--no-parse-wal").arg(data).output().expect("run pg_verifybackup")
}

fn restored_with_tablespace(pg: PgVersion) -> (TestEnv, std::path::PathBuf, radd::pg::ScratchCluster) {
    let env = TestEnv::with_pg(Backend::Local, pg);
    let source = env.source_cluster();
    let location = env.path().join("ts-prod");
    std::fs::create_dir(&location).unwrap();
    radd::pg::hand_over(&location).unwrap();
    sql(&source, &format!("CREATE TABLESPACE ts1 LOCATION '{}'", location.display()));
    sql(
        &source,
        "CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    );
    sql(&source, "CREATE TABLE plain AS SELECT g AS id FROM generate_series(1, 3000) g");
    let backup = env.radd_push(&["backup", "pg"]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    switch_and_wait_archived(&source);
    let target = env.path().join("restored");
    let tablespaces = env.path().join("restored-ts");
    let out = env.radd(&[
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--tablespace-map-all",
        tablespaces.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    (env, target, source)
}

#[test]
fn pg_verifybackup_confirms_a_restore_with_a_tablespace_on_every_version() {
    for pg in PgVersion::ALL {
        let (_env, target, _source) = restored_with_tablespace(pg);
        let manifest = std::fs::read_to_string(target.join("backup_manifest")).expect("backup_manifest written");
        assert!(
            manifest.contains("\"PostgreSQL-Backup-Manifest-Version\": 1") && manifest.contains("pg_tblspc/"),
            "PG {}: {manifest:.400}",
            pg.major()
        );
        let out = pg_verifybackup(pg, &target);
        assert!(
            out.status.success(),
            "PG {}: pg_verifybackup failed:\n{}{}",
            pg.major(),
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
}

#[test]
fn a_byte_changed_after_the_restore_is_caught_by_pg_verifybackup() {
    let pg = PgVersion::default();
    let (_env, target, source) = restored_with_tablespace(pg);
    // A relation file of `plain`, changed in place: same size, mtime put back.
    let relative = sql(&source, "SELECT pg_relation_filepath('plain')");
    let path = target.join(&relative);
    let meta = std::fs::metadata(&path).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 100).ok();
    file.write_all_at(&[byte[0] ^ 0xff], 100).unwrap();
    file.set_modified(meta.modified().unwrap()).unwrap();
    drop(file);
    let out = pg_verifybackup(pg, &target);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!out.status.success(), "a changed byte passed pg_verifybackup: {report}");
    assert!(report.contains(&relative) && report.contains("checksum mismatch"), "{report}");
}

#[test]
fn a_drill_runs_pg_verifybackup_as_a_check() {
    let env = TestEnv::new(Backend::Local);
    let _source = env.source_with_backup(2000);
    std::fs::write(env.path().join("drills/verify.toml"), "name = \"verify\"\n[checks]\npage_integrity = false\n")
        .unwrap();
    let report = json(&env.radd(&["--json", "drill", "run", "verify"]));
    assert_eq!(report["passed"], true, "{report:#}");
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "pg_verifybackup")
        .cloned()
        .unwrap_or_else(|| panic!("no pg_verifybackup check: {report:#}"));
    assert_eq!(check["status"], "passed", "{check:#}");
}
