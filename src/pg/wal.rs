//! WAL positions (LSNs), timelines and WAL file names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// PostgreSQL's default WAL segment size (16 MiB).
pub const SEGMENT_SIZE_DEFAULT: u64 = 16 << 20;

/// A WAL position, written `X/Y` in hex as PostgreSQL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The segment number (counting from 0) holding this position.
    #[must_use]
    pub fn segment_no(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("invalid LSN {s:?}: expected hex `X/Y`, e.g. 0/3000028");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| err())?;
        if hi > 0xFFFF_FFFF || lo > 0xFFFF_FFFF {
            return Err(err());
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A timeline id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timeline(pub u32);

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

/// A file PostgreSQL archives: a segment, a timeline history file, a backup history file
/// (`.backup`) or a partial segment (`.partial`). Parsing rejects anything else, so a name
/// from `archive_command` can never escape the WAL area of the repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFileName {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`
    Segment {
        /// Timeline.
        timeline: Timeline,
        /// Segment number (log id × segments per id + seg).
        number: u64,
    },
    /// `TTTTTTTT.history`
    History(Timeline),
    /// Anything else valid: `…​.partial`, `…​.XXXXXXXX.backup` (kept verbatim).
    Other {
        /// Timeline the file belongs to.
        timeline: Timeline,
        /// The full file name.
        name: String,
    },
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalFileName {
    /// Parses a WAL file name; `segment_size` fixes how segment numbers are spelled.
    pub fn parse(name: &str, segment_size: u64) -> Result<Self, String> {
        let err = || format!("{name:?} is not a WAL segment, history, .backup or .partial file name");
        let timeline = |s: &str| u32::from_str_radix(s, 16).map(Timeline).map_err(|_| err());
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() == 8 && is_hex(tli) {
                return Ok(WalFileName::History(timeline(tli)?));
            }
            return Err(err());
        }
        let base = &name[..name.len().min(24)];
        if base.len() != 24 || !is_hex(base) {
            return Err(err());
        }
        let rest = &name[24..];
        let tli = timeline(&base[..8])?;
        if rest.is_empty() {
            let per_id = 0x1_0000_0000 / segment_size;
            let hi = u64::from_str_radix(&base[8..16], 16).map_err(|_| err())?;
            let lo = u64::from_str_radix(&base[16..24], 16).map_err(|_| err())?;
            if lo >= per_id {
                return Err(err());
            }
            return Ok(WalFileName::Segment {
                timeline: tli,
                number: hi * per_id + lo,
            });
        }
        let backup_suffix = rest
            .strip_prefix('.')
            .and_then(|r| r.strip_suffix(".backup"))
            .is_some_and(|off| off.len() == 8 && is_hex(off));
        if rest == ".partial" || backup_suffix {
            return Ok(WalFileName::Other {
                timeline: tli,
                name: name.to_owned(),
            });
        }
        Err(err())
    }

    /// The segment file holding `lsn` on `timeline`.
    #[must_use]
    pub fn segment_for(timeline: Timeline, lsn: Lsn, segment_size: u64) -> Self {
        WalFileName::Segment {
            timeline,
            number: lsn.segment_no(segment_size),
        }
    }

    /// Timeline of the file.
    #[must_use]
    pub fn timeline(&self) -> Timeline {
        match self {
            WalFileName::Segment { timeline, .. } | WalFileName::Other { timeline, .. } => {
                *timeline
            }
            WalFileName::History(t) => *t,
        }
    }

    /// File name as PostgreSQL spells it.
    #[must_use]
    pub fn to_name(&self, segment_size: u64) -> String {
        match self {
            WalFileName::Segment { timeline, number } => {
                let per_id = 0x1_0000_0000 / segment_size;
                format!("{timeline}{:08X}{:08X}", number / per_id, number % per_id)
            }
            WalFileName::History(t) => format!("{t}.history"),
            WalFileName::Other { name, .. } => name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("nope".parse::<Lsn>().is_err());
    }

    #[test]
    fn wal_names() {
        let s = SEGMENT_SIZE_DEFAULT;
        let n = WalFileName::parse("000000010000000A000000FE", s).unwrap();
        assert_eq!(n, WalFileName::Segment { timeline: Timeline(1), number: 0xA * 256 + 0xFE });
        assert_eq!(n.to_name(s), "000000010000000A000000FE");
        assert_eq!(WalFileName::parse("00000002.history", s).unwrap(), WalFileName::History(Timeline(2)));
        assert!(WalFileName::parse("000000010000000000000003.00000028.backup", s).is_ok());
        assert!(WalFileName::parse("000000010000000000000003.partial", s).is_ok());
        assert!(WalFileName::parse("../../etc/passwd", s).is_err());
        assert!(WalFileName::parse("000000010000000000000300", s).is_err());
        let lsn: Lsn = "1/2000028".parse().unwrap();
        assert_eq!(WalFileName::segment_for(Timeline(1), lsn, s).to_name(s), "000000010000000100000002");
    }
}
