//! Setup steps many tests share: a source cluster with a table `t` of known rows, base backups
//! through `radd backup pg`, and the `phase` table the restore tests count rows of. Each helper
//! asserts its own step succeeded, so a test reads as the steps it is about.

use radd::pg::ScratchCluster;

use super::env::{TestEnv, json, sql, stderr, switch_and_wait_archived};

impl TestEnv {
    /// A source cluster (see [`TestEnv::source_cluster`]) with `t(id, v)`: `rows` rows of an id
    /// and its md5 text (about 70 bytes a row).
    pub fn source_with_rows(&self, rows: u32) -> ScratchCluster {
        let source = self.source_cluster();
        sql(&source, &format!("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, {rows}) g"));
        source
    }

    /// A source cluster with `t(id)`: ids 1..=`rows`.
    pub fn source_with_ids(&self, rows: u32) -> ScratchCluster {
        let source = self.source_cluster();
        sql(&source, &format!("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, {rows}) g"));
        source
    }

    /// A source with ids 1..=`rows` in `t` (see [`TestEnv::source_with_ids`]), a base backup of
    /// it, and the WAL after the backup archived: ready to restore or drill.
    pub fn source_with_backup(&self, rows: u32) -> ScratchCluster {
        let source = self.source_with_ids(rows);
        let backup = self.radd_push(&["backup", "pg"]);
        assert!(backup.status.success(), "backup: {}", stderr(&backup));
        switch_and_wait_archived(&source);
        source
    }

    /// Takes a base backup (`radd --json backup pg` with the archiving-side config); its report.
    pub fn backup_pg(&self) -> serde_json::Value {
        json(&self.radd_push(&["--json", "backup", "pg"]))
    }

    /// Takes a base backup; its snapshot id.
    pub fn backup_pg_id(&self) -> String {
        self.backup_pg()["snapshot_id"].as_str().expect("snapshot id").to_owned()
    }
}

/// Writes `n` rows of `phase` into `t(id serial, phase int, …)`.
pub fn insert_phase(cluster: &ScratchCluster, phase: i32, n: i32) {
    sql(cluster, &format!("INSERT INTO t (phase) SELECT {phase} FROM generate_series(1, {n})"));
}

/// How many rows of `phase` `t` holds.
pub fn phase_rows(cluster: &ScratchCluster, phase: i32) -> i64 {
    sql(cluster, &format!("SELECT count(*) FROM t WHERE phase = {phase}")).parse().expect("count")
}
