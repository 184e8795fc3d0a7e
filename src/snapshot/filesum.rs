//! A file's whole-content checksum in the manifest.
//!
//! Formats 1 and 2 store SHA-256: a backup hashed every byte with SHA-256 besides the keyed
//! blob ids, and a restore trusted the SHA-256 alone. Format 3 stores CRC-32C instead (what
//! PostgreSQL's own backup manifests use; hardware-computed at many GB/s), because what a file
//! holds is already fixed cryptographically by its chunk ids, which the manifest lists and every
//! reader checks blob by blob. The CRC catches what the ids cannot see: bytes put in the wrong
//! place or not at all while a restore writes, and damage on disk afterwards (it is what the
//! restored `backup_manifest` gives `pg_verifybackup`).

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, Sha256Stream};

/// A file's checksum as its manifest stores it (`"sha256": "<hex>"` or `"crc32c": <n>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileSum {
    /// SHA-256 of the content (formats 1 and 2).
    #[serde(rename = "sha256")]
    Sha256(Digest),
    /// CRC-32C (Castagnoli) of the content (format 3).
    #[serde(rename = "crc32c")]
    Crc32c(u32),
}

impl FileSum {
    /// The algorithm's name in a PostgreSQL `backup_manifest` (`Checksum-Algorithm`).
    #[must_use]
    pub fn pg_algorithm(&self) -> &'static str {
        match self {
            FileSum::Sha256(_) => "SHA256",
            FileSum::Crc32c(_) => "CRC32C",
        }
    }

    /// The checksum as a PostgreSQL `backup_manifest` writes it: lower-case hex of the bytes
    /// its checksum code produces (for CRC-32C, the 32-bit value in the machine's byte order,
    /// which is little-endian on every platform radd runs on).
    #[must_use]
    pub fn pg_hex(&self) -> String {
        match self {
            FileSum::Sha256(digest) => digest.to_string(),
            FileSum::Crc32c(crc) => hex::encode(crc.to_le_bytes()),
        }
    }
}

impl std::fmt::Display for FileSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSum::Sha256(digest) => write!(f, "sha256:{digest}"),
            FileSum::Crc32c(crc) => write!(f, "crc32c:{crc:08x}"),
        }
    }
}

/// Computes a [`FileSum`] of content that arrives in pieces.
#[derive(Clone)]
pub enum FileSummer {
    /// SHA-256 so far.
    Sha256(Sha256Stream),
    /// CRC-32C so far.
    Crc32c(u32),
}

impl FileSummer {
    /// The checksum a repository of format `format` stores for new files.
    #[must_use]
    pub fn for_format(format: u32) -> Self {
        if format >= 3 { FileSummer::Crc32c(0) } else { FileSummer::Sha256(Sha256Stream::default()) }
    }

    /// A summer of the same algorithm as `expected` (to check a file against it).
    #[must_use]
    pub fn like(expected: &FileSum) -> Self {
        match expected {
            FileSum::Sha256(_) => FileSummer::Sha256(Sha256Stream::default()),
            FileSum::Crc32c(_) => FileSummer::Crc32c(0),
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            FileSummer::Sha256(sha) => sha.update(data),
            FileSummer::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, data),
        }
    }

    /// The checksum of everything fed.
    #[must_use]
    pub fn finish(self) -> FileSum {
        match self {
            FileSummer::Sha256(sha) => FileSum::Sha256(sha.finish()),
            FileSummer::Crc32c(crc) => FileSum::Crc32c(crc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli_and_incremental() {
        // The standard check value of CRC-32C.
        let mut summer = FileSummer::for_format(3);
        summer.update(b"1234");
        summer.update(b"56789");
        assert_eq!(summer.finish(), FileSum::Crc32c(0xe306_9283));
        let mut sha = FileSummer::for_format(2);
        sha.update(b"123456789");
        assert_eq!(sha.finish(), FileSum::Sha256(Digest::sha256(b"123456789")));
        assert_eq!(FileSum::Crc32c(0xe306_9283).pg_hex(), "839206e3");
    }

    #[test]
    fn manifest_encoding_is_one_named_field() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct File {
            #[serde(flatten)]
            sum: FileSum,
            size: u64,
        }
        let old = format!(r#"{{"sha256":"{}","size":3}}"#, Digest::sha256(b"abc"));
        let parsed: File = serde_json::from_str(&old).unwrap();
        assert_eq!(parsed.sum, FileSum::Sha256(Digest::sha256(b"abc")));
        assert_eq!(serde_json::to_string(&parsed).unwrap(), old);
        let new = File { sum: FileSum::Crc32c(7), size: 3 };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(text, r#"{"crc32c":7,"size":3}"#);
        assert_eq!(serde_json::from_str::<File>(&text).unwrap(), new);
    }
}
