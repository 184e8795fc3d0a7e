//! WAL positions (LSNs), timelines and WAL file names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The WAL segment size of a cluster (`initdb --wal-segsize`): a power of two from 1 MiB to
/// 1 GiB. It decides how a segment number is spelled in a file name (segments per log id =
/// 4 GiB / size), so every parse and every name built takes one: a name read with the wrong
/// size names another position in the WAL. Serialised as the byte count, as records written
/// before this type existed store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentSize(u64);

impl SegmentSize {
    /// Smallest size `initdb --wal-segsize` accepts (1 MiB).
    pub const MIN: u64 = 1 << 20;
    /// Largest size `initdb --wal-segsize` accepts (1 GiB).
    pub const MAX: u64 = 1 << 30;

    /// Validates a size in bytes.
    ///
    /// # Errors
    /// A size that is not a power of two between 1 MiB and 1 GiB.
    pub fn from_bytes(bytes: u64) -> Result<Self, String> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(SegmentSize(bytes))
        } else {
            Err(format!("{bytes} bytes is not a WAL segment size: PostgreSQL uses a power of two from 1 MiB to 1 GiB"))
        }
    }

    /// The size in bytes.
    #[must_use]
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per 4 GiB log id: the radix of the last 8 hex digits of a segment name.
    #[must_use]
    pub fn segments_per_id(self) -> u64 {
        0x1_0000_0000 / self.0
    }
}

/// Offset of `xlp_info` in a WAL page header.
pub(super) const XLP_INFO: usize = 2;
/// `xlp_info` flag: the page starts with the long header (the first page of every segment).
pub(super) const XLP_LONG_HEADER: u16 = 0x0002;
/// Offsets of `xlp_seg_size` and `xlp_xlog_blcksz` in `XLogLongPageHeaderData`.
pub(super) const XLP_SEG_SIZE: usize = 32;
pub(super) const XLP_XLOG_BLCKSZ: usize = 36;

impl SegmentSize {
    /// Bytes of a segment's start that [`SegmentSize::of_segment_file`] reads: the long page
    /// header up to `xlp_xlog_blcksz`.
    pub const HEADER_LEN: usize = 40;

    /// PostgreSQL's default (`initdb` without `--wal-segsize`), for tests and examples that
    /// build a default cluster; never an assumption about a real one.
    pub const DEFAULT: SegmentSize = SegmentSize(16 << 20);

    /// The size of a segment file as PostgreSQL wrote it: its length (segments are always
    /// full-sized), which must agree with the `xlp_seg_size` of the long page header at its
    /// start when that header is there (native byte order: the server writes it on this host).
    ///
    /// # Errors
    /// A length that is no segment size, or a header that says another size (a damaged or
    /// foreign file).
    pub fn of_segment_file(start: &[u8], len: u64) -> Result<Self, String> {
        let by_length = SegmentSize::from_bytes(len)
            .map_err(|_| format!("a WAL segment file is 1 MiB to 1 GiB (a power of two), this one is {len} bytes"))?;
        let field = |at: usize| start.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let info = start.get(XLP_INFO..XLP_INFO + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        let long_header = info.is_some_and(|i| i & XLP_LONG_HEADER != 0)
            && field(XLP_XLOG_BLCKSZ).is_some_and(|b| b.is_power_of_two() && (1024..=32768).contains(&b));
        match field(XLP_SEG_SIZE).map(|s| SegmentSize::from_bytes(u64::from(s))) {
            Some(Ok(by_header)) if long_header && by_header != by_length => Err(format!(
                "the file is {len} bytes but its page header says {by_header} segments; it is damaged or not a WAL segment"
            )),
            _ => Ok(by_length),
        }
    }
}

/// As PostgreSQL shows `wal_segment_size`: `16MB`, `1GB`.
impl fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1 << 30 { write!(f, "{}GB", self.0 >> 30) } else { write!(f, "{}MB", self.0 >> 20) }
    }
}

/// Accepts what [`fmt::Display`] writes and what `SHOW wal_segment_size` prints (`16MB`, `1GB`),
/// `MiB`/`GiB`/`kB` spellings and a plain byte count.
impl FromStr for SegmentSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let n: u64 = t[..split].parse().map_err(|_| format!("invalid WAL segment size {s:?}: expected e.g. 16MB"))?;
        let unit: u64 = match t[split..].trim() {
            "" | "B" => 1,
            "kB" | "KB" | "KiB" => 1 << 10,
            "MB" | "M" | "MiB" => 1 << 20,
            "GB" | "G" | "GiB" => 1 << 30,
            other => return Err(format!("invalid WAL segment size {s:?}: unknown unit {other:?}")),
        };
        let bytes = n.checked_mul(unit).ok_or_else(|| format!("invalid WAL segment size {s:?}: too large"))?;
        SegmentSize::from_bytes(bytes)
    }
}

