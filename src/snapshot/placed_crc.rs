//! The CRC-32C of a file assembled from pieces that arrive in any order.
//!
//! A restore writes blobs pack by pack, so a file's bytes arrive out of order; reading each
//! file back to checksum it costs a second copy of every byte out of the page cache. CRC is
//! linear over GF(2) instead: without its initial value and final inversion, the CRC of a
//! message is the XOR of the CRCs of its pieces, each first moved to where the piece ends (a
//! multiplication by x^(8·bytes after it) modulo the polynomial, as zlib's `crc32_combine`
//! does). Bytes no piece covers count as zeros: the holes of a file created at its full size.

/// CRC-32C's polynomial, bit-reflected (as the crc32c crate and the hardware use it).
const POLY: u32 = 0x82F6_3B78;

/// `a·b` modulo the polynomial, both reflected (bit 31 is x^0).
const fn multiply(a: u32, mut b: u32) -> u32 {
    let (mut m, mut product) = (1u32 << 31, 0u32);
    while m != 0 {
        if a & m != 0 {
            product ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    product
}

/// `x^(2^k)` modulo the polynomial, for k = 0..64.
const POWERS: [u32; 64] = {
    let mut table = [0u32; 64];
    table[0] = 1 << 30; // x^1
    let mut k = 1;
    while k < 64 {
        table[k] = multiply(table[k - 1], table[k - 1]);
        k += 1;
    }
    table
};

/// `crc` moved past `bytes` zero bytes: the raw CRC (no initial value, no final inversion)
/// of a message followed by that many zeros, given the raw CRC of the message.
#[must_use]
fn shift(crc: u32, bytes: u64) -> u32 {
    // x^(8·bytes) = product of x^(2^k) over the set bits of 8·bytes (k from 3).
    let (mut power, mut n, mut k) = (1u32 << 31, bytes, 3usize);
    while n != 0 {
        if n & 1 != 0 {
            power = multiply(POWERS[k % 64], power);
        }
        n >>= 1;
        k += 1;
    }
    multiply(power, crc)
}

/// The CRC-32C of `a` followed by `b`, from the CRC-32C of each (`crc_a`, `crc_b`) and the
/// length of `b`: what `crc32c::crc32c_combine` computes, without its 32×32 bit-matrix
/// squarings (~50 µs a call; a backup combines one per MiB read).
#[must_use]
pub fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    // The initial value and the final inversion cancel out between the two.
    shift(crc_a, len_b) ^ crc_b
}

/// Accumulates the CRC-32C of a file of `length` bytes from pieces added in any order (see
/// the module docs). Pieces must not overlap; bytes never added are zeros.
#[derive(Debug, Clone, Copy)]
pub struct PlacedCrc {
    length: u64,
    raw: u32,
}

impl PlacedCrc {
    /// An empty file of `length` bytes (all zeros until pieces are added).
    #[must_use]
    pub fn new(length: u64) -> Self {
        Self { length, raw: 0 }
    }

    /// Adds the bytes at `offset`.
    pub fn add(&mut self, offset: u64, bytes: &[u8]) {
        // crc32c_append inverts before and after: starting from !0 leaves the raw CRC inverted.
        let raw = !crc32c::crc32c_append(u32::MAX, bytes);
        let after = self.length.saturating_sub(offset.saturating_add(bytes.len() as u64));
        self.raw ^= shift(raw, after);
    }

    /// The CRC-32C of the whole file, as [`crate::snapshot::FileSummer`] computes it front to back.
    #[must_use]
    pub fn finish(&self) -> u32 {
        // The initial value !0, moved across the whole file, then the final inversion.
        !(shift(u32::MAX, self.length) ^ self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_is_the_crc_of_the_concatenation() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 253) as u8).collect();
        for split in [0, 1, 4095, 8192, 19_999, 20_000] {
            let (a, b) = data.split_at(split);
            let combined = combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64);
            assert_eq!(combined, crc32c::crc32c(&data), "split at {split}");
        }
    }

    #[test]
    fn shift_is_crc32c_combine_with_zeros() {
        for (crc, n) in [(0x1234_5678u32, 1u64), (0xdead_beef, 8192), (u32::MAX, 1 << 30), (7, 3_000_000_017)] {
            assert_eq!(shift(crc, n), crc32c::crc32c_combine(crc, 0, usize::try_from(n).unwrap()), "{crc:x} {n}");
        }
        assert_eq!(shift(0xabcd, 0), 0xabcd);
    }

    #[test]
    fn pieces_in_any_order_with_holes_give_the_files_crc() {
        let mut file = vec![0u8; 100_000];
        let mut seed = 0x9e37_79b9_u32;
        let mut pieces = Vec::new();
        let mut at = 0usize;
        while at < file.len() {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let len = (seed as usize % 9000 + 1).min(file.len() - at);
            // Every third piece is a hole: never added, zeros in the file.
            if !seed.is_multiple_of(3) {
                for (i, byte) in file[at..at + len].iter_mut().enumerate() {
                    *byte = (seed >> (i % 24)) as u8 | 1;
                }
                pieces.push(at..at + len);
            }
            at += len;
        }
        pieces.reverse();
        let middle = pieces.len() / 2;
        pieces.swap(0, middle);
        let mut placed = PlacedCrc::new(file.len() as u64);
        for piece in &pieces {
            placed.add(piece.start as u64, &file[piece.clone()]);
        }
        assert_eq!(placed.finish(), crc32c::crc32c(&file));
        assert_eq!(PlacedCrc::new(0).finish(), crc32c::crc32c(b""));
        assert_eq!(PlacedCrc::new(8192).finish(), crc32c::crc32c(&[0u8; 8192]), "an all-hole file");
        // The same bytes with one piece written a byte too far (its last byte dropped).
        let mut moved = PlacedCrc::new(file.len() as u64);
        for (i, piece) in pieces.iter().enumerate() {
            let shifted = usize::from(i == 0);
            moved.add((piece.start + shifted) as u64, &file[piece.start..piece.end - shifted]);
        }
        assert_ne!(moved.finish(), crc32c::crc32c(&file), "a misplaced piece changes the sum");
    }
}
