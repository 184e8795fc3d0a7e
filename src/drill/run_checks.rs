//! Checks run against the started scratch instance: page integrity, SQL probes, RPO.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::definition::{SqlProbe, parse_duration};
use super::{CheckStatus, DrillOptions};
use crate::config::PostgresConfig;
use crate::pg::{self, ScratchCluster};
use crate::snapshot::SnapshotRecord;

/// Runs every check that needs the running scratch instance, then stops it.
pub async fn after_start(
    options: &DrillOptions,
    cluster: &mut ScratchCluster,
    sink: impl Fn(&str, CheckStatus, String, Instant, Option<f64>),
    started: DateTime<Utc>,
    _snapshot: &SnapshotRecord,
) {
    let checks = &options.definition.checks;
    let conn = cluster.connection();
    for probe in &checks.sql {
        let t = Instant::now();
        let (status, detail) = match sql_probe(probe, &conn, options.source.as_ref(), started).await {
            Ok(detail) => (CheckStatus::Passed, detail),
            Err(detail) => (CheckStatus::Failed, detail),
        };
        sink(&format!("sql:{}", probe.name), status, detail, t, None);
    }
    if let Some(rpo) = &checks.rpo {
        let t = Instant::now();
        match measure_rpo(&conn, started).await {
            Ok(seconds) => {
                let max = rpo.max.as_deref().map(|m| parse_duration("checks.rpo.max", m));
                let (status, detail) = match max {
                    Some(Ok(max)) if seconds > max.as_secs_f64() => (
                        CheckStatus::Failed,
                        format!(
                            "measured RPO {seconds:.1}s exceeds the maximum {}",
                            rpo.max.as_deref().unwrap_or_default()
                        ),
                    ),
                    Some(Err(e)) => (CheckStatus::Failed, e.to_string()),
                    _ => (
                        CheckStatus::Passed,
                        format!("measured RPO {seconds:.1}s (restored heartbeat vs. drill start)"),
                    ),
                };
                sink("rpo", status, detail, t, Some(seconds));
            }
            Err(Rpo::NoHeartbeat(reason)) => sink("rpo", CheckStatus::Skipped, reason, t, None),
            Err(Rpo::Failed(e)) => sink("rpo", CheckStatus::Failed, e, t, None),
        }
    }
    if checks.page_integrity {
        let t = Instant::now();
        let checksums_on = data_checksums(&conn).await;
        let amcheck = cluster.amcheck().map_err(|e| format!("pg_amcheck found problems: {e}"));
        let stopped = cluster.stop_clean().map_err(|e| format!("clean shutdown failed: {e}"));
        let pages = match (checksums_on, &stopped) {
            (true, Ok(())) => cluster
                .check_checksums()
                .map(|()| "pg_checksums: all pages verified")
                .map_err(|e| format!("pg_checksums: {e}")),
            (true, Err(e)) => Err(e.clone()),
            (false, _) => Ok("cluster has no data checksums; pg_checksums skipped"),
        };
        match (amcheck, pages) {
            (Ok(()), Ok(pages)) => sink(
                "page_integrity",
                CheckStatus::Passed,
                format!("pg_amcheck: all heap tables and B-tree indexes in every database are clean; {pages}"),
                t,
                None,
            ),
            (Err(e), _) | (_, Err(e)) => sink("page_integrity", CheckStatus::Failed, e, t, None),
        }
    }
}

async fn query_text(conn: &PostgresConfig, database: Option<&str>, query: &str) -> Result<String, String> {
    let mut conn = conn.clone();
    if let Some(db) = database {
        conn.dbname = db.to_owned();
    }
    let client = pg::connect(&conn).await.map_err(|e| e.to_string())?;
    let messages = client.simple_query(query).await.map_err(|e| format!("query failed: {e}"))?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .ok_or_else(|| "query returned no row".to_owned())
}

async fn sql_probe(
    probe: &SqlProbe,
    conn: &PostgresConfig,
    source: Option<&PostgresConfig>,
    started: DateTime<Utc>,
) -> Result<String, String> {
    let db = probe.database.as_deref();
    if let Some(max_age) = &probe.max_age {
        let max = parse_duration("max_age", max_age).map_err(|e| e.to_string())?;
        let wrapped = format!("SELECT extract(epoch FROM ({}))::float8", probe.query);
        let value: f64 = query_text(conn, db, &wrapped).await?.parse().map_err(|e| format!("not a timestamp: {e}"))?;
        let age = started.timestamp_millis() as f64 / 1000.0 - value;
        return if age <= max.as_secs_f64() {
            Ok(format!("newest value is {age:.1}s older than the drill start (max {max_age})"))
        } else {
            Err(format!("newest value is {age:.1}s older than the drill start, more than {max_age}"))
        };
    }
    let value = query_text(conn, db, &probe.query).await?;
    if let Some(expected) = &probe.expect {
        return if &value == expected {
            Ok(format!("= {value}"))
        } else {
            Err(format!("got {value:?}, expected {expected:?}"))
        };
    }
    if let Some(min) = probe.expect_min {
        let n: i64 = value.parse().map_err(|_| format!("got {value:?}, expected an integer ≥ {min}"))?;
        return if n >= min { Ok(format!("{n} ≥ {min}")) } else { Err(format!("got {n}, expected ≥ {min}")) };
    }
    let source = source.ok_or("expect_source needs the [postgres] source connection in the config")?;
    let expected = query_text(source, db, &probe.query).await.map_err(|e| format!("on the source: {e}"))?;
    if value == expected {
        Ok(format!("= {value} (same as the source)"))
    } else {
        Err(format!("got {value:?}, source has {expected:?}"))
    }
}

/// Why the RPO was not measured.
enum Rpo {
    /// The source had no heartbeat when it was backed up (a fresh install): nothing to
    /// measure yet, so the check is skipped with this reason rather than failed.
    NoHeartbeat(String),
    /// The restored instance could not be asked.
    Failed(String),
}

async fn measure_rpo(conn: &PostgresConfig, started: DateTime<Utc>) -> Result<f64, Rpo> {
    let client = pg::connect(conn).await.map_err(|e| Rpo::Failed(e.to_string()))?;
    match pg::heartbeat::read(&client).await.map_err(|e| Rpo::Failed(e.to_string()))? {
        Some(at) => Ok(((started - at).num_milliseconds().max(0)) as f64 / 1000.0),
        None => Err(Rpo::NoHeartbeat(
            "no radd.heartbeat table in the restored cluster (the source had none when it was backed up): run `radd daemon` or `radd heartbeat` against the source; the next backup's drill measures the RPO".into(),
        )),
    }
}

async fn data_checksums(conn: &PostgresConfig) -> bool {
    query_text(conn, None, "SHOW data_checksums").await.is_ok_and(|v| v == "on")
}
