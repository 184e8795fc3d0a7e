//! Tablespaces (issue 12, item 1): a source cluster with a real tablespace outside its data
//! directory is backed up as link + contents, restored with the tablespace remapped (by name, by
//! OID, all into one directory) and started; a tablespace target in use is refused before
//! anything is written; a drill never writes into the production location.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::env::{Backend, TestEnv, json, sql, stderr, switch_and_wait_archived};

/// A source with tablespace `ts1` (in `<tmp>/ts1-prod`) holding table `in_ts`, table
/// `in_default` in pg_default, a base backup and archived WAL after more rows in both.
struct Prepared {
    env: TestEnv,
    source: radd::pg::ScratchCluster,
    location: PathBuf,
    oid: u32,
    snapshot: String,
}

fn prepared(pg: crate::common::pg::PgVersion) -> Prepared {
    let env = TestEnv::with_pg(Backend::Local, pg);
    let source = env.source_cluster();
    let location = env.path().join("ts1-prod");
    std::fs::create_dir(&location).expect("create tablespace dir");
    radd::pg::hand_over(&location).expect("hand tablespace dir to postgres");
    sql(&source, &format!("CREATE TABLESPACE ts1 LOCATION '{}'", location.display()));
    sql(&source, "CREATE TABLE in_ts (id int, v text) TABLESPACE ts1");
    sql(&source, "INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 7000) g");
    sql(&source, "CREATE TABLE in_default AS SELECT g AS id FROM generate_series(1, 3000) g");
    let oid: u32 = sql(&source, "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'").parse().expect("oid");
    let backup = env.backup_pg();
    let snapshot = backup["snapshot_id"].as_str().expect("snapshot id").to_owned();
    // Rows after the backup reach the restore through WAL replay into the remapped tablespace.
    sql(&source, "INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(7001, 8000) g");
    sql(&source, "INSERT INTO in_default SELECT g FROM generate_series(3001, 3500) g");
    switch_and_wait_archived(&source);
    Prepared { env, source, location, oid, snapshot }
}

fn counts(cluster: &radd::pg::ScratchCluster) -> (i64, i64) {
    let count = |t: &str| sql(cluster, &format!("SELECT count(*) FROM {t}")).parse::<i64>().expect("count");
    (count("in_ts"), count("in_default"))
}

/// Every path below `dir` (relative), to prove nothing was added.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").filter_map(Result::ok) {
            let path = e.path();
            if e.file_type().expect("file type").is_dir() {
                todo.push(path.clone());
            }
            out.insert(path.strip_prefix(dir).expect("below").to_owned());
        }
    }
    out
}

/// Starts `<tmp>/<name>` restored with `extra` and checks rows, link and tablespace location.
fn restore_remapped(p: &Prepared, name: &str, extra: &[&str], expected_dir: &Path) {
    let cluster = p.env.restore_and_start("latest", name, extra);
    assert_eq!(counts(&cluster), (8000, 3500), "rows of both tables after replay");
    let link = p.env.path().join(name).join("pg_tblspc").join(p.oid.to_string());
    let meta = std::fs::symlink_metadata(&link).expect("tablespace link");
    assert!(meta.file_type().is_symlink(), "{} is a symlink", link.display());
    assert_eq!(std::fs::read_link(&link).expect("read link"), expected_dir);
    let location = sql(&cluster, &format!("SELECT pg_tablespace_location({})", p.oid));
    assert_eq!(Path::new(&location), expected_dir);
    let file = sql(&cluster, "SELECT pg_relation_filepath('in_ts')");
    assert!(p.env.path().join(name).join(&file).is_file(), "{file} reachable through the link");
    assert!(
        tree(expected_dir).iter().any(|f| f.to_string_lossy().starts_with(&format!("PG_{}_", p.env.pg.major()))),
        "{:?}",
        tree(expected_dir)
    );
    // A restored cluster can write into its tablespace.
    sql(&cluster, "INSERT INTO in_ts VALUES (-1, 'restored')");
    assert_eq!(sql(&cluster, "SELECT count(*) FROM in_ts WHERE id = -1"), "1");
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("radd-restore"))
        .collect()
}

