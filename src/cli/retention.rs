//! `radd forget`, `radd pin`, `radd unpin`.

use clap::Args as ClapArgs;
use radd::events::{Event, Occurrence};
use radd::jobs;
use radd::retention::{self, Policy};

use super::{Args, open_repo, print_json};

/// Arguments of `radd forget`; flags override `[retention]` from the config.
#[derive(Debug, ClapArgs)]
pub struct ForgetArgs {
    /// Show the plan, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the newest N snapshots (per group).
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    /// … days.
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// … ISO weeks.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// … months.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// Keep everything younger than this ("30d").
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Evaluate the policy as of this time (RFC 3339) instead of now.
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

/// Arguments of `radd pin` / `radd unpin`.
#[derive(Debug, ClapArgs)]
pub struct PinArgs {
    /// Snapshot id or prefix.
    pub snapshot: String,
}

/// Applies the retention policy (or shows the plan).
pub async fn forget(args: &Args, a: &ForgetArgs) -> anyhow::Result<()> {
    let (config, repo) = open_repo(args, false).await?;
    let mut policy: Policy = config.retention.clone();
    let flags_given = a.keep_last.is_some()
        || a.keep_hourly.is_some()
        || a.keep_daily.is_some()
        || a.keep_weekly.is_some()
        || a.keep_monthly.is_some()
        || a.keep_within.is_some();
    let flags = [
        (&mut policy.keep_last, a.keep_last),
        (&mut policy.keep_hourly, a.keep_hourly),
        (&mut policy.keep_daily, a.keep_daily),
        (&mut policy.keep_weekly, a.keep_weekly),
        (&mut policy.keep_monthly, a.keep_monthly),
    ];
    for (field, flag) in flags {
        if flag.is_some() {
            *field = flag;
        }
    }
    if a.keep_within.is_some() {
        policy.keep_within.clone_from(&a.keep_within);
    }
    let now = match &a.now {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)?.with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    // Flags on the command line apply to every group; otherwise `[[fs]]` jobs' own policies.
    let jobs = if flags_given { Vec::new() } else { jobs::job_policies(&config) };
    let report = retention::forget(&repo, &policy, &jobs, now, a.dry_run).await.map_err(radd::Error::from)?;
    if report.applied && report.forgotten > 0 {
        let log = jobs::event_log(&config)?;
        let event = Event::from_occurrence(
            Occurrence::MaintenanceSucceeded,
            "retention.forget",
            format!("{} snapshot(s) forgotten by the retention policy", report.forgotten),
        )
        .details(serde_json::to_value(&report).unwrap_or_default());
        jobs::record(&log, &event)?;
    }
    if args.json {
        return print_json(&report);
    }
    outln!("{:<26} {:<6} {:<21} REASONS", "ID", "ACTION", "TIME");
    for d in &report.decisions {
        outln!(
            "{:<26} {:<6} {:<21} {}",
            d.snapshot_id,
            if d.keep { "keep" } else { "forget" },
            d.time,
            d.reasons.join(", ")
        );
    }
    outln!(
        "{} snapshot(s) {}; chunks are reclaimed by prune",
        report.forgotten,
        if report.applied { "forgotten" } else { "would be forgotten (dry run)" }
    );
    Ok(())
}

/// Pins or unpins a snapshot.
pub async fn pin(args: &Args, a: &PinArgs, pinned: bool) -> anyhow::Result<()> {
    let (_, repo) = open_repo(args, false).await?;
    let id = retention::set_pin(&repo, &a.snapshot, pinned).await.map_err(radd::Error::from)?;
    if args.json {
        return print_json(&serde_json::json!({ "snapshot_id": id, "pinned": pinned }));
    }
    outln!("snapshot {id} {}", if pinned { "pinned: kept by every retention policy" } else { "unpinned" });
    Ok(())
}

/// Arguments of `radd prune`.
#[derive(Debug, ClapArgs)]
pub struct PruneArgs {
    /// Show what would be condemned and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Unreferenced packs are deleted only by a prune at least this long after they were first
    /// found unreferenced; must exceed the longest backup ("24h").
    #[arg(long, default_value = "24h")]
    pub grace: String,
    /// Accept a grace period below the safe minimum (1h).
    #[arg(long)]
    pub force: bool,
    /// How long to wait for running backups to finish (prune never runs beside one).
    #[arg(long, default_value = "0s")]
    pub lock_wait: String,
    /// Evaluate as of this time (RFC 3339) instead of now.
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

/// Runs a prune and reports what it reclaimed.
pub async fn prune(args: &Args, a: &PruneArgs) -> anyhow::Result<()> {
    let (config, repo) = open_repo(args, true).await?;
    let grace_std =
        humantime::parse_duration(&a.grace).map_err(|e| super::usage(format!("--grace {:?}: {e}", a.grace)))?;
    if grace_std < radd::config::MIN_PRUNE_GRACE && !a.force {
        return Err(super::usage(format!(
            "--grace {} is below the safe minimum of {}: packs younger than the grace period may belong to a backup of an older radd (which takes no lock) still being written; pass --force to prune anyway",
            a.grace,
            humantime::format_duration(radd::config::MIN_PRUNE_GRACE)
        )));
    }
    let lock_wait = humantime::parse_duration(&a.lock_wait)
        .map_err(|e| super::usage(format!("--lock-wait {:?}: {e}", a.lock_wait)))?;
    let grace = chrono::Duration::from_std(grace_std)?;
    let now = match &a.now {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)?.with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let report = retention::prune(&repo, retention::PruneOptions { now, grace, dry_run: a.dry_run, lock_wait })
        .await
        .map_err(radd::Error::from)?;
    if report.applied {
        let log = jobs::event_log(&config)?;
        let event = Event::from_occurrence(
            Occurrence::MaintenanceSucceeded,
            "retention.prune",
            format!(
                "prune reclaimed {} bytes ({} packs, {} WAL files)",
                report.bytes_reclaimed, report.packs_deleted, report.wal_deleted
            ),
        )
        .details(serde_json::to_value(&report).unwrap_or_default());
        jobs::record(&log, &event)?;
    }
    if args.json {
        return print_json(&report);
    }
    outln!(
        "{}: {} packs referenced, {} newly condemned, {} reprieved, {} deleted; {} WAL files deleted; {} stale staging files removed; {} reclaimed",
        if report.applied { "prune" } else { "prune (dry run)" },
        report.packs_referenced,
        report.packs_condemned,
        report.packs_reprieved,
        report.packs_deleted,
        report.wal_deleted,
        report.staging_removed,
        super::human_bytes(report.bytes_reclaimed)
    );
    for (timeline, from) in &report.wal_kept_from {
        outln!("  timeline {timeline}: WAL kept from {from}");
    }
    Ok(())
}

/// Arguments of `radd unlock`.
#[derive(Debug, ClapArgs)]
pub struct UnlockArgs {
    /// Remove locks whose holder stopped refreshing them (the process is gone).
    #[arg(long)]
    pub stale: bool,
    /// Remove every lock, also live ones (only when sure no prune is running).
    #[arg(long, conflicts_with = "stale")]
    pub all: bool,
}

/// Lists locks, or removes stale (or all) ones.
pub async fn unlock(args: &Args, a: &UnlockArgs) -> anyhow::Result<()> {
    let (_, repo) = open_repo(args, false).await?;
    let now = chrono::Utc::now();
    let (verb, locks) = if a.stale || a.all {
        ("removed", repo.unlock(a.all).await.map_err(radd::Error::from)?)
    } else {
        ("held", repo.locks().await.map_err(radd::Error::from)?)
    };
    if args.json {
        return print_json(&locks);
    }
    for l in &locks {
        outln!(
            "{verb}: {} by `{}` on {} (pid {}), taken {}s ago, heartbeat {}s ago{}",
            l.id,
            l.command,
            l.host,
            l.pid,
            (now - l.created).num_seconds(),
            (now - l.heartbeat).num_seconds(),
            if l.is_stale(now) { " (stale)" } else { "" }
        );
    }
    if locks.is_empty() {
        outln!("no locks {verb}");
    }
    Ok(())
}
