//! `[retention]` (and `[[fs]] retention = {…}`): which snapshots `radd forget` keeps. The
//! schema lives with the configuration; `retention` applies it.

use serde::{Deserialize, Serialize};

/// A retention policy (`[retention]` in radd.toml, or `radd forget` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Keep the newest N snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    pub keep_hourly: Option<u32>,
    /// … of each of the last N days.
    pub keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks.
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months.
    pub keep_monthly: Option<u32>,
    /// Keep every snapshot younger than this ("30d", "36h").
    pub keep_within: Option<String>,
}

impl Policy {
    /// Whether the policy keeps anything beyond the newest snapshot (an empty policy keeps all:
    /// forgetting with no rule configured must never delete everything).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}
