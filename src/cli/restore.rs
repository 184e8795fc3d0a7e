//! `radd restore`.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use radd::events::{Event, Occurrence};
use radd::jobs;
use radd::pg::Lsn;
use radd::restore::{self, RecoveryTarget, RestoreOptions, TablespaceMapping};

use super::{Args, human_bytes, open_repo, print_json};

/// Arguments of `radd restore`.
#[derive(Debug, ClapArgs)]
pub struct RestoreArgs {
    /// `latest`, a snapshot id, or a unique prefix of one.
    pub snapshot: String,
    /// Data directory to create (must be absent or empty). Not with --scratch, which picks
    /// its own under [scratch] dir.
    #[arg(long, required_unless_present = "scratch", conflicts_with = "scratch")]
    pub target: Option<PathBuf>,
    /// Restore into a managed scratch instance and start it: PostgreSQL on a free loopback
    /// port with its own socket directory, archiving off, read-only at the target (unless
    /// --promote); prints the connection strings, the point reached, the RTO and the expiry.
    /// `radd scratch list|stop` manage it; the daemon stops it when its TTL runs out.
    #[arg(long, conflicts_with_all = ["archive", "include", "config_dir", "tablespace_map_all"])]
    pub scratch: bool,
    /// --scratch: lifetime of the instance (e.g. 30m, 4h; default [scratch] default_ttl).
    #[arg(long, requires = "scratch", value_name = "DURATION")]
    pub ttl: Option<String>,
    /// --scratch: port on 127.0.0.1 (default: a free one; never [postgres] port).
    #[arg(long, requires = "scratch")]
    pub port: Option<u16>,
    /// --scratch: promote at the target for a writable copy (default: read-only hot standby
    /// paused at the target).
    #[arg(long, requires = "scratch")]
    pub promote: bool,
    /// Recover to this time: RFC 3339, PostgreSQL's "2026-11-26 05:00:00+00", "2026-11-30T14:05Z",
    /// "yesterday 14:05", "today 09:00", "2h ago", "now"; a zone may follow ("+02:00",
    /// "Europe/Berlin"), UTC when none is given. With `latest`, radd picks the newest snapshot
    /// consistent before it.
    #[arg(long, group = "recovery", value_parser = restore::parse_time)]
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// Recover to this LSN (e.g. 0/3000060).
    #[arg(long, group = "recovery")]
    pub lsn: Option<Lsn>,
    /// Recover to a restore point made with `radd restore-point NAME`. With `latest`, radd picks
    /// the newest snapshot consistent before it; an unknown name is refused.
    #[arg(long, group = "recovery", value_name = "RESTORE_POINT")]
    pub name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[arg(long, group = "recovery")]
    pub immediate: bool,
    /// Accept a gap in the archived WAL after the backup's consistency point: recovery ends
    /// before the gap and promotes; the WAL from the gap on is lost (recorded in the event).
    #[arg(long)]
    pub allow_gap: bool,
    /// Recover along this timeline (a number, as in 00000002.history): needed to follow, or to
    /// stay off, a timeline that diverged. Default: the newest, unless it diverged.
    #[arg(long)]
    pub timeline: Option<u32>,
    /// Keep the source's archive_mode and archive_command, so the restored cluster archives into
    /// this repository: only for a restore that becomes the new primary. Without it radd writes
    /// `archive_mode = off`, so a copy started beside production can never push its timeline
    /// into production's archive.
    #[arg(long)]
    pub archive: bool,
    /// The default (archiving off); kept so existing scripts still parse.
    #[arg(long, conflicts_with = "archive", hide = true)]
    pub no_archive: bool,
    /// Fs snapshots: restore only paths matching this glob (and everything below); repeatable.
    #[arg(long)]
    pub include: Vec<String>,
    /// Restore a tablespace into DIR instead of its location at backup time: `OID=DIR` or
    /// `NAME=DIR`; repeatable. DIR must be absent or empty.
    #[arg(long, value_name = "OID|NAME=DIR", value_parser = TablespaceMapping::parse_entry)]
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// Restore every tablespace not given a --tablespace-map into DIR/<oid>.
    #[arg(long, value_name = "DIR")]
    pub tablespace_map_all: Option<PathBuf>,
    /// Base backups: write the configuration files that lived outside the source's data
    /// directory (Debian: /etc/postgresql/<ver>/<name>) into DIR (absent or empty) instead of the
    /// data directory; DIR/postgresql.conf then names the target as data_directory, so
    /// `pg_ctl -D DIR start` works as on Debian.
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

/// Restores and prints the report.
// Long on purpose: argument to options mapping, the restore, its events and the rendering, in the order the command runs them.
pub async fn run(args: &Args, a: &RestoreArgs) -> anyhow::Result<()> {
    let (config, repo) = open_repo(args, true).await?;
    let recovery = match (&a.time, a.lsn, &a.name, a.immediate) {
        (Some(t), ..) => RecoveryTarget::Time(*t),
        (_, Some(l), ..) => RecoveryTarget::Lsn(l),
        (_, _, Some(n), _) => RecoveryTarget::Name(n.clone()),
        (.., true) => RecoveryTarget::Immediate,
        _ => RecoveryTarget::Latest,
    };
    if a.scratch {
        return super::scratch::restore(args, a, &config, &repo, recovery).await;
    }
    let Some(target) = &a.target else {
        return Err(super::usage("radd restore needs --target DIR (or --scratch)".into()));
    };
    let bar = super::progress::Bar::start(args, "restore", super::progress::Unit::Bytes);
    let options = RestoreOptions {
        snapshot: a.snapshot.clone(),
        target: std::path::absolute(target)?,
        recovery,
        allow_gap: a.allow_gap,
        timeline: a.timeline.map(radd::pg::Timeline),
        restore_command: jobs::restore_command(&config.source)?,
        disable_archiving: !a.archive,
        include: a.include.clone(),
        tablespaces: TablespaceMapping {
            map: a
                .tablespace_map
                .iter()
                .map(|(k, d)| Ok((k.clone(), std::path::absolute(d)?)))
                .collect::<std::io::Result<_>>()?,
            all: a.tablespace_map_all.as_deref().map(std::path::absolute).transpose()?,
        },
        config_dir: a.config_dir.as_deref().map(std::path::absolute).transpose()?,
        progress: bar.progress(),
    };
    let log = jobs::event_log(&config)?;
    let result = restore::run(&repo, &options).await;
    bar.end(result.is_ok());
    let event = match &result {
        Ok(r) => Some(
            Event::from_occurrence(
                Occurrence::RestoreSucceeded,
                "restore",
                format!("snapshot {} restored into {}", r.snapshot_id, r.target.display()),
            )
            .details(serde_json::to_value(r).unwrap_or_default()),
        ),
        // A wrong request is the operator's to fix (exit code), not an incident.
        Err(e) if e.is_usage() => None,
        Err(e) => {
            let occurrence = if e.kind() == radd::ErrorKind::Integrity {
                Occurrence::CorruptionFound
            } else {
                Occurrence::RestoreFailed
            };
            Some(
                Event::from_occurrence(occurrence, "restore", format!("restore of {} failed: {e}", a.snapshot))
                    .label("error_type", e.kind().label()),
            )
        }
    };
    if let Some(event) = event {
        jobs::record(&log, &event)?;
    }
    let report = result.map_err(radd::Error::from)?;
    if args.json {
        return print_json(&report);
    }
    if report.kind == radd::snapshot::SnapshotKind::Fs {
        outln!(
            "restored snapshot {} into {}: {} files, {} verified against the manifest; {:.1}s",
            report.snapshot_id,
            report.target.display(),
            report.files,
            human_bytes(report.bytes),
            report.duration_seconds
        );
        return Ok(());
    }
    outln!(
        "restored snapshot {} into {}: {} files, {} verified against the manifest; WAL chain checked through {}; recovery target {}; {:.1}s\nstart it with: pg_ctl -D {} start",
        report.snapshot_id,
        report.target.display(),
        report.files,
        human_bytes(report.bytes),
        report.wal_chain_end,
        report.recovery_target,
        report.duration_seconds,
        report.target.display()
    );
    if let Some(p) = &report.restore_point {
        outln!(
            "restore point {} is at LSN {} on timeline {}, created {} by {}",
            p.name,
            p.lsn,
            p.timeline,
            p.time,
            p.by
        );
    }
    for t in &report.tablespaces {
        let name = t.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
        outln!("tablespace {}{name} (was {}) restored into {}", t.oid, t.location.display(), t.target.display());
    }
    Ok(())
}
