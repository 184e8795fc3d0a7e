//! Single-core throughput of each backup stage on a file (default: synthetic data that
//! compresses about 3x): SHA-256 (SHA extensions are used when the CPU has them), keyed ids
//! (HMAC-SHA256), zstd at levels 1 and 3, and age encryption of the compressed stream.
//!   cargo run --release --example throughput [FILE]
//! This is the floor the parallel pipeline divides across cores.

use std::time::Instant;

use radd::crypto::{Digest, IdKey, Identity};

fn main() -> anyhow::Result<()> {
    let data = match std::env::args().nth(1) {
        Some(path) => std::fs::read(path)?,
        None => (0..256u32 << 20)
            .map(|i| if (i / 64) % 3 == 0 { (i.wrapping_mul(2_654_435_761) >> 13) as u8 } else { (i % 251) as u8 })
            .collect(),
    };
    let mb = data.len() as f64 / 1e6;
    let rate = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        println!("{name:<28} {:>8.0} MB/s", mb / t.elapsed().as_secs_f64());
    };
    println!("{:.0} MB; sha_ni detected: {}", mb, std::arch::is_x86_feature_detected!("sha"));
    rate("sha256", &mut || {
        std::hint::black_box(Digest::sha256(&data));
    });
    let key = IdKey::generate();
    rate("hmac-sha256 (64 KiB blocks)", &mut || {
        for block in data.chunks(64 << 10) {
            std::hint::black_box(key.digest(block));
        }
    });
    let mut compressed = Vec::new();
    for level in [1, 3] {
        rate(&format!("zstd level {level}"), &mut || compressed = zstd::bulk::compress(&data, level).expect("zstd"));
        println!("{:<28} {:>8.2}x", format!("  ratio at level {level}"), data.len() as f64 / compressed.len() as f64);
    }
    let recipients = Identity::generate().recipients();
    let t = Instant::now();
    std::hint::black_box(recipients.encrypt(&data)?);
    println!("{:<28} {:>8.0} MB/s", "age (ChaCha20-Poly1305)", mb / t.elapsed().as_secs_f64());
    Ok(())
}
