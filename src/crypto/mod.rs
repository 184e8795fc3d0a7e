//! Keys and cryptographic primitives: age encryption to X25519 recipients, SHA-256, CRC-32C, and
//! keyed hashes under the repository's id key (one derived key per purpose in format 3; see
//! [`idkey`]).
//!
//! Keys are split by capability (as bupstash does): the archiving/backup host holds only
//! [`Recipients`] (public) and the [`IdKey`] (which decrypts nothing); only restore hosts hold an
//! [`Identity`]. This module knows nothing of PostgreSQL, object stores or the repository layout.

mod idkey;
mod keyfile;

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

pub use idkey::{IdKey, KeyedHash, KeyedStream, Purpose};
pub use keyfile::{check_key_file_mode, write_secret_file};

use crate::error::ErrorKind;

/// Errors from key handling and age encryption.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file is readable by group or others.
    #[error("key file {path} has mode {mode:o}; radd refuses key files readable by others: run `chmod 600 {path}`", path = .path.display())]
    KeyFileMode {
        /// The offending file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file could not be read or written.
    #[error("cannot access key file {path}: {source}", path = .path.display())]
    KeyFileIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Refusing to overwrite an existing key file.
    #[error("key file {path} already exists; radd never overwrites keys (move it away first)", path = .path.display())]
    KeyFileExists {
        /// The file.
        path: PathBuf,
    },
    /// A key file's content is not a valid key.
    #[error("key file {path} does not contain a valid {what}", path = .path.display())]
    InvalidKeyFile {
        /// The file.
        path: PathBuf,
        /// What was expected ("age identity", "id key").
        what: &'static str,
    },
    /// A configured recipient string is not an age X25519 recipient.
    #[error("invalid age recipient {value:?}: expected an `age1…` public key (see `radd keygen`)")]
    InvalidRecipient {
        /// The public recipient string (not secret).
        value: String,
    },
    /// No recipients are configured, so nothing can be encrypted.
    #[error("no age recipients configured (keys.recipients); run `radd keygen` and add its recipient")]
    NoRecipients,
    /// Encryption failed.
    #[error("encryption failed: {0}")]
    Encrypt(String),
    /// No identity held matches a recipient of the ciphertext (age's "no matching keys"): the
    /// wrong identity, or (rarely) a damaged recipient stanza in the object's age header.
    #[error(
        "cannot decrypt: {0} (is keys.identity_file the identity for one of this repository's recipients? if other objects decrypt with it, this one's header was damaged)"
    )]
    Decrypt(String),
    /// An identity matched, but the ciphertext does not authenticate (age header MAC, a payload
    /// chunk's tag, or a malformed header): the stored bytes were damaged or tampered with. Not
    /// a key problem, so it never suggests checking the identity.
    #[error("ciphertext does not authenticate: {0}")]
    Unauthenticated(String),
    /// The ciphertext authenticated but its payload is corrupt.
    #[error("decrypted data is corrupt: {0}")]
    Corrupt(String),
}

impl Error {
    /// Category for exit codes: wrong keys are crypto, bad files are config.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::KeyFileMode { .. }
            | Error::InvalidKeyFile { .. }
            | Error::InvalidRecipient { .. }
            | Error::NoRecipients => ErrorKind::Config,
            Error::KeyFileIo { .. } => ErrorKind::Io,
            Error::KeyFileExists { .. } => ErrorKind::Conflict,
            Error::Encrypt(_) | Error::Decrypt(_) => ErrorKind::Crypto,
            Error::Corrupt(_) | Error::Unauthenticated(_) => ErrorKind::Integrity,
        }
    }
}

/// The public half: age X25519 recipients that every new object is encrypted to.
#[derive(Clone)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl Recipients {
    /// Parses `age1…` strings; fails on the first invalid one, or if the list is empty.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, Error> {
        if values.is_empty() {
            return Err(Error::NoRecipients);
        }
        values
            .iter()
            .map(|v| {
                age::x25519::Recipient::from_str(v.as_ref().trim())
                    .map_err(|_| Error::InvalidRecipient { value: v.as_ref().to_owned() })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Recipients)
    }

    /// Encrypts `plaintext` to every recipient; one age header per call.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let encryptor = age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::Encrypt(e.to_string()))?;
        let mut out = Vec::with_capacity(plaintext.len() + 256);
        let mut writer = encryptor.wrap_output(&mut out).map_err(|e| Error::Encrypt(e.to_string()))?;
        writer
            .write_all(plaintext)
            .and_then(|()| writer.finish().map(|_| ()))
            .map_err(|e| Error::Encrypt(e.to_string()))?;
        Ok(out)
    }

    /// A writer that encrypts everything written to it into `output`; call `finish()` on it.
    /// Streaming form of [`Recipients::encrypt`], so large objects are not copied twice.
    pub fn encrypting_writer<W: Write>(&self, output: W) -> Result<age::stream::StreamWriter<W>, Error> {
        let encryptor = age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::Encrypt(e.to_string()))?;
        encryptor.wrap_output(output).map_err(|e| Error::Encrypt(e.to_string()))
    }

    /// The recipients as `age1…` strings.
    #[must_use]
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_strings()).finish()
    }
}

