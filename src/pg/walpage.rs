//! A WAL file's page headers against the name it is archived under.
//!
//! PostgreSQL starts every WAL page (`XLOG_BLCKSZ`, normally 8 KiB) with a header: a magic (the
//! WAL format of the server version), flags, the timeline of the page's first record and the
//! page's own WAL address; the first page of a segment has the long header, which adds the
//! system id, the segment size and the page size. So a segment's content says which position in
//! the WAL it holds, and a segment moved or copied to another name is told apart from the right
//! one without any key. This matters because recovery reads a segment of the wrong position as
//! "unexpected pageaddr", takes that for the end of WAL and promotes with whatever it replayed.
//!
//! The rules ([`PageCheck`]), from PostgreSQL's own reader (`XLogReaderValidatePageHeader`):
//! - the first page has a known magic, the long header, the address where the name's segment
//!   starts (number × segment size), the cluster's segment size and a possible page size;
//! - every later page has the same magic and its own address (start + index × page size), or is
//!   all zeros in its header: since PostgreSQL 14 the pages after a WAL switch are zeroed;
//! - a page's timeline is never later than the name's and never earlier than the page before:
//!   the first segment of a new timeline starts with its parent's pages (copied at promotion),
//!   so "equal to the name's" would refuse every timeline switch.
//!
//! A `.partial` file is checked on its first page only: past the switch point it may hold stale
//! pages of a recycled segment. History and `.backup` files have no pages. Headers are read in
//! native byte order, as the server on this host writes them.

use std::fmt;

use super::wal::{Lsn, SegmentSize, Timeline, WalFileName, XLP_INFO, XLP_LONG_HEADER, XLP_SEG_SIZE, XLP_XLOG_BLCKSZ};

/// `XLOG_PAGE_MAGIC` of the PostgreSQL versions radd knows (`src/include/access/xlog_internal.h`):
/// 15 `0xD110`, 16 `0xD113`, 17 `0xD116`, 18 `0xD118`. A new major version changes it; add it
/// here once radd is tested with that version.
pub const KNOWN_MAGICS: [(u16, u32); 4] = [(0xD110, 15), (0xD113, 16), (0xD116, 17), (0xD118, 18)];

/// Bytes of the short page header (`SizeOfXLogShortPHD`: magic, info, timeline, address,
/// remaining length, padded to 8).
const SHORT_HEADER: usize = 24;
/// Bytes of the long header read: up to and including `xlp_xlog_blcksz`.
const LONG_HEADER: usize = 40;
const XLP_TLI: usize = 4;
const XLP_PAGEADDR: usize = 8;

/// How much of a file to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageScope {
    /// Every page, and the length: a complete segment.
    Every,
    /// The first page only: a `.partial` file.
    First,
}

/// A page header that contradicts the file's name: what was found, where, and what the name
/// implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMismatch {
    /// Byte offset of the page (or of the end, for a length problem).
    pub offset: u64,
    /// What does not match.
    pub reason: String,
}

impl fmt::Display for PageMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for PageMismatch {}

/// Checks a WAL file's page headers against its name, fed in pieces of any size (a file
/// streamed block by block) or whole; see the module doc for the rules. Costs a few
/// comparisons per page: nothing next to reading the bytes.
#[derive(Debug, Clone)]
pub struct PageCheck {
    timeline: Timeline,
    start: u64,
    size: SegmentSize,
    scope: PageScope,
    /// Bytes fed so far.
    offset: u64,
    /// Offset of the next header to check (`u64::MAX`: none).
    next: u64,
    head: [u8; LONG_HEADER],
    have: usize,
    /// From the first page: its magic and page size.
    magic: u16,
    block: u64,
    last_tli: u32,
}

impl PageCheck {
    /// A check of segment `number` on `timeline` in a cluster of `size` segments.
    #[must_use]
    pub fn new(timeline: Timeline, number: u64, size: SegmentSize, scope: PageScope) -> Self {
        PageCheck {
            timeline,
            start: number.saturating_mul(size.bytes()),
            size,
            scope,
            offset: 0,
            next: 0,
            head: [0; LONG_HEADER],
            have: 0,
            magic: 0,
            block: 0,
            last_tli: 0,
        }
    }

