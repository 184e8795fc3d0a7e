//! Recovery settings for a restored data directory: backup_label, tablespace_map,
//! restore_command and the recovery target in postgresql.auto.conf, and recovery.signal.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Error, Plan, RestoreOptions, io_err};
use chrono::{DateTime, Utc};

use crate::pg::Lsn;
use crate::snapshot::Manifest;

/// Where WAL replay stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay all archived WAL.
    Latest,
    /// Stop as soon as the backup is consistent.
    Immediate,
    /// Stop at a time (written for PostgreSQL with an explicit UTC offset, so the restored
    /// server's `timezone` setting cannot shift it).
    Time(DateTime<Utc>),
    /// Stop at an LSN.
    Lsn(Lsn),
    /// Stop at a named restore point (`pg_create_restore_point`).
    Name(String),
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Latest => f.write_str("latest"),
            RecoveryTarget::Immediate => f.write_str("immediate"),
            RecoveryTarget::Time(t) => write!(f, "time {}", pg_time(t)),
            RecoveryTarget::Lsn(l) => write!(f, "lsn {l}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n}"),
        }
    }
}

/// A time as PostgreSQL reads it, in UTC with microseconds.
fn pg_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Writes backup_label, tablespace_map, recovery settings and recovery.signal into `dir`.
pub(super) fn write_settings(
    dir: &Path,
    manifest: &Manifest,
    options: &RestoreOptions,
    plan: &Plan,
    snapshot_id: &str,
) -> Result<(), Error> {
    let owner = std::fs::metadata(dir.join("PG_VERSION")).ok().map(|m| (m.uid(), m.gid()));
    let write_new = |name: &str, content: &str| -> Result<(), Error> {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(io_err("write", &path))?;
        hand_to(&path, owner)
    };
    if let Some(label) = &manifest.backup_label {
        write_new("backup_label", label)?;
    }
    if let Some(map) = manifest.tablespace_map.as_deref().filter(|m| !m.is_empty()) {
        write_new("tablespace_map", map)?;
    }
    for sub in ["pg_wal", "pg_wal/archive_status"] {
        let path = dir.join(sub);
        if !path.exists() {
            std::fs::create_dir(&path).map_err(io_err("create directory", &path))?;
            hand_to(&path, owner)?;
        }
    }
    let restore_command = match &plan.end_before {
        // An accepted gap is the end of the archive for this restore: wal-fetch says "not in the
        // archive" from the first missing segment on, so PostgreSQL ends recovery there and
        // promotes instead of aborting at the gap.
        Some(name) => options.restore_command.replacen(" %f %p", &format!(" --end-before {name} %f %p"), 1),
        None => options.restore_command.clone(),
    };
    let timeline = plan.timeline.map_or_else(|| "latest".to_owned(), |t| t.0.to_string());
    let mut settings = format!(
        "\n# Added by radd restore of snapshot {snapshot_id} at {}\nrestore_command = {}\nrecovery_target_timeline = '{timeline}'\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        quote(&restore_command),
    );
    match &plan.recovery {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Immediate => settings.push_str("recovery_target = 'immediate'\n"),
        RecoveryTarget::Time(t) => settings.push_str(&format!("recovery_target_time = {}\n", quote(&pg_time(t)))),
        RecoveryTarget::Lsn(l) => settings.push_str(&format!("recovery_target_lsn = '{l}'\n")),
        RecoveryTarget::Name(n) => settings.push_str(&format!("recovery_target_name = {}\n", quote(n))),
    }
    if plan.recovery != RecoveryTarget::Latest {
        settings.push_str("recovery_target_action = 'promote'\n");
    }
    if options.disable_archiving {
        // A copy must never archive into the repository it came from: its new timeline would be
        // followed by the next `restore latest` of production (issue 12, item 3).
        settings.push_str("archive_mode = 'off'\n");
    }
    if manifest.backup_label.as_deref().is_some_and(crate::snapshot::is_standby_label) {
        // A standby's postgresql.auto.conf names production's primary (pg_basebackup -R writes
        // primary_conninfo there): a restored copy must never stream from it or hold its slot.
        settings.push_str("primary_conninfo = ''\nprimary_slot_name = ''\n");
    }
    let auto_conf = dir.join("postgresql.auto.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&auto_conf)
        .and_then(|mut f| f.write_all(settings.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(io_err("append recovery settings to", &auto_conf))?;
    hand_to(&auto_conf, owner)?;
    write_new("recovery.signal", "")
}

/// Gives a file radd created to the data directory's owner (when running as root).
fn hand_to(path: &Path, owner: Option<(u32, u32)>) -> Result<(), Error> {
    match owner {
        Some((uid, gid)) if nix::unistd::geteuid().is_root() => {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err("set owner of", path))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_for_postgresql_in_utc_with_microseconds() {
        let t = crate::restore::parse_time("2026-11-30 14:05:00.5+01").unwrap();
        assert_eq!(pg_time(&t), "2026-11-30 13:05:00.500000+00");
    }
}
