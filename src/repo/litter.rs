//! Staging files that writers killed mid-write (`kill -9`, power loss) left behind on the local
//! backend: `<name>#<digits>` beside the object they were to become (ours
//! `<name>#<pid><6-digit counter>`, object_store's own `<name>#<n>`). Listings hide them, so
//! nothing else would ever remove them.
//!
//! Two sweeps: the objects of one key whose writing process is gone (cheap, for the next
//! writer of that key), and every staging file older than a cutoff (for prune, its grace
//! period: no writer stays silent on a staging file that long). Other backends write objects in
//! one request and leave no staging files: both sweeps find nothing there.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Error, ObjectKey, Repo};

/// The digits after `#` when `file_name` is a staging file name.
fn staging_suffix(file_name: &str) -> Option<&str> {
    let (_, suffix) = file_name.rsplit_once('#')?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some(suffix)
}

/// The writer's pid in one of our staging names (`#<pid><6-digit counter>`).
fn staging_pid(suffix: &str) -> Option<i32> {
    suffix.get(..suffix.len().checked_sub(6)?).filter(|p| !p.is_empty())?.parse().ok()
}

/// Whether a process with this pid runs on this host (a process of another user counts).
fn alive(pid: i32) -> bool {
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

impl Repo {
    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, Error> {
        let Some(local) = &self.local else { return Ok(None) };
        local.path_to_filesystem(&self.path(key)).map(Some).map_err(|e| self.backend_error("list", key, e))
    }

    /// Removes the staging files of `key` whose writer is gone: one of our staging names whose
    /// pid is not ours and runs no process on this host. Returns how many were removed.
    /// Blocking (reads the object's directory): call it where blocking is allowed.
    pub fn remove_abandoned_staging(&self, key: &ObjectKey) -> Result<usize, Error> {
        let name = key.to_string();
        let Some(dest) = self.local_file(&name)? else { return Ok(0) };
        let (Some(dir), Some(base)) = (dest.parent(), dest.file_name().and_then(|n| n.to_str())) else {
            return Ok(0);
        };
        let prefix = format!("{base}#");
        let entries = std::fs::read_dir(dir).map_err(|e| self.io_error("list", &name, e))?;
        let mut removed = 0;
        for entry in entries.filter_map(Result::ok) {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str().filter(|n| n.starts_with(&prefix)) else { continue };
            let Some(pid) = staging_suffix(file_name).and_then(staging_pid) else { continue };
            if u32::try_from(pid).ok() == Some(std::process::id()) || alive(pid) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(staging = file_name, pid, "removed a staging file its writer left when it died");
                    removed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error("delete", &format!("{name} (staging {file_name})"), e)),
            }
        }
        Ok(removed)
    }

    /// Removes (unless `dry_run`) every staging file in the repository last written before
    /// `cutoff`; returns how many there were. Blocking (walks the repository directory).
    pub fn remove_stale_staging(&self, cutoff: SystemTime, dry_run: bool) -> Result<usize, Error> {
        let Some(config) = self.local_file(&ObjectKey::Config.to_string())? else { return Ok(0) };
        let Some(root) = config.parent() else { return Ok(0) };
        let mut removed = 0;
        self.sweep(root, cutoff, dry_run, &mut removed)?;
        Ok(removed)
    }

    fn sweep(&self, dir: &Path, cutoff: SystemTime, dry_run: bool, removed: &mut usize) -> Result<(), Error> {
        let shown = |p: &Path| p.display().to_string();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_error("list", &shown(dir), e)),
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                self.sweep(&path, cutoff, dry_run, removed)?;
                continue;
            }
            let stale = meta.modified().is_ok_and(|m| m < cutoff);
            if !stale || entry.file_name().to_str().and_then(staging_suffix).is_none() {
                continue;
            }
            *removed += 1;
            if dry_run {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(staging = %path.display(), "removed a stale staging file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error("delete", &shown(&path), e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_and_their_writers() {
        assert_eq!(staging_suffix("000000010000000000000003#4242000017"), Some("4242000017"));
        assert_eq!(staging_suffix("packs/abc#1"), Some("1"));
        assert_eq!(staging_suffix("000000010000000000000003"), None);
        assert_eq!(staging_suffix("a#"), None);
        assert_eq!(staging_suffix("a#12x"), None);
        assert_eq!(staging_pid("4242000017"), Some(4242));
        assert_eq!(staging_pid("000017"), None);
        assert_eq!(staging_pid("1"), None);
        assert!(alive(i32::try_from(std::process::id()).unwrap()));
    }
}