    /// The check for the WAL file `name`: every page of a segment, the first page of a
    /// `.partial` file; `None` for files without pages (history, `.backup`).
    #[must_use]
    pub fn for_file(name: &WalFileName, size: SegmentSize) -> Option<Self> {
        match name {
            WalFileName::Segment { timeline, number } => Some(Self::new(*timeline, *number, size, PageScope::Every)),
            WalFileName::Other { name, .. } => {
                let base = name.strip_suffix(".partial")?;
                match WalFileName::parse(base, size).ok()? {
                    WalFileName::Segment { timeline, number } => {
                        Some(Self::new(timeline, number, size, PageScope::First))
                    }
                    _ => None,
                }
            }
            WalFileName::History(_) => None,
        }
    }

    /// Feeds the next `data` of the file.
    ///
    /// # Errors
    /// The first header that contradicts the name.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), PageMismatch> {
        while !data.is_empty() {
            if self.offset < self.next {
                let skip = usize::try_from(self.next - self.offset).unwrap_or(usize::MAX).min(data.len());
                data = &data[skip..];
                self.offset += skip as u64;
                continue;
            }
            let want = if self.next == 0 { LONG_HEADER } else { SHORT_HEADER };
            let take = (want - self.have).min(data.len());
            self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
            (self.have, self.offset, data) = (self.have + take, self.offset + take as u64, &data[take..]);
            if self.have == want {
                self.check_page()?;
                self.have = 0;
                self.next = match (self.scope, self.next + self.block) {
                    (PageScope::Every, next) if next < self.size.bytes() => next,
                    _ => u64::MAX,
                };
            }
        }
        Ok(())
    }

    /// Ends the check once the whole file was fed.
    ///
    /// # Errors
    /// A file too short to hold its first page header, or a segment of another length than
    /// the cluster's segments.
    pub fn finish(&self) -> Result<(), PageMismatch> {
        if self.block == 0 {
            return Err(PageMismatch {
                offset: self.offset,
                reason: format!("it is {} bytes, too short for a WAL page header", self.offset),
            });
        }
        if self.scope == PageScope::Every && self.offset != self.size.bytes() {
            return Err(PageMismatch {
                offset: self.offset,
                reason: format!(
                    "it is {} bytes, but this cluster's segments are {} ({} bytes)",
                    self.offset,
                    self.size,
                    self.size.bytes()
                ),
            });
        }
        Ok(())
    }

    fn check_page(&mut self) -> Result<(), PageMismatch> {
        let at = self.next;
        let h = &self.head;
        let mismatch = |reason: String| Err(PageMismatch { offset: at, reason });
        let magic = u16::from_ne_bytes([h[0], h[1]]);
        let info = u16::from_ne_bytes([h[XLP_INFO], h[XLP_INFO + 1]]);
        let tli = u32::from_ne_bytes([h[XLP_TLI], h[XLP_TLI + 1], h[XLP_TLI + 2], h[XLP_TLI + 3]]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&h[XLP_PAGEADDR..XLP_PAGEADDR + 8]);
        let (pageaddr, expected) = (u64::from_ne_bytes(addr), self.start + at);
        if at == 0 {
            let field = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            let Some(&(_, version)) = KNOWN_MAGICS.iter().find(|(m, _)| *m == magic) else {
                return mismatch(format!(
                    "its first page has magic 0x{magic:04X}, which is not the WAL page magic of PostgreSQL 15 to 18 (0xD110, 0xD113, 0xD116, 0xD118): not a WAL segment, or damaged"
                ));
            };
            if info & XLP_LONG_HEADER == 0 {
                return mismatch(format!(
                    "its first page has no long page header (xlp_info 0x{info:04X}): it is not the start of a segment"
                ));
            }
            let (seg_size, block) = (u64::from(field(XLP_SEG_SIZE)), u64::from(field(XLP_XLOG_BLCKSZ)));
            if seg_size != self.size.bytes() {
                return mismatch(format!(
                    "its long page header says {seg_size}-byte segments, but this cluster's are {} ({} bytes)",
                    self.size,
                    self.size.bytes()
                ));
            }
            if !block.is_power_of_two() || !(1024..=65536).contains(&block) || seg_size % block != 0 {
                return mismatch(format!(
                    "its long page header says {block}-byte WAL pages, which PostgreSQL {version} cannot write (a power of two from 1 to 64 KiB)"
                ));
            }
            (self.magic, self.block) = (magic, block);
        } else if h[..SHORT_HEADER].iter().all(|&b| b == 0) {
            // An unused page after a WAL switch: zeroed, header included.
            return Ok(());
        } else if magic != self.magic {
            return mismatch(format!(
                "its page at offset {at} has magic 0x{magic:04X}, the first page 0x{:04X}: pages of different WAL",
                self.magic
            ));
        }
        if pageaddr != expected {
            let page = if at == 0 { "its first page".to_owned() } else { format!("its page at offset {at}") };
            return mismatch(format!(
                "{page} holds WAL position {}, but the name says {}: it is another segment's WAL, moved or copied to this name",
                Lsn(pageaddr),
                Lsn(expected)
            ));
        }
        if tli > self.timeline.0 {
            return mismatch(format!(
                "its page at offset {at} is WAL of timeline {}, later than the name's timeline {}",
                Timeline(tli),
                self.timeline
            ));
        }
        if tli < self.last_tli {
            return mismatch(format!(
                "its page at offset {at} is WAL of timeline {}, earlier than the page before it ({})",
                Timeline(tli),
                Timeline(self.last_tli)
            ));
        }
        self.last_tli = tli;
        Ok(())
    }
}

