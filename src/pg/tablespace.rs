//! Tablespaces: what `pg_tablespace` lists, the `tablespace_map` file format PostgreSQL reads
//! at the end of a backup's recovery, and the per-version directory inside a tablespace.
//!
//! A tablespace is a directory outside the data directory, reached through the symbolic link
//! `pg_tblspc/<oid>`; PostgreSQL writes its files only below `PG_<major>_<catversion>` in it, so
//! several clusters (or versions, after pg_upgrade) can share one location. Knows nothing of the
//! repository: `snapshot` stores, `restore` remaps.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{BackupSession, Error};

/// One user tablespace (not `pg_default` or `pg_global`, which live inside the data directory),
/// as recorded in a snapshot so a restore can remap it by OID or by name without the identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// OID: the name of its link in `pg_tblspc/`.
    pub oid: u32,
    /// `spcname`.
    pub name: String,
    /// `pg_tablespace_location(oid)` at backup time (empty or relative for in-place
    /// tablespaces, which are directories inside `pg_tblspc/` and are backed up as such).
    pub location: String,
}

impl BackupSession {
    /// The user tablespaces, by OID. Asked on the backup's own session, so the list describes
    /// the cluster the backup reads.
    pub async fn tablespaces(&self) -> Result<Vec<Tablespace>, Error> {
        let q = "SELECT oid::int8, spcname::text, coalesce(pg_tablespace_location(oid), '') FROM pg_tablespace \
                 WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid";
        let rows = self
            .client
            .query(q, &[])
            .await
            .map_err(|source| Error::Query { query: "SELECT … FROM pg_tablespace", driver: source })?;
        rows.iter()
            .map(|row| {
                let oid = u32::try_from(row.get::<_, i64>(0))
                    .map_err(|_| Error::Unexpected("tablespace oid out of range".into()))?;
                Ok(Tablespace { oid, name: row.get(1), location: row.get(2) })
            })
            .collect()
    }
}

/// Prefix of the per-version directory PostgreSQL `server_version_num` writes in a tablespace
/// (`PG_15_` for 15.x; the catalog version follows). Other versions' directories in the same
/// location belong to other clusters and are not backed up (as pg_basebackup does).
#[must_use]
pub fn version_dir_prefix(server_version_num: u32) -> String {
    if server_version_num >= 100_000 {
        format!("PG_{}_", server_version_num / 10_000)
    } else {
        format!("PG_{}.{}_", server_version_num / 10_000, server_version_num / 100 % 100)
    }
}

/// Parses `tablespace_map` content: one `<oid> <path>` line per tablespace, the path with `\`
/// escaping `\`, CR and LF (as PostgreSQL writes and reads it). Lines that do not start with
/// an OID are ignored.
#[must_use]
pub fn parse_tablespace_map(content: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut finish = |line: &mut String| {
        if let Some((oid, path)) = line.split_once(' ')
            && let Ok(oid) = oid.parse()
        {
            out.push((oid, path.to_owned()));
        }
        line.clear();
    };
    let mut line = String::new();
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => line.extend(chars.next()),
            '\n' | '\r' => finish(&mut line),
            c => line.push(c),
        }
    }
    finish(&mut line);
    out
}

/// `tablespace_map` content for `(oid, path)` pairs, escaped as PostgreSQL escapes it.
#[must_use]
pub fn format_tablespace_map(entries: &[(u32, String)]) -> String {
    let mut out = String::new();
    for (oid, path) in entries {
        let _ = write!(out, "{oid} ");
        for c in path.chars() {
            if matches!(c, '\\' | '\n' | '\r') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_map_round_trips_with_escapes() {
        let entries = vec![(16384, "/srv/ts one".to_owned()), (16390, "/odd\\path\nwith newline".to_owned())];
        let text = format_tablespace_map(&entries);
        assert_eq!(text.lines().next(), Some("16384 /srv/ts one"));
        assert_eq!(parse_tablespace_map(&text), entries);
        assert_eq!(
            parse_tablespace_map("16384 /a\n16385 /b"),
            vec![(16384, "/a".to_owned()), (16385, "/b".to_owned())]
        );
        assert!(parse_tablespace_map("").is_empty());
    }

    #[test]
    fn version_dirs_follow_the_major_version() {
        assert_eq!(version_dir_prefix(150_018), "PG_15_");
        assert_eq!(version_dir_prefix(180_001), "PG_18_");
        assert_eq!(version_dir_prefix(90_624), "PG_9.6_");
    }
}
