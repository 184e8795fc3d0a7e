//! radd's heartbeat table on the source cluster: one row whose timestamp the daemon refreshes
//! every few seconds. After a drill restores to "latest", the restored heartbeat tells how much
//! time was lost: the measured RPO.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::Error;

/// Creates the table if needed and sets the heartbeat to the server's `now()`.
pub async fn beat(client: &Client) -> Result<DateTime<Utc>, Error> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS radd;
             CREATE TABLE IF NOT EXISTS radd.heartbeat (id int PRIMARY KEY CHECK (id = 1), at timestamptz NOT NULL);",
        )
        .await
        .map_err(|source| Error::Query { query: "CREATE TABLE radd.heartbeat", driver: source })?;
    let row = client
        .query_one(
            "INSERT INTO radd.heartbeat VALUES (1, clock_timestamp())
             ON CONFLICT (id) DO UPDATE SET at = excluded.at RETURNING at",
            &[],
        )
        .await
        .map_err(|source| Error::Query { query: "INSERT INTO radd.heartbeat", driver: source })?;
    Ok(row.get(0))
}

/// The heartbeat stored in a (restored) cluster, or `None` if the table does not exist.
pub async fn read(client: &Client) -> Result<Option<DateTime<Utc>>, Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('radd.heartbeat') IS NOT NULL", &[])
        .await
        .map_err(|source| Error::Query { query: "to_regclass('radd.heartbeat')", driver: source })?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT at FROM radd.heartbeat WHERE id = 1", &[])
        .await
        .map_err(|source| Error::Query { query: "SELECT radd.heartbeat", driver: source })?;
    Ok(row.map(|r| r.get(0)))
}
