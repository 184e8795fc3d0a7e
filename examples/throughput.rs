//! Single-core throughput of each backup stage on a file (default: synthetic data that
//! compresses about 3x): SHA-256 (SHA extensions are used when the CPU has them), keyed ids
//! (HMAC-SHA256 of format 1, keyed BLAKE3 of format 2), zstd at levels 1 and 3, zstd-1
//! decompression, and age encryption (ChaCha20-Poly1305 AEAD) of the compressed stream.
//!   cargo run --release --example throughput [FILE]
//! This is the floor the parallel pipeline divides across cores: `bench/compare-pgbackrest.sh`
//! reads the first word and the MB/s figure of each rate line (`<key> <MB/s> MB/s`).

use std::io::Write;
use std::time::Instant;

use radd::crypto::{Digest, IdKey, Identity, KeyedHash};

fn main() -> anyhow::Result<()> {
    let data = match std::env::args().nth(1) {
        Some(path) => std::fs::read(path)?,
        None => (0..256u32 << 20)
            .map(|i| if (i / 64) % 3 == 0 { (i.wrapping_mul(2_654_435_761) >> 13) as u8 } else { (i % 251) as u8 })
            .collect(),
    };
    let mb = data.len() as f64 / 1e6;
    let rate = |name: &str, bytes: f64, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        println!("{name:<16} {:>8.0} MB/s", bytes / t.elapsed().as_secs_f64());
    };
    println!("# {:.0} MB; sha_ni detected: {}", mb, std::arch::is_x86_feature_detected!("sha"));
    rate("sha256", mb, &mut || {
        std::hint::black_box(Digest::sha256(&data));
    });
    rate("crc32c", mb, &mut || {
        std::hint::black_box(crc32c::crc32c(&data));
    });
    let key = IdKey::generate(KeyedHash::HmacSha256);
    rate("hmac-sha256", mb, &mut || {
        for block in data.chunks(64 << 10) {
            std::hint::black_box(radd::repo::BlobId::of(&key, block));
        }
    });
    let key = IdKey::generate(KeyedHash::Blake3PerPurpose);
    rate("blake3-keyed", mb, &mut || {
        for block in data.chunks(8 << 10) {
            std::hint::black_box(radd::repo::BlobId::of(&key, block));
        }
    });
    // zstd as radd runs it: one frame per pack-sized piece, reused contexts and buffers (one
    // frame of the whole sample would time page faults of a sample-sized output instead).
    const PIECE: usize = 4 << 20;
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(PIECE));
    for level in [1, 3] {
        let mut compressor = zstd::bulk::Compressor::new(level)?;
        let mut total = 0usize;
        rate(&format!("zstd-{level}"), mb, &mut || {
            total = 0;
            for piece in data.chunks(PIECE) {
                total += compressor.compress_to_buffer(piece, &mut frame).expect("zstd");
            }
        });
        println!("# ratio at level {level}: {:.2}x", data.len() as f64 / total.max(1) as f64);
    }
    let mut compressor = zstd::bulk::Compressor::new(1)?;
    let frames: Vec<Vec<u8>> = data.chunks(PIECE).map(|piece| compressor.compress(piece)).collect::<Result<_, _>>()?;
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    let mut plain = Vec::with_capacity(PIECE);
    rate("unzstd-1", mb, &mut || {
        for frame in &frames {
            decompressor.decompress_to_buffer(frame, &mut plain).expect("zstd");
            std::hint::black_box(&plain);
        }
    });
    // The AEAD's rate does not depend on the content: per byte it encrypts. Pack-sized pieces
    // into one reused output, as radd writes them (one output the size of the sample would
    // time its page faults: 300 instead of 650 MB/s in one run).
    let recipients = Identity::generate().recipients();
    let mut sealed = Vec::with_capacity(PIECE + PIECE / 1024 + 4096);
    rate("age", mb, &mut || {
        for piece in data.chunks(PIECE) {
            sealed.clear();
            let mut writer = recipients.encrypting_writer(&mut sealed).expect("age");
            writer.write_all(piece).expect("age");
            writer.finish().expect("age");
            std::hint::black_box(&sealed);
        }
    });
    Ok(())
}
