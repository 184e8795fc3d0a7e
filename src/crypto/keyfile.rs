//! Secret files on disk: created 0600 and never overwritten; refused when group/other can read.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::Error;

/// Fails unless `path` has no group/other permission bits (0600 or stricter).
pub fn check_key_file_mode(path: &Path) -> Result<(), Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::KeyFileIo { path: path.to_owned(), source })?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFileMode { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Reads a secret file after checking its mode; the returned text zeroes on drop.
pub(super) fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, Error> {
    check_key_file_mode(path)?;
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| Error::KeyFileIo { path: path.to_owned(), source })
}

/// Creates `path` with mode 0600 and writes `contents`; refuses to replace an existing file.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::KeyFileExists { path: path.to_owned() }
            } else {
                Error::KeyFileIo { path: path.to_owned(), source }
            }
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::KeyFileIo { path: path.to_owned(), source })
}
