//! The end of the archive as one restore sees it. `radd restore --allow-gap` accepts losing the
//! WAL from a gap on, and writes `wal-fetch --end-before <first missing segment>` into the
//! restored cluster's `restore_command`: from that segment on, wal-fetch answers "not in the
//! archive", so PostgreSQL ends recovery before the gap and promotes — instead of wal-fetch's
//! normal answer at a gap, which makes recovery abort (later WAL exists, so stopping there would
//! otherwise be silent data loss).

use std::path::Path;

/// Whether `name` (a WAL file name from PostgreSQL) is `end_before` or a later segment (or
/// partial segment) of the same timeline. History files and other timelines are never past it.
#[must_use]
pub fn is_past_end(name: &str, end_before: &str) -> bool {
    let segment = |n: &str| n.len() >= 24 && n.as_bytes()[..24].iter().all(u8::is_ascii_hexdigit);
    segment(name)
        && end_before.len() == 24
        && segment(end_before)
        && name[..8] == end_before[..8]
        && name[..24] >= *end_before
}

/// Empties the prefetch spool beside `dest`: segments prefetched past the end must not linger
/// in the restored cluster's `pg_wal`.
pub fn drop_spool(dest: &Path) {
    let spool = super::spool_dir(dest);
    super::clean_spool(&spool, |_| true);
    let _ = std::fs::remove_dir(&spool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_and_later_segments_of_its_timeline_are_past_the_end() {
        let end = "000000010000000000000007";
        assert!(is_past_end(end, end));
        assert!(is_past_end("000000010000000100000000", end));
        assert!(is_past_end("000000010000000000000008.partial", end));
        assert!(!is_past_end("000000010000000000000006", end));
        assert!(!is_past_end("000000020000000000000009", end));
        assert!(!is_past_end("00000002.history", end));
    }
}
