//! One stored object: a small plaintext header followed by an age ciphertext of the zstd-
//! compressed payload.
//!
//! ```text
//! magic       (8 bytes) "RADDOBJ1" | "RADDOBJ2" | "RADDOBJ3"
//! digest      (32 bytes) keyed, by version:
//!               1: the repository's id hash (id key, kind ‖ plaintext)     packs (id = digest)
//!               2: BLAKE3-keyed(derived key, kind ‖ plaintext)             WAL written before v3
//!               3: BLAKE3-keyed(derived key 3, kind ‖ len(key) u64 LE ‖ key ‖ plaintext)
//!                  key = the object's repository key (`wal/00000001/…`)     WAL, manifests
//!             lets a writer without the age identity decide "same content?" (idempotent
//!             wal-push) and leaks nothing unkeyed; version 3 also fails for an object moved or
//!             copied to another name
//! age(        kind (1 byte) ‖ plaintext length (u64 LE) ‖ zstd(plaintext) )
//! ```
//! The versions differ only in the digest (see [`Version`]); all of them open everywhere.
//! [`seal_stream`] (WAL) and [`seal_at`] (manifests) write version 3, [`seal`] (packs, whose id
//! is the digest and so is not known before it) version 1. Opening checks magic, decrypts (age
//! authenticates), checks kind and length, and recomputes the keyed digest for the key the
//! object was read from, so a returned payload is exactly what was sealed under that name. A
//! ciphertext that does not authenticate is [`Error::Corrupt`]; only an identity that matches no
//! recipient is a key problem ([`Error::Crypto`]). Knows crypto and zstd; not where the bytes are
//! stored or what they mean.
//!
//! Two parts: `object` is the format — header, versions, sealing and opening a whole object
//! in memory, the errors; `stream` seals a large plaintext (WAL) in 1 MiB blocks on several
//! threads without holding it whole. Every item is re-exported here, so callers name
//! `codec::X` whichever part it lives in.

mod object;
mod stream;
mod version;

pub use object::{
    Error, HEADER_LEN, ObjectKind, open, open_into, open_unhashed, open_unhashed_into, rewrap, seal, seal_at,
    seal_blob_table, seal_with_digest,
};
pub use stream::{SealKeys, SealOptions, digest_stream, read_full, seal_stream};
pub use version::{Version, blob_table_digest, content_digest, header, header_digest};

#[cfg(test)]
mod tests;
