//! Named restore points on the source: `pg_create_restore_point` writes a WAL record that
//! `recovery_target_name` can stop at; `pg_switch_wal` right after closes the segment holding it
//! so the archiver ships it now instead of when the segment fills (a quiet server could take
//! hours, and until then no restore can reach the point).

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::{Error, Lsn, Timeline};

/// A restore point as the server created it.
#[derive(Debug, Clone)]
pub struct CreatedPoint {
    /// Position of the restore point's WAL record (as `pg_create_restore_point` returns it).
    pub lsn: Lsn,
    /// The server's timeline (from the WAL file name of that position).
    pub timeline: Timeline,
    /// The server's `now()` when it was created.
    pub time: DateTime<Utc>,
    /// The segment switched to (`pg_switch_wal`), so the one holding the point gets archived.
    pub switched_at: Lsn,
}

/// Creates restore point `name` and switches WAL so it is archived promptly. Must run on a
/// primary (a standby cannot write WAL); the role needs EXECUTE on both functions (superuser,
/// or granted: `GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO …`).
///
/// # Errors
/// [`Error::Query`] from the server (not a primary, missing grant), [`Error::Unexpected`] for
/// an answer radd cannot read.
pub async fn create(client: &Client, name: &str) -> Result<CreatedPoint, Error> {
    let query = "SELECT pg_create_restore_point($1)";
    let row = client
        .query_one("SELECT p::text, pg_walfile_name(p), now() FROM pg_create_restore_point($1) AS p", &[&name])
        .await
        .map_err(|source| Error::Query { query, driver: source })?;
    let lsn: String = row.get(0);
    let file: String = row.get(1);
    let time: DateTime<Utc> = row.get(2);
    let lsn: Lsn =
        lsn.parse().map_err(|e| Error::Unexpected(format!("pg_create_restore_point returned {lsn:?}: {e}")))?;
    let timeline = file
        .get(..8)
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .map(Timeline)
        .ok_or_else(|| Error::Unexpected(format!("pg_walfile_name returned {file:?}")))?;
    let switched: String = client
        .query_one("SELECT pg_switch_wal()::text", &[])
        .await
        .map_err(|source| Error::Query { query: "SELECT pg_switch_wal()", driver: source })?
        .get(0);
    let switched_at =
        switched.parse().map_err(|e| Error::Unexpected(format!("pg_switch_wal returned {switched:?}: {e}")))?;
    Ok(CreatedPoint { lsn, timeline, time, switched_at })
}
