//! WAL segments no server wrote, with the page headers PostgreSQL 15 would have given them, so
//! that wal-push (which checks every page header against the file's name) archives them.

use radd::pg::{SegmentSize, WalFileName};

/// Stamps the page headers of segment `name` on `data` (a whole segment: its length is the
/// segment size; 8 KiB pages): magic, long header on the first page, timeline and address from
/// the name, in native byte order. The bytes after each header are left as they are.
pub fn stamp_pages(data: &mut [u8], name: &str) {
    let size = SegmentSize::from_bytes(data.len() as u64).expect("a segment is a WAL segment size");
    let Ok(WalFileName::Segment { timeline, number }) = WalFileName::parse(name, size) else {
        panic!("{name} is not a segment name for {size} segments");
    };
    for (i, page) in data.chunks_mut(8192).enumerate() {
        let first = i == 0;
        page[..if first { 40 } else { 24 }].fill(0);
        page[..2].copy_from_slice(&0xD110u16.to_ne_bytes());
        page[2..4].copy_from_slice(&u16::from(first).wrapping_mul(2).to_ne_bytes());
        page[4..8].copy_from_slice(&timeline.0.to_ne_bytes());
        page[8..16].copy_from_slice(&(number * size.bytes() + i as u64 * 8192).to_ne_bytes());
        if first {
            page[32..36].copy_from_slice(&u32::try_from(size.bytes()).expect("segment size").to_ne_bytes());
            page[36..40].copy_from_slice(&8192u32.to_ne_bytes());
        }
    }
}

/// `data` with the page headers of segment `name` stamped on it.
pub fn segment(mut data: Vec<u8>, name: &str) -> Vec<u8> {
    stamp_pages(&mut data, name);
    data
}
