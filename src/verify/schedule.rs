//! Verification spread over time: every data object (pack, WAL file) is read in full at least
//! once per period without re-reading what was already checked. Each object belongs to one of
//! `period_days` daily slices (by a hash of its key), so a daily run reads about 1/period of the
//! repository and each object exactly once per period; a record of when each object was last
//! read lets a run also catch up on objects that became overdue (a missed day).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Subset;

/// When each data object was last read in full and found intact.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VerifiedRecord {
    /// Object key → RFC 3339 time of the last full read.
    pub objects: BTreeMap<String, String>,
}

impl VerifiedRecord {
    /// Where the record of repository `repo_id` lives.
    #[must_use]
    pub fn path(state_dir: &Path, repo_id: &str) -> PathBuf {
        state_dir.join(format!("verified-{repo_id}.json"))
    }

    /// Loads the record (empty when absent or unreadable: then only the day's slice is read).
    #[must_use]
    pub fn load(path: &Path) -> Self {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Saves it atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(tmp, path)
    }

    /// Today's subset: the day's slice plus every object not read for longer than the period.
    #[must_use]
    pub fn due(&self, now: DateTime<Utc>, period_days: u64) -> Subset {
        let period_days = period_days.max(1);
        let day = u64::try_from(now.timestamp().div_euclid(86_400)).unwrap_or(0);
        let limit = now - chrono::Duration::days(i64::try_from(period_days).unwrap_or(30) + 1);
        let also: HashSet<String> = self
            .objects
            .iter()
            .filter(|(_, at)| DateTime::parse_from_rfc3339(at).is_ok_and(|t| t.with_timezone(&Utc) <= limit))
            .map(|(key, _)| key.clone())
            .collect();
        Subset { slice: Some((day % period_days + 1, period_days)), also }
    }

    /// Marks objects as read at `now`.
    pub fn mark(&mut self, keys: &[String], now: DateTime<Utc>) {
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for key in keys {
            self.objects.insert(key.clone(), at.clone());
        }
    }

    /// Age in seconds of the least recently verified object in the record.
    #[must_use]
    pub fn oldest_age_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        self.objects
            .values()
            .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (now - t.with_timezone(&Utc)).num_seconds())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_daily_runs_read_each_object_exactly_once() {
        let keys: Vec<String> = (0..500).map(|i| format!("packs/{i:064x}")).collect();
        let mut record = VerifiedRecord::default();
        let start = DateTime::parse_from_rfc3339("2026-11-01T04:00:00Z").unwrap().with_timezone(&Utc);
        let mut reads: BTreeMap<&str, u32> = BTreeMap::new();
        for day in 0..30 {
            let now = start + chrono::Duration::days(day);
            let subset = record.due(now, 30);
            let read: Vec<String> = keys.iter().filter(|k| subset.contains(k)).cloned().collect();
            for k in &read {
                *reads.entry(keys.iter().find(|x| *x == k).unwrap()).or_default() += 1;
            }
            record.mark(&read, now);
        }
        assert_eq!(reads.len(), keys.len(), "every object read within the period");
        assert!(reads.values().all(|&n| n == 1), "each exactly once");
        assert!(record.oldest_age_seconds(start + chrono::Duration::days(30)).unwrap() <= 30 * 86_400);
    }

    #[test]
    fn a_missed_day_is_caught_up_as_overdue() {
        let mut record = VerifiedRecord::default();
        let then = DateTime::parse_from_rfc3339("2026-10-01T04:00:00Z").unwrap().with_timezone(&Utc);
        record.mark(&["packs/old".to_owned()], then);
        let now = then + chrono::Duration::days(40);
        assert!(record.due(now, 30).contains("packs/old"));
    }
}