/// The secret half: age identities that can decrypt. Only restore, verify and drills take one.
pub struct Identity(Vec<age::x25519::Identity>);

impl Identity {
    /// Generates a fresh X25519 identity.
    #[must_use]
    pub fn generate() -> Self {
        Identity(vec![age::x25519::Identity::generate()])
    }

    /// Loads an age identity file (the `AGE-SECRET-KEY-1…` format, comments allowed).
    /// Refuses files readable by group or others.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = keyfile::read_secret_file(path)?;
        let identities: Vec<age::x25519::Identity> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(age::x25519::Identity::from_str)
            .collect::<Result<_, _>>()
            .map_err(|_| Error::InvalidKeyFile {
                path: path.to_owned(),
                what: "age X25519 identity (AGE-SECRET-KEY-1…)",
            })?;
        if identities.is_empty() {
            return Err(Error::InvalidKeyFile {
                path: path.to_owned(),
                what: "age X25519 identity (AGE-SECRET-KEY-1…)",
            });
        }
        Ok(Identity(identities))
    }

    /// Writes this identity to a new file with mode 0600, in age's own file format.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use age::secrecy::ExposeSecret;
        let mut text = Zeroizing::new(String::new());
        for identity in &self.0 {
            text.push_str(&format!(
                "# created: {}\n# public key: {}\n{}\n",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                identity.to_public(),
                identity.to_string().expose_secret()
            ));
        }
        write_secret_file(path, text.as_bytes())
    }

    /// The recipients matching this identity (what the archiving host is configured with).
    #[must_use]
    pub fn recipients(&self) -> Recipients {
        Recipients(self.0.iter().map(age::x25519::Identity::to_public).collect())
    }

    /// A reader of the plaintext of an age ciphertext; a wrong identity fails here
    /// ([`Error::Decrypt`]), a damaged header too ([`Error::Unauthenticated`]), a damaged payload
    /// while reading (an `io::Error` of kind `InvalidData`). Streaming form of [`Identity::decrypt`].
    pub fn decrypting_reader<'a>(&self, ciphertext: &'a [u8]) -> Result<age::stream::StreamReader<&'a [u8]>, Error> {
        let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(decrypt_error)?;
        decryptor.decrypt(self.0.iter().map(|i| i as &dyn age::Identity)).map_err(decrypt_error)
    }

    /// Decrypts an age ciphertext: a wrong identity gives [`Error::Decrypt`], a damaged or
    /// tampered ciphertext [`Error::Unauthenticated`].
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut reader = self.decrypting_reader(ciphertext)?;
        let mut out = Vec::with_capacity(ciphertext.len());
        reader.read_to_end(&mut out).map_err(|e| Error::Unauthenticated(e.to_string()))?;
        Ok(out)
    }
}

/// Only "no matching keys" is a key problem; every other refusal (header MAC, malformed header
/// or stanza, payload tag) means the ciphertext itself is not what was encrypted.
fn decrypt_error(error: age::DecryptError) -> Error {
    match error {
        age::DecryptError::NoMatchingKeys => Error::Decrypt(error.to_string()),
        other => Error::Unauthenticated(other.to_string()),
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identity(<redacted>)")
    }
}

/// A 32-byte digest (SHA-256, or a keyed BLAKE3 / HMAC-SHA256 digest), shown and parsed as lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Plain SHA-256 of `data`.
    #[must_use]
    pub fn sha256(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// The 64 lowercase hex digits of the digest, on the stack: manifests and backup records
    /// write one per block, so neither an iterator of chars nor a `String` per id.
    fn hex(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        // 32 bytes always fit 64 digits.
        let _ = hex::encode_to_slice(self.0, &mut out);
        out
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Digest(out))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        s.serialize_str(std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 for streams (file contents during backup and restore).
#[derive(Default, Clone)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything fed so far.
    #[must_use]
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_decrypt_round_trip_and_wrong_identity_fails() {
        let id = Identity::generate();
        let other = Identity::generate();
        let ct = id.recipients().encrypt(b"hello wal").unwrap();
        assert_eq!(id.decrypt(&ct).unwrap(), b"hello wal");
        assert!(matches!(other.decrypt(&ct), Err(Error::Decrypt(_))));
    }
}
