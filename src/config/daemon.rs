//! `[daemon]`: schedules, intervals and the HTTP address of `radd daemon`, typed at load.

use serde::{Deserialize, Serialize};

use super::time::{
    CronSchedule, HumanDuration, optional_cron, optional_cron_text, optional_duration, optional_duration_text,
};

/// `[daemon]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonConfig {
    /// Address of the HTTP server for `/metrics` and `/healthz`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Cron schedule (UTC) of the base backup; "" disables it.
    #[serde(
        default = "default_backup_schedule",
        deserialize_with = "optional_cron",
        serialize_with = "optional_cron_text"
    )]
    pub backup_schedule: Option<CronSchedule>,
    /// Cron schedule of retention: forget by `[retention]` (and jobs' policies), then prune
    /// ("" disables it).
    #[serde(
        default = "default_retention_schedule",
        deserialize_with = "optional_cron",
        serialize_with = "optional_cron_text"
    )]
    pub retention_schedule: Option<CronSchedule>,
    /// Grace period of scheduled prunes (longer than any backup; at least 1 h).
    #[serde(default = "default_prune_grace")]
    pub prune_grace: HumanDuration,
    /// How long the scheduled prune waits for running backups (their shared locks) to finish.
    #[serde(default = "default_lock_wait")]
    pub prune_lock_wait: HumanDuration,
    /// Cron schedule of the daily incremental verification ("" disables it).
    #[serde(
        default = "default_verify_schedule",
        deserialize_with = "optional_cron",
        serialize_with = "optional_cron_text"
    )]
    pub verify_schedule: Option<CronSchedule>,
    /// Every data object is read in full at least once per this period.
    #[serde(default = "default_verify_period")]
    pub verify_period: HumanDuration,
    /// How often the heartbeat row on the source is refreshed ("" or "0s" disables it).
    #[serde(
        default = "default_heartbeat",
        deserialize_with = "optional_duration",
        serialize_with = "optional_duration_text"
    )]
    pub heartbeat_interval: Option<HumanDuration>,
    /// How often archive lag is measured, events are delivered to sinks and expired scratch
    /// instances are stopped.
    #[serde(default = "default_watch")]
    pub watch_interval: HumanDuration,
    /// Archive lag beyond which WAL archiving counts as stalled (an S1 incident).
    #[serde(default = "default_stall")]
    pub archive_stall: HumanDuration,
    /// Time running jobs get to finish after SIGTERM before they are cancelled.
    #[serde(default = "default_grace")]
    pub shutdown_grace: HumanDuration,
    /// Run `radd check`'s checks (without the WAL round trip) at start and refuse to start when
    /// one fails. Off only on a host without PostgreSQL (file-tree backups only).
    #[serde(default = "default_true")]
    pub start_checks: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: default_listen(),
            backup_schedule: default_backup_schedule(),
            retention_schedule: default_retention_schedule(),
            prune_grace: default_prune_grace(),
            prune_lock_wait: default_lock_wait(),
            verify_schedule: default_verify_schedule(),
            verify_period: default_verify_period(),
            heartbeat_interval: default_heartbeat(),
            watch_interval: default_watch(),
            archive_stall: default_stall(),
            shutdown_grace: default_grace(),
            start_checks: true,
        }
    }
}

impl DaemonConfig {
    /// Problems of `[daemon]` beyond what loading checks, as "key: what is wrong" lines.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.prune_grace.0 < super::MIN_PRUNE_GRACE {
            problems.push(format!(
                "daemon.prune_grace: {} is below the safe minimum of {}; packs younger than the grace period may belong to a backup still being written",
                self.prune_grace,
                humantime::format_duration(super::MIN_PRUNE_GRACE)
            ));
        }
        if self.watch_interval.0.is_zero() {
            problems.push("daemon.watch_interval: must be above 0s".to_owned());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!("daemon.listen: {:?} is not an address like 127.0.0.1:9187", self.listen));
        }
        problems
    }
}

pub(super) fn default_true() -> bool {
    true
}
fn default_listen() -> String {
    "127.0.0.1:9187".into()
}
/// Invariant: the default expressions below are valid (a unit test loads them).
fn default_cron(text: &str) -> Option<CronSchedule> {
    CronSchedule::parse(text).ok()
}
fn default_backup_schedule() -> Option<CronSchedule> {
    default_cron("0 30 1 * * *")
}
fn default_retention_schedule() -> Option<CronSchedule> {
    default_cron("0 0 5 * * *")
}
fn default_verify_schedule() -> Option<CronSchedule> {
    default_cron("0 0 4 * * *")
}
fn default_prune_grace() -> HumanDuration {
    HumanDuration::secs(24 * 3600)
}
fn default_lock_wait() -> HumanDuration {
    HumanDuration::secs(3600)
}
fn default_verify_period() -> HumanDuration {
    HumanDuration::secs(30 * 86_400)
}
fn default_heartbeat() -> Option<HumanDuration> {
    Some(HumanDuration::secs(10))
}
fn default_watch() -> HumanDuration {
    HumanDuration::secs(15)
}
fn default_stall() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_grace() -> HumanDuration {
    HumanDuration::secs(60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_schedules_are_valid() {
        let d = super::DaemonConfig::default();
        assert!(d.backup_schedule.is_some() && d.retention_schedule.is_some() && d.verify_schedule.is_some());
    }
}