crate::pg_matrix! {
    /// Backup keeps the link and the contents; `snapshots --json` and `ls` show the tablespace;
    /// restores remap it by name, by OID and with --tablespace-map-all, and start with every row;
    /// `verify` passes.
    fn tablespace_backup_restores_remapped(pg) {
        let p = prepared(pg);
        let location = p.location.display().to_string();

        let listed = json(&p.env.radd_push(&["--json", "snapshots"]));
        let tablespaces = listed[0]["pg"]["tablespaces"].as_array().expect("tablespaces in the record").clone();
        assert_eq!(tablespaces.len(), 1, "{listed:#}");
        assert_eq!(tablespaces[0]["oid"], p.oid);
        assert_eq!(tablespaces[0]["name"], "ts1");
        assert_eq!(tablespaces[0]["location"], location.as_str());

        let entries = json(&p.env.radd(&["--json", "ls", &p.snapshot, "pg_tblspc"]));
        let entries = entries.as_array().expect("entries");
        let link = format!("pg_tblspc/{}", p.oid);
        let entry = entries.iter().find(|e| e["path"] == link.as_str()).expect("link entry");
        assert_eq!(entry["type"], "symlink", "{entry}");
        assert_eq!(entry["target"], location.as_str());
        assert_eq!(entry["tablespace"]["name"], "ts1", "{entry}");
        let relation = sql(&p.source, "SELECT pg_relation_filepath('in_ts')");
        assert!(relation.starts_with(&format!("{link}/PG_")), "{relation}");
        // The table's file existed at backup time (same relfilenode: no rewrite since).
        let file = entries.iter().find(|e| e["path"] == relation.as_str()).unwrap_or_else(|| panic!("{relation} not in {entries:#?}"));
        assert_eq!(file["type"], "file");
        assert!(file["size"].as_u64().unwrap() > 0);

        let by_name = p.env.path().join("ts-by-name");
        restore_remapped(&p, "r-name", &["--tablespace-map", &format!("ts1={}", by_name.display())], &by_name);
        let by_oid = p.env.path().join("ts-by-oid");
        std::fs::create_dir(&by_oid).expect("an empty target is fine");
        restore_remapped(&p, "r-oid", &["--tablespace-map", &format!("{}={}", p.oid, by_oid.display())], &by_oid);
        let all = p.env.path().join("ts-all");
        restore_remapped(&p, "r-all", &["--tablespace-map-all", all.to_str().unwrap()], &all.join(p.oid.to_string()));
        assert!(leftovers(p.env.path()).is_empty(), "{:?}", leftovers(p.env.path()));

        let out = p.env.radd(&["--json", "verify", "--read-data"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify report");
        assert_eq!(report["ok"], true, "{report:#}");
    }
}

crate::pg_matrix! {
    /// A tablespace target in use (the original location while the source runs, or a non-empty
    /// map target) is refused before anything is written; an unknown name is a usage error that
    /// names the tablespaces of the backup. A restore failing midway leaves nothing behind.
    fn tablespace_target_in_use_is_refused(pg) {
        let p = prepared(pg);
        let before = tree(&p.location);
        let target = p.env.path().join("refused");
        let target_s = target.display().to_string();

        let out = p.env.radd(&["restore", "latest", "--target", &target_s]);
        assert_eq!(out.status.code(), Some(1), "original location in use: {}", stderr(&out));
        assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
        assert!(stderr(&out).contains(&p.location.display().to_string()), "{}", stderr(&out));

        let busy = p.env.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("someone-elses-file"), "x").unwrap();
        let out = p.env.radd(&["restore", "latest", "--target", &target_s, "--tablespace-map", &format!("ts1={}", busy.display())]);
        assert_eq!(out.status.code(), Some(1), "non-empty map target: {}", stderr(&out));
        assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
        assert_eq!(tree(&busy).len(), 1, "nothing written into the refused target");

        let out = p.env.radd(&["restore", "latest", "--target", &target_s, "--tablespace-map", "nope=/tmp/nope"]);
        assert_eq!(out.status.code(), Some(2), "unknown tablespace: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("{} (ts1)", p.oid)), "{}", stderr(&out));
        let out = p.env.radd(&["restore", "latest", "--target", &target_s, "--tablespace-map", "ts1"]);
        assert_eq!(out.status.code(), Some(2), "malformed map: {}", stderr(&out));

        assert!(!target.exists(), "the data directory was never created");
        assert!(leftovers(p.env.path()).is_empty(), "{:?}", leftovers(p.env.path()));
        assert_eq!(tree(&p.location), before, "production tablespace untouched");

        // A restore that fails while writing (a damaged pack) leaves no data directory, no
        // tablespace and no staging directory behind.
        p.env.corrupt_a_pack();
        let mapped = p.env.path().join("ts-failed");
        let out = p.env.radd(&["restore", "latest", "--target", &target_s, "--tablespace-map", &format!("ts1={}", mapped.display())]);
        assert_eq!(out.status.code(), Some(3), "damaged pack: {}", stderr(&out));
        assert!(!target.exists() && !mapped.exists(), "a failed restore leaves nothing behind");
        assert!(leftovers(p.env.path()).is_empty(), "{:?}", leftovers(p.env.path()));
    }
}

const DRILL: &str = r#"
name = "ts-drill"
snapshot = "latest"
[target]
recovery = "latest"
[scratch]
timeout = "3m"
[[checks.sql]]
name = "tablespace rows"
query = "SELECT count(*) FROM in_ts"
expect_min = 8000
[[checks.sql]]
name = "default rows"
query = "SELECT count(*) FROM in_default"
expect_min = 3500
"#;

crate::pg_matrix! {
    /// A drill on the tablespace cluster passes, restoring the tablespace into its scratch
    /// directory: the production location gets no new file and the scratch is removed.
    fn tablespace_drill_stays_in_scratch(pg) {
        let p = prepared(pg);
        std::fs::write(p.env.path().join("drills/ts-drill.toml"), DRILL).expect("write drill");
        let before = tree(&p.location);
        let report = json(&p.env.radd(&["--json", "drill", "run", "ts-drill"]));
        assert_eq!(report["passed"], true, "{report:#}");
        let checks: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
        for expected in ["checksums", "starts", "sql:tablespace rows", "sql:default rows"] {
            assert!(checks.contains(&expected), "check {expected} missing: {checks:?}");
        }
        assert_eq!(tree(&p.location), before, "the drill wrote into the production tablespace");
        let scratch = p.env.path().join("scratch");
        let left: Vec<_> = std::fs::read_dir(&scratch).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
        assert_eq!(counts(&p.source), (8000, 3500), "source unaffected");
    }
}
