//! Debian/Ubuntu cluster layout (issue 12, item 6), built for real: initdb, then postgresql.conf,
//! pg_hba.conf and pg_ident.conf moved to `<tmp>/etc/<ver>/main/` (with `conf.d/`), the server
//! started with `-c config_file=…` and `data_directory`, `hba_file`, `ident_file`,
//! `external_pid_file` and `include_dir = 'conf.d'` in that file, as `pg_createcluster` writes it.
//! The backup carries the configuration, a restore starts with plain `pg_ctl -D <target>` (or
//! `pg_ctl -D <config-dir>`) using the restored files and none of the source's, and a drill passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use radd::pg::ScratchCluster;

use crate::common::env::{Backend, TestEnv, block_on, json, sql, stderr, switch_and_wait_archived};

fn rows(cluster: &ScratchCluster) -> i64 {
    sql(cluster, "SELECT count(*) FROM t").parse().expect("count")
}

/// The source in the Debian layout, archiving through radd; returns it and its config directory.
fn debian_source(env: &TestEnv) -> (ScratchCluster, PathBuf) {
    let work = env.path().join("source");
    std::fs::create_dir(&work).expect("create source dir");
    let mut cluster = ScratchCluster::new(env.pg_bin(), &work).expect("scratch cluster");
    cluster.initdb().expect("initdb");
    let data = cluster.data_dir().to_owned();
    let etc = env.path().join("etc").join(env.pg.major().to_string()).join("main");
    std::fs::create_dir_all(etc.join("conf.d")).expect("create config dir");
    for name in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        std::fs::rename(data.join(name), etc.join(name)).expect("move config file out of the data directory");
    }
    let conf = etc.join("postgresql.conf");
    let debian = format!(
        "\n# As pg_createcluster writes it\ndata_directory = '{}'\nhba_file = '{}'\nident_file = '{}'\nexternal_pid_file = '{}'\ninclude_dir = 'conf.d'\n",
        data.display(),
        etc.join("pg_hba.conf").display(),
        etc.join("pg_ident.conf").display(),
        work.join("main.pid").display()
    );
    std::fs::write(&conf, std::fs::read_to_string(&conf).expect("read postgresql.conf") + &debian)
        .expect("write postgresql.conf");
    std::fs::write(etc.join("conf.d/tuning.conf"), "work_mem = '7MB'\n").expect("write conf.d");
    radd::pg::hand_over(&env.path().join("etc")).expect("hand config to postgres");
    let archive_command = env.archive_command();
    cluster
        .start(
            &[
                ("config_file", conf.display().to_string()),
                ("wal_level", "replica".into()),
                ("archive_mode", "on".into()),
                ("archive_command", archive_command),
                ("fsync", "off".into()),
            ],
            &env.env,
        )
        .expect("start Debian-layout source");
    for config in [&env.push_config, &env.config] {
        let section = format!(
            "\n[postgres]\nhost = \"127.0.0.1\"\nport = {}\ndata_dir = \"{}\"\nbin_dir = \"{}\"\n",
            cluster.port(),
            data.display(),
            env.pg_bin().display()
        );
        std::fs::write(config, std::fs::read_to_string(config).expect("read config") + &section)
            .expect("append [postgres]");
    }
    (cluster, etc)
}

/// Every configuration file the restored copy reads names none of the source's paths.
fn names_no_source_path(files: &[PathBuf], source_data: &Path, source_etc: &Path) {
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for source in [source_data, source_etc] {
            assert!(
                !text.contains(&source.display().to_string()),
                "{} names the source's {}:\n{text}",
                file.display(),
                source.display()
            );
        }
    }
}

fn show(cluster: &ScratchCluster, setting: &str) -> String {
    sql(cluster, &format!("SELECT current_setting('{setting}')"))
}

