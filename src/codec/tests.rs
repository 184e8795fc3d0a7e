//! Round trips of sealed and streamed objects, and what damage reads as.

use std::io::{Seek, SeekFrom, Write};

use super::stream::STREAM_BLOCK;
use super::*;
use crate::crypto::{IdKey, Identity};
use crate::error::ErrorKind;

#[test]
fn seal_open_round_trip_and_tamper_detection() {
    let key = IdKey::generate(crate::crypto::KeyedHash::Blake3PerPurpose);
    let id = Identity::generate();
    let (mut stored, digest) = seal(ObjectKind::Wal, b"segment", &key, &id.recipients(), 3, "w").unwrap();
    assert_eq!(header_digest(&stored, "w").unwrap(), digest);
    assert_eq!(open(ObjectKind::Wal, &stored, &key, &id, "w").unwrap(), b"segment");
    assert!(open(ObjectKind::Pack, &stored, &key, &id, "w").is_err());
    let last = stored.len() - 1;
    stored[last] ^= 1;
    assert!(open(ObjectKind::Wal, &stored, &key, &id, "w").is_err());
}

#[test]
fn streamed_seal_opens_like_a_sealed_object() {
    let key = IdKey::generate(crate::crypto::KeyedHash::Blake3PerPurpose);
    let id = Identity::generate();
    let recipients = id.recipients();
    let keys = SealKeys { id_key: &key, recipients: &recipients };
    // Several blocks and a partial last one, compressible and not.
    let mut plaintext = vec![5u8; STREAM_BLOCK * 5 + 123];
    for (i, b) in plaintext.iter_mut().enumerate().skip(STREAM_BLOCK) {
        *b = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) as u8;
    }
    for workers in [0, 1, 3] {
        let mut out = std::io::Cursor::new(Vec::new());
        let options = SealOptions { level: 1, workers };
        let digest =
            seal_stream(ObjectKind::Wal, &plaintext[..], plaintext.len() as u64, keys, options, &mut out, "w").unwrap();
        let mut stored = out.into_inner();
        assert_eq!(digest, Version::V3.digest(&key, ObjectKind::Wal, "w", &plaintext));
        assert_eq!(header(&stored, "w").unwrap(), (Version::V3, digest));
        assert_eq!(open(ObjectKind::Wal, &stored, &key, &id, "w").unwrap(), plaintext);
        let streamed =
            digest_stream(ObjectKind::Wal, Version::V3, &plaintext[..], plaintext.len() as u64, &key, "w").unwrap();
        assert_eq!(streamed, digest);
        let rewrapped = rewrap(ObjectKind::Wal, &stored, &key, &id, &id.recipients(), "w").unwrap();
        assert_eq!(open(ObjectKind::Wal, &rewrapped, &key, &id, "w").unwrap(), plaintext);
        // The digest is checked: a wrong one (or a version 1 magic on it) fails to open.
        stored[..8].copy_from_slice(Version::V1.magic());
        assert!(matches!(open(ObjectKind::Wal, &stored, &key, &id, "w"), Err(Error::Corrupt { .. })));
    }
    // An empty file seals and opens too.
    let mut out = std::io::Cursor::new(Vec::new());
    seal_stream(ObjectKind::Wal, &b""[..], 0, keys, SealOptions { level: 1, workers: 2 }, &mut out, "w").unwrap();
    assert_eq!(open(ObjectKind::Wal, &out.into_inner(), &key, &id, "w").unwrap(), b"");
    // A file that is shorter or longer than announced is refused, not sealed.
    let mut out = std::io::Cursor::new(Vec::new());
    let options = SealOptions { level: 1, workers: 0 };
    assert!(seal_stream(ObjectKind::Wal, &plaintext[..], 100, keys, options, &mut out, "w").is_err());
    assert!(seal_stream(ObjectKind::Wal, &plaintext[..10], 100, keys, options, &mut out, "w").is_err());
}

#[test]
fn damaged_ciphertext_is_corruption_and_only_a_foreign_identity_is_a_key_problem() {
    let key = IdKey::generate(crate::crypto::KeyedHash::Blake3PerPurpose);
    let id = Identity::generate();
    let name = "wal/00000001/000000010000000000000001";
    let plaintext: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (stored, _) = seal_at(ObjectKind::Wal, &plaintext, &key, &id.recipients(), 1, name).unwrap();
    // A byte of the age header (its MAC line), of the first payload chunk, of a later one.
    let mac = HEADER_LEN + stored[HEADER_LEN..].windows(4).position(|w| w == b"\n---").unwrap() + 5;
    // The MAC is 43 base64 characters and a newline, then a 16-byte nonce and the payload.
    for at in [mac + 3, mac + 44 + 16 + 100, stored.len() - 100] {
        let mut damaged = stored.clone();
        damaged[at] ^= 0x20;
        let err = open(ObjectKind::Wal, &damaged, &key, &id, name).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "byte {at}: {err}");
        assert_eq!(err.kind(), ErrorKind::Integrity);
        let message = err.to_string();
        assert!(
            message.contains("is corrupt") && message.contains(name) && !message.contains("identity"),
            "byte {at}: {message}"
        );
    }
    let err = open(ObjectKind::Wal, &stored, &key, &Identity::generate(), name).unwrap_err();
    assert!(matches!(err, Error::Crypto { source: crate::crypto::Error::Decrypt(_), .. }), "{err}");
    assert!(err.to_string().contains("identity"), "{err}");
}

/// Takes `room` bytes, then fails as a full disk does.
struct Full {
    room: usize,
    data: Vec<u8>,
}

impl Write for Full {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.data.len() + buf.len() > self.room {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Full {
    fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
        Ok(0)
    }
}

#[test]
fn a_streamed_seal_reports_the_full_output_not_the_stages_it_stopped() {
    let (key, id) = (IdKey::generate(crate::crypto::KeyedHash::Blake3PerPurpose), Identity::generate());
    let recipients = id.recipients();
    let keys = SealKeys { id_key: &key, recipients: &recipients };
    let plaintext: Vec<u8> =
        (0..STREAM_BLOCK * 8).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23) as u8).collect();
    let mut out = Full { room: 4096, data: Vec::new() };
    let options = SealOptions { level: 1, workers: 2 };
    let error =
        seal_stream(ObjectKind::Wal, &plaintext[..], plaintext.len() as u64, keys, options, &mut out, "wal/1/x")
            .expect_err("the output is full");
    assert!(matches!(&error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull), "{error}");
}