/// Checks a whole WAL file `name` (of a cluster with `size` segments) in one go; files without
/// pages pass.
///
/// # Errors
/// The first header that contradicts the name, or a segment of the wrong length.
pub fn check_pages(name: &WalFileName, size: SegmentSize, content: &[u8]) -> Result<(), PageMismatch> {
    let Some(mut check) = PageCheck::for_file(name, size) else { return Ok(()) };
    check.update(content)?;
    check.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB1: u64 = 1 << 20;

    /// A segment of `size` bytes as PostgreSQL 15 writes it: `number` on timeline `tli`, 8 KiB
    /// pages, non-zero payload after each header.
    fn segment(tli: u32, number: u64, size: u64) -> Vec<u8> {
        let mut data = vec![0x5Au8; usize::try_from(size).unwrap()];
        for (i, page) in data.chunks_mut(8192).enumerate() {
            page[..SHORT_HEADER].fill(0);
            page[..2].copy_from_slice(&0xD110u16.to_ne_bytes());
            let info: u16 = if i == 0 { XLP_LONG_HEADER } else { 0 };
            page[XLP_INFO..XLP_INFO + 2].copy_from_slice(&info.to_ne_bytes());
            page[XLP_TLI..XLP_TLI + 4].copy_from_slice(&tli.to_ne_bytes());
            let addr = number * size + i as u64 * 8192;
            page[XLP_PAGEADDR..XLP_PAGEADDR + 8].copy_from_slice(&addr.to_ne_bytes());
            if i == 0 {
                page[SHORT_HEADER..LONG_HEADER].fill(0);
                page[XLP_SEG_SIZE..XLP_SEG_SIZE + 4].copy_from_slice(&u32::try_from(size).unwrap().to_ne_bytes());
                page[XLP_XLOG_BLCKSZ..XLP_XLOG_BLCKSZ + 4].copy_from_slice(&8192u32.to_ne_bytes());
            }
        }
        data
    }

    fn name(tli: u32, number: u64) -> WalFileName {
        WalFileName::Segment { timeline: Timeline(tli), number }
    }

    fn size() -> SegmentSize {
        SegmentSize::from_bytes(MB1).unwrap()
    }

    fn reason(result: Result<(), PageMismatch>) -> String {
        result.expect_err("mismatch expected").reason
    }

    #[test]
    fn a_segment_matches_its_own_name_whole_or_in_any_pieces() {
        let data = segment(1, 0x0B, MB1);
        check_pages(&name(1, 0x0B), size(), &data).unwrap();
        for piece in [1, 7, 24, 40, 4096, 8191, 8193, 100_000] {
            let mut check = PageCheck::for_file(&name(1, 0x0B), size()).unwrap();
            for part in data.chunks(piece) {
                check.update(part).unwrap();
            }
            check.finish().unwrap_or_else(|e| panic!("pieces of {piece}: {e}"));
        }
    }

    #[test]
    fn a_segment_under_another_name_is_refused_naming_both_positions() {
        let data = segment(1, 0x0C, MB1);
        let why = reason(check_pages(&name(1, 0x0B), size(), &data));
        assert!(why.contains("holds WAL position 0/C00000") && why.contains("the name says 0/B00000"), "{why}");
        // A later page alone moved (first pages equal): found at its offset.
        let mut spliced = segment(1, 0x0B, MB1);
        spliced[8192 * 5..8192 * 6].copy_from_slice(&data[8192 * 5..8192 * 6]);
        let err = check_pages(&name(1, 0x0B), size(), &spliced).unwrap_err();
        assert_eq!(err.offset, 8192 * 5, "{err}");
        // Another timeline's segment of the same position: later timeline refused.
        let why = reason(check_pages(&name(1, 0x0B), size(), &segment(2, 0x0B, MB1)));
        assert!(why.contains("timeline 00000002, later than the name's timeline 00000001"), "{why}");
    }

    #[test]
    fn a_new_timeline_may_start_with_its_parents_pages_and_zeroed_pages_pass() {
        // Promotion copies the parent's pages before the switch point into the new segment.
        let mut data = segment(1, 0x0B, MB1);
        let tli2 = segment(2, 0x0B, MB1);
        data[8192 * 10..].copy_from_slice(&tli2[8192 * 10..]);
        check_pages(&name(2, 0x0B), size(), &data).unwrap();
        // ... but never goes back to an earlier timeline.
        data[8192 * 20..8192 * 21].copy_from_slice(&segment(1, 0x0B, MB1)[8192 * 20..8192 * 21]);
        let why = reason(check_pages(&name(2, 0x0B), size(), &data));
        assert!(why.contains("earlier than the page before it"), "{why}");
        // After a WAL switch the rest of the segment is zero pages (PostgreSQL 14 and later).
        let mut switched = segment(1, 0x0B, MB1);
        switched[8192 * 3..].fill(0);
        check_pages(&name(1, 0x0B), size(), &switched).unwrap();
    }

    #[test]
    fn first_page_rules() {
        let good = segment(1, 3, MB1);
        let mut data = good.clone();
        data[..2].copy_from_slice(&0xD10Du16.to_ne_bytes());
        assert!(reason(check_pages(&name(1, 3), size(), &data)).contains("magic 0xD10D"));
        let mut data = good.clone();
        data[XLP_INFO..XLP_INFO + 2].copy_from_slice(&0u16.to_ne_bytes());
        assert!(reason(check_pages(&name(1, 3), size(), &data)).contains("no long page header"));
        let mut data = good.clone();
        data[XLP_XLOG_BLCKSZ..XLP_XLOG_BLCKSZ + 4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(reason(check_pages(&name(1, 3), size(), &data)).contains("1000-byte WAL pages"));
        // Another cluster's segment size.
        let sixteen = SegmentSize::DEFAULT;
        let why = reason(check_pages(&name(1, 3), sixteen, &good));
        assert!(why.contains("1048576-byte segments, but this cluster's are 16MB"), "{why}");
        // Noise, truncation, extra bytes.
        assert!(reason(check_pages(&name(1, 3), size(), &[0xA5; 4096])).contains("magic 0xA5A5"));
        assert!(reason(check_pages(&name(1, 3), size(), &good[..30])).contains("too short"));
        assert!(
            reason(check_pages(&name(1, 3), size(), &good[..MB1 as usize - 8192]))
                .contains("this cluster's segments are 1MB")
        );
        // Every known version's magic is accepted.
        for (magic, _) in KNOWN_MAGICS {
            let mut data = good.clone();
            for page in data.chunks_mut(8192) {
                page[..2].copy_from_slice(&magic.to_ne_bytes());
            }
            check_pages(&name(1, 3), size(), &data).unwrap();
        }
    }

    #[test]
    fn partial_files_are_checked_on_their_first_page_and_others_not_at_all() {
        let mut data = segment(1, 3, MB1);
        // Past the switch point: stale pages of a recycled segment.
        data[8192 * 4..].copy_from_slice(&segment(1, 1, MB1)[8192 * 4..]);
        let partial = WalFileName::parse_auxiliary("000000010000000000000003.partial").unwrap();
        check_pages(&partial, size(), &data).unwrap();
        let misnamed = WalFileName::parse_auxiliary("000000010000000000000004.partial").unwrap();
        assert!(reason(check_pages(&misnamed, size(), &data)).contains("the name says 0/400000"));
        for other in ["00000002.history", "000000010000000000000003.00000028.backup"] {
            let name = WalFileName::parse_auxiliary(other).unwrap();
            assert!(PageCheck::for_file(&name, size()).is_none());
            check_pages(&name, size(), b"anything").unwrap();
        }
    }
}
