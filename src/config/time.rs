//! Durations and cron schedules as configuration types, parsed when the file is loaded (like
//! [`super::ByteSize`]): a value that loads is valid, so no caller re-parses a string or falls
//! back to a default it made up.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as humantime text (`"10s"`, `"5m"`, `"24h"`, `"30d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// From whole seconds (defaults in code).
    #[must_use]
    pub const fn secs(seconds: u64) -> Self {
        HumanDuration(Duration::from_secs(seconds))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {text:?} ({e}); write e.g. \"10s\", \"5m\", \"24h\""))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration where `""` or `"0s"` turns the feature off (`None`).
pub fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: HumanDuration = text.parse().map_err(serde::de::Error::custom)?;
    Ok((!value.0.is_zero()).then_some(value))
}

/// Writes an optional duration back as text (`""` when off).
pub fn optional_duration_text<S: Serializer>(value: &Option<HumanDuration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_str(""),
    }
}

/// A cron schedule (UTC): the standard five fields, or six/seven with seconds first.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// As written.
    pub text: String,
    /// Parsed.
    pub schedule: cron::Schedule,
}

impl CronSchedule {
    /// Parses `text` (see [`super::parse_cron`]).
    ///
    /// # Errors
    /// A message naming the expression and what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        super::parse_cron(text)
            .map(|schedule| CronSchedule { text: text.trim().to_owned(), schedule })
            .map_err(|e| format!("invalid cron expression {text:?}: {e}"))
    }
}

/// A schedule where `""` turns the job off (`None`).
pub fn optional_cron<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CronSchedule>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    CronSchedule::parse(&text).map(Some).map_err(serde::de::Error::custom)
}

/// Writes an optional schedule back as text (`""` when off).
pub fn optional_cron_text<S: Serializer>(value: &Option<CronSchedule>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_ref().map_or("", |c| c.text.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "optional_duration")]
        d: Option<HumanDuration>,
        #[serde(deserialize_with = "optional_cron")]
        c: Option<CronSchedule>,
    }

    #[test]
    fn empty_and_zero_turn_off_and_bad_values_are_refused_at_load() {
        let t: T = toml::from_str("d = \"\"\nc = \"\"\n").unwrap();
        assert!(t.d.is_none() && t.c.is_none());
        let t: T = toml::from_str("d = \"0s\"\nc = \"30 1 * * *\"\n").unwrap();
        assert!(t.d.is_none());
        assert_eq!(t.c.unwrap().text, "30 1 * * *");
        let t: T = toml::from_str("d = \"90s\"\nc = \"0 30 1 * * *\"\n").unwrap();
        assert_eq!(t.d, Some(HumanDuration::secs(90)));
        let err = toml::from_str::<T>("d = \"soon\"\nc = \"\"\n").err().unwrap().to_string();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
        let err = toml::from_str::<T>("d = \"\"\nc = \"every day\"\n").err().unwrap().to_string();
        assert!(err.contains("invalid cron expression"), "{err}");
    }
}