crate::pg_matrix! {
    /// Backup of a Debian-layout cluster; restore into the data directory and into a separate
    /// config directory, each started and holding every row with the restored configuration;
    /// a drill passes (starts, checksums) and files no incident.
    fn debian_layout_backs_up_restores_and_drills(pg) {
        let env = TestEnv::with_pg(Backend::Local, pg);
        let (source, etc) = debian_source(&env);
        let source_data = source.data_dir().to_owned();
        assert_eq!(show(&source, "config_file"), etc.join("postgresql.conf").display().to_string(), "a real Debian layout");
        assert_eq!(show(&source, "work_mem"), "7MB", "conf.d is read");
        assert!(!source_data.join("postgresql.conf").exists());
        sql(&source, "CREATE TABLE t (id serial PRIMARY KEY, payload text)");
        sql(&source, "INSERT INTO t (payload) SELECT md5(g::text) FROM generate_series(1, 5000) g");

        let backup = env.backup_pg();
        let snapshot = backup["snapshot_id"].as_str().expect("snapshot id").to_owned();
        let listed = json(&env.radd(&["--json", "ls", &snapshot]));
        let paths: Vec<&str> = listed.as_array().expect("array").iter().filter_map(|e| e["path"].as_str()).collect();
        for stored in [".radd-config/postgresql.conf", ".radd-config/pg_hba.conf", ".radd-config/pg_ident.conf", ".radd-config/conf.d", ".radd-config/conf.d/tuning.conf"] {
            assert!(paths.contains(&stored), "{stored} not in the snapshot: {paths:?}");
        }
        sql(&source, "INSERT INTO t (payload) SELECT md5(g::text) FROM generate_series(1, 3000) g");
        switch_and_wait_archived(&source);
        let source_pid = std::fs::read_to_string(env.path().join("source/main.pid")).expect("source pid file");

        // Into the data directory: `pg_ctl -D <target> start` uses the restored files.
        let restored = env.restore_and_start("latest", "restored", &[]);
        let target = restored.data_dir().to_owned();
        assert_eq!(rows(&restored), 8000);
        assert_eq!(show(&restored, "config_file"), target.join("postgresql.conf").display().to_string());
        assert_eq!(show(&restored, "hba_file"), target.join("pg_hba.conf").display().to_string());
        assert_eq!(show(&restored, "ident_file"), target.join("pg_ident.conf").display().to_string());
        assert_eq!(show(&restored, "data_directory"), target.display().to_string());
        assert_eq!(show(&restored, "work_mem"), "7MB", "the restored conf.d is read");
        assert!(!target.join(".radd-config").exists(), "stored configuration moved into place");
        names_no_source_path(&[target.join("postgresql.conf"), target.join("conf.d/tuning.conf"), target.join("postgresql.auto.conf")], &source_data, &etc);
        assert_eq!(std::fs::read_to_string(env.path().join("source/main.pid")).expect("source pid file"), source_pid, "the copy left the source's pid file alone");
        drop(restored);

        // Into a config directory beside it: `pg_ctl -D <config-dir> start`, as on Debian.
        let (target, config_dir) = (env.path().join("restored-cd"), env.path().join("etc-restored"));
        let out = env.radd(&["restore", &snapshot, "--target", target.to_str().unwrap(), "--config-dir", config_dir.to_str().unwrap()]);
        assert!(out.status.success(), "restore --config-dir: {}", stderr(&out));
        assert!(!target.join("postgresql.conf").exists() && !target.join(".radd-config").exists(), "configuration went to --config-dir");
        let run = env.path().join("restored-cd-run");
        std::fs::create_dir(&run).expect("create run dir");
        let mut copy = ScratchCluster::new(env.pg_bin(), &run).expect("scratch cluster").with_data_dir(&config_dir);
        copy.start(&[], &env.env).expect("pg_ctl -D <config-dir> start");
        block_on(copy.wait_promoted(Duration::from_secs(120))).expect("promoted");
        assert_eq!(rows(&copy), 8000);
        assert_eq!(show(&copy, "data_directory"), target.display().to_string());
        assert_eq!(show(&copy, "hba_file"), config_dir.join("pg_hba.conf").display().to_string());
        assert_eq!(show(&copy, "work_mem"), "7MB");
        names_no_source_path(&[config_dir.join("postgresql.conf"), config_dir.join("conf.d/tuning.conf"), target.join("postgresql.auto.conf")], &source_data, &etc);
        drop(copy);

        std::fs::write(
            env.path().join("drills/debian.toml"),
            "name = \"debian\"\nsnapshot = \"latest\"\n[target]\nrecovery = \"latest\"\n[scratch]\ntimeout = \"3m\"\n[[checks.sql]]\nname = \"rows\"\nquery = \"SELECT count(*) FROM t\"\nexpect_min = 8000\n",
        )
        .expect("write drill");
        let report = json(&env.radd(&["--json", "drill", "run", "debian"]));
        assert_eq!(report["passed"], true, "{report:#}");
        let checks = report["checks"].as_array().expect("checks");
        for check in ["starts", "checksums", "sql:rows"] {
            assert!(checks.iter().any(|c| c["check"] == check && c["status"] == "passed"), "{check} did not pass: {report:#}");
        }
        let events = json(&env.radd(&["--json", "events"]));
        let incidents: Vec<_> = events.as_array().expect("array").iter().filter(|e| e["kind"] == "incident").collect();
        assert!(incidents.is_empty(), "{incidents:#?}");
        assert_eq!(rows(&source), 8000, "the source is untouched");
    }
}