impl Serialize for SegmentSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for SegmentSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SegmentSize::from_bytes(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A WAL position, written `X/Y` in hex as PostgreSQL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The segment number (counting from 0) holding this position.
    #[must_use]
    pub fn segment_no(self, segment_size: SegmentSize) -> u64 {
        self.0 / segment_size.bytes()
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

/// The inverse of [`fmt::Display`]: exactly 8 hex digits, as in WAL file names and the
/// repository's `wal/<timeline>/` directories (PostgreSQL writes upper case; lower case is read).
impl FromStr for Timeline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("invalid timeline {s:?}: expected 8 hex digits, e.g. 00000001"));
        }
        u32::from_str_radix(s, 16).map(Timeline).map_err(|e| format!("invalid timeline {s:?}: {e}"))
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
    /// Parses a WAL file name; `segment_size` fixes how segment numbers are spelled (a segment
    /// name whose low part is not below the segments per log id is refused).
    ///
    /// # Errors
    /// Anything but a segment, history, `.backup` or `.partial` name.
    pub fn parse(name: &str, segment_size: SegmentSize) -> Result<Self, String> {
        if !Self::is_segment_name(name) {
            return Self::parse_auxiliary(name);
        }
        let err = || format!("{name:?} is not a WAL segment name for {segment_size} segments");
        let per_id = segment_size.segments_per_id();
        let tli = u32::from_str_radix(&name[..8], 16).map_err(|_| err())?;
        let hi = u64::from_str_radix(&name[8..16], 16).map_err(|_| err())?;
        let lo = u64::from_str_radix(&name[16..24], 16).map_err(|_| err())?;
        if lo >= per_id {
            return Err(err());
        }
        Ok(WalFileName::Segment { timeline: Timeline(tli), number: hi * per_id + lo })
    }

    /// Whether `name` is a bare segment name (24 upper-case hex digits): the only names whose
    /// meaning depends on the segment size.
    #[must_use]
    pub fn is_segment_name(name: &str) -> bool {
        name.len() == 24 && is_hex(name)
    }

    /// Parses a WAL file name that is not a bare segment (a timeline history file, a `.backup`
    /// or a `.partial` file), which needs no segment size: archiving and fetching them works
    /// before the size is known.
    ///
    /// # Errors
    /// Anything else, bare segment names included.
    pub fn parse_auxiliary(name: &str) -> Result<Self, String> {
        let err = || format!("{name:?} is not a WAL segment, history, .backup or .partial file name");
        let timeline = |s: &str| u32::from_str_radix(s, 16).map(Timeline).map_err(|_| err());
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() == 8 && is_hex(tli) {
                return Ok(WalFileName::History(timeline(tli)?));
            }
            return Err(err());
        }
        let (Some(base), Some(rest)) = (name.get(..24), name.get(24..)) else {
            return Err(err());
        };
        if !is_hex(base) {
            return Err(err());
        }
        let backup_suffix = rest
            .strip_prefix('.')
            .and_then(|r| r.strip_suffix(".backup"))
            .is_some_and(|off| off.len() == 8 && is_hex(off));
        if rest == ".partial" || backup_suffix {
            return Ok(WalFileName::Other { timeline: timeline(&base[..8])?, name: name.to_owned() });
        }
        Err(err())
    }

    /// The segment file holding `lsn` on `timeline`.
    #[must_use]
    pub fn segment_for(timeline: Timeline, lsn: Lsn, segment_size: SegmentSize) -> Self {
        WalFileName::Segment { timeline, number: lsn.segment_no(segment_size) }
    }

    /// Timeline of the file.
    #[must_use]
    pub fn timeline(&self) -> Timeline {
        match self {
            WalFileName::Segment { timeline, .. } | WalFileName::Other { timeline, .. } => *timeline,
            WalFileName::History(t) => *t,
        }
    }

    /// File name as PostgreSQL spells it.
    #[must_use]
    pub fn to_name(&self, segment_size: SegmentSize) -> String {
        match self {
            WalFileName::Segment { timeline, number } => {
                let per_id = segment_size.segments_per_id();
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

    /// Display and FromStr are inverses for the WAL newtypes (over several values each).
    #[test]
    fn newtypes_round_trip() {
        for t in [0, 1, 2, 0xA, 0xFF, 0x1234_ABCD, u32::MAX] {
            let spelled = Timeline(t).to_string();
            assert_eq!(spelled.parse::<Timeline>(), Ok(Timeline(t)), "{spelled}");
        }
        for junk in ["", "1", "0000001", "000000001", "0000000G", "+0000001"] {
            assert!(junk.parse::<Timeline>().is_err(), "{junk:?}");
        }
        for shift in 20..=30 {
            let size = SegmentSize::from_bytes(1 << shift).unwrap();
            assert_eq!(size.to_string().parse::<SegmentSize>(), Ok(size), "{size}");
        }
        for lsn in [0, 1, 0x3000028, 0x1_0000_0000, u64::MAX] {
            assert_eq!(Lsn(lsn).to_string().parse::<Lsn>(), Ok(Lsn(lsn)));
        }
    }

    #[test]
    fn lsn_round_trip() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("nope".parse::<Lsn>().is_err());
    }

    #[test]
    fn wal_names() {
        let s = SegmentSize::DEFAULT;
        let n = WalFileName::parse("000000010000000A000000FE", s).unwrap();
        assert_eq!(n, WalFileName::Segment { timeline: Timeline(1), number: 0xA * 256 + 0xFE });
        assert_eq!(n.to_name(s), "000000010000000A000000FE");
        assert_eq!(WalFileName::parse("00000002.history", s).unwrap(), WalFileName::History(Timeline(2)));
        assert!(WalFileName::parse("000000010000000000000003.00000028.backup", s).is_ok());
        assert!(WalFileName::parse("000000010000000000000003.partial", s).is_ok());
        assert!(WalFileName::parse("../../etc/passwd", s).is_err());
        assert!(WalFileName::parse("000000010000000000000300", s).is_err());
        assert!(WalFileName::parse("00000001000000000000000é", s).is_err());
        assert!(WalFileName::parse_auxiliary("000000010000000000000003").is_err());
        assert!(WalFileName::parse_auxiliary("000000010000000000000003.partial").is_ok());
        let lsn: Lsn = "1/2000028".parse().unwrap();
        assert_eq!(WalFileName::segment_for(Timeline(1), lsn, s).to_name(s), "000000010000000100000002");
    }

    #[test]
    fn segment_sizes_validate_and_round_trip() {
        for text in ["1MB", "16MB", "64MB", "512MB", "1GB"] {
            let size: SegmentSize = text.parse().unwrap();
            assert_eq!(size.to_string(), text);
            assert_eq!(size.to_string().parse::<SegmentSize>().unwrap(), size);
            let json = serde_json::to_string(&size).unwrap();
            assert_eq!(json, size.bytes().to_string());
            assert_eq!(serde_json::from_str::<SegmentSize>(&json).unwrap(), size);
        }
        assert_eq!("16MiB".parse::<SegmentSize>().unwrap().bytes(), 16 << 20);
        assert_eq!("1048576".parse::<SegmentSize>().unwrap().bytes(), 1 << 20);
        for bad in ["0", "512kB", "2GB", "3MB", "24MB", "MB", "16XB", ""] {
            assert!(bad.parse::<SegmentSize>().is_err(), "{bad} accepted");
        }
        assert!(serde_json::from_str::<SegmentSize>("12345").is_err());
    }

    #[test]
    fn segment_file_size_comes_from_its_length_and_header() {
        let mut page = vec![0u8; SegmentSize::HEADER_LEN];
        page[XLP_INFO..XLP_INFO + 2].copy_from_slice(&XLP_LONG_HEADER.to_ne_bytes());
        page[XLP_SEG_SIZE..XLP_SEG_SIZE + 4].copy_from_slice(&(1u32 << 20).to_ne_bytes());
        page[XLP_XLOG_BLCKSZ..XLP_XLOG_BLCKSZ + 4].copy_from_slice(&8192u32.to_ne_bytes());
        assert_eq!(SegmentSize::of_segment_file(&page, 1 << 20).unwrap().bytes(), 1 << 20);
        let err = SegmentSize::of_segment_file(&page, 16 << 20).unwrap_err();
        assert!(err.contains("page header says 1MB"), "{err}");
        assert!(SegmentSize::of_segment_file(&page, 12345).is_err());
        // No long header (or not a WAL page at all): the length decides.
        assert_eq!(SegmentSize::of_segment_file(&[7u8; 40], 16 << 20).unwrap(), SegmentSize::DEFAULT);
        assert_eq!(SegmentSize::of_segment_file(&[], 64 << 20).unwrap().bytes(), 64 << 20);
    }

    #[test]
    fn names_depend_on_the_segment_size() {
        let mb1 = SegmentSize::from_bytes(1 << 20).unwrap();
        let mb64 = SegmentSize::from_bytes(64 << 20).unwrap();
        assert_eq!(mb1.segments_per_id(), 4096);
        assert_eq!(mb64.segments_per_id(), 64);
        // 1 MiB: segment 0x100 is valid, and 0xFFF is the last of a log id.
        let n = WalFileName::parse("000000010000000000000100", mb1).unwrap();
        assert_eq!(n, WalFileName::Segment { timeline: Timeline(1), number: 0x100 });
        assert_eq!(
            WalFileName::Segment { timeline: Timeline(1), number: 4096 }.to_name(mb1),
            "000000010000000100000000"
        );
        assert!(WalFileName::parse("000000010000000000001000", mb1).is_err());
        let lsn: Lsn = "1/2345678".parse().unwrap();
        assert_eq!(WalFileName::segment_for(Timeline(1), lsn, mb1).to_name(mb1), "000000010000000100000023");
        // 64 MiB: 0x40 segments per log id.
        assert!(WalFileName::parse("000000010000000000000040", mb64).is_err());
        assert_eq!(WalFileName::segment_for(Timeline(1), lsn, mb64).to_name(mb64), "000000010000000100000000");
    }
}
