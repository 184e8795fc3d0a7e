//! Scratch PostgreSQL clusters: initdb into a work directory, start on a free loopback port,
//! stop on drop. Used by `radd demo`, by drills, and by the integration tests.
//!
//! initdb, pg_ctl and postgres refuse to run as root, so when radd runs as root every program
//! runs as the `postgres` OS user and the work directory is handed to that user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Error;
use super::settings::PostgresConfig;

/// Finds a free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Io { what: "cannot find a free port on", path: "127.0.0.1".into(), source })
}

/// A throwaway cluster in `work_dir` (data in `work_dir/data` unless set otherwise).
#[derive(Debug)]
pub struct ScratchCluster {
    bin_dir: PathBuf,
    work_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    running: bool,
    /// Listen only on the Unix socket in `work_dir` (no TCP): a restored copy of production
    /// data must not be reachable by every local user.
    socket_only: bool,
}

/// Longest Unix socket path (`sun_path` is 108 bytes with the terminating NUL on Linux).
const MAX_SOCKET_PATH: usize = 107;

/// The user programs run as: `postgres` when we are root, ourselves otherwise.
fn run_as() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    nix::unistd::User::from_name("postgres").ok().flatten().map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

/// Hands `path` (recursively) to the user PostgreSQL programs run as.
pub fn hand_over(path: &Path) -> Result<(), Error> {
    let Some((uid, gid)) = run_as() else {
        return Ok(());
    };
    let chown = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|source| Error::Io {
            what: "cannot change owner of",
            path: p.to_owned(),
            source,
        })
    };
    chown(path)?;
    if path.is_dir() && !path.is_symlink() {
        let entries = std::fs::read_dir(path).map_err(|source| Error::Io {
            what: "cannot read directory",
            path: path.to_owned(),
            source,
        })?;
        for entry in entries.flatten() {
            hand_over(&entry.path())?;
        }
    }
    Ok(())
}

impl ScratchCluster {
    /// A cluster whose files live under `work_dir` (socket, log, and by default the data).
    pub fn new(bin_dir: &Path, work_dir: &Path) -> Result<Self, Error> {
        Ok(ScratchCluster {
            bin_dir: bin_dir.to_owned(),
            work_dir: work_dir.to_owned(),
            data_dir: work_dir.join("data"),
            port: free_port()?,
            running: false,
            socket_only: false,
        })
    }

    /// A handle on a server started earlier, possibly by another radd process (a managed
    /// scratch instance), with its files under `work_dir` and data in `data_dir`: the stop
    /// methods (and dropping the handle) stop it.
    #[must_use]
    pub fn adopt(bin_dir: &Path, work_dir: &Path, data_dir: &Path, port: u16) -> Self {
        ScratchCluster {
            bin_dir: bin_dir.to_owned(),
            work_dir: work_dir.to_owned(),
            data_dir: data_dir.to_owned(),
            port,
            running: true,
            socket_only: false,
        }
    }

    /// Lets the server outlive this handle (pg_ctl started it detached): a managed scratch
    /// instance keeps running after radd exits, until `radd scratch stop` or its TTL.
    pub fn detach(mut self) {
        self.running = false;
    }

    /// Uses an existing data directory (e.g. a restored one) instead of `work_dir/data`.
    #[must_use]
    pub fn with_data_dir(mut self, data_dir: &Path) -> Self {
        self.data_dir = data_dir.to_owned();
        self
    }

    /// Listens on `port` instead of a random free one (drills pick from a configured range).
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Listens only on its Unix socket in the work directory (made private, 0700): for
    /// restored copies of production data (drills, scratch restores), reachable by radd and the
    /// PostgreSQL user only, whatever the source's pg_hba.conf allowed.
    #[must_use]
    pub fn socket_only(mut self) -> Self {
        self.socket_only = true;
        self
    }

    /// Where clients connect: the socket directory when socket-only, else 127.0.0.1.
    #[must_use]
    pub fn host(&self) -> String {
        if self.socket_only { self.work_dir.display().to_string() } else { "127.0.0.1".into() }
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The port the cluster listens on (127.0.0.1), or its socket's number when socket-only.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log file.
    #[must_use]
    pub fn log_file(&self) -> PathBuf {
        self.work_dir.join("postgres.log")
    }

    /// Connection settings for this cluster.
    #[must_use]
    pub fn connection(&self) -> PostgresConfig {
        PostgresConfig {
            host: self.host(),
            port: self.port,
            data_dir: Some(self.data_dir.clone()),
            bin_dir: self.bin_dir.clone(),
            ..PostgresConfig::default()
        }
    }

    fn program(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(name));
        if let Some((uid, gid)) = run_as() {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(&self.work_dir);
        cmd
    }

    fn run(&self, mut cmd: Command, name: &str) -> Result<(), Error> {
        let output =
            cmd.output().map_err(|source| Error::Io { what: "cannot run", path: self.bin_dir.join(name), source })?;
        if output.status.success() {
            return Ok(());
        }
        let tail = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let lines: Vec<&str> = text.lines().rev().take(20).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        let mut message = format!("{}: {}", output.status, tail(&output.stderr));
        if !output.stdout.is_empty() {
            message.push('\n');
            message.push_str(&tail(&output.stdout));
        }
        if name == "pg_ctl"
            && let Ok(log) = std::fs::read_to_string(self.log_file())
        {
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            message.push_str("\nserver log (last lines):\n");
            message.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        Err(Error::Program { program: self.bin_dir.join(name), message })
    }

    /// Creates the cluster with data checksums, trust auth on loopback only.
    pub fn initdb(&self) -> Result<(), Error> {
        self.initdb_with(&[])
    }

    /// Like [`initdb`](Self::initdb) with extra arguments (e.g. `--wal-segsize=1`), so tests and
    /// demos can build the cluster layouts production runs.
    pub fn initdb_with(&self, extra: &[&str]) -> Result<(), Error> {
        hand_over(&self.work_dir)?;
        let mut cmd = self.program("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "--auth=trust", "--data-checksums", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync"])
            .args(extra);
        self.run(cmd, "initdb")
    }

    /// Copies this running cluster into a new one under `work_dir` (data in `work_dir/data`)
    /// with `pg_basebackup -R`, which writes `standby.signal` and `primary_conninfo`: once
    /// started, the copy is a streaming standby of this cluster, as production runs them for
    /// backups from a standby. initdb's pg_hba allows replication from 127.0.0.1.
    pub fn base_backup(&self, work_dir: &Path) -> Result<ScratchCluster, Error> {
        let standby = ScratchCluster::new(&self.bin_dir, work_dir)?;
        hand_over(work_dir)?;
        let mut cmd = standby.program("pg_basebackup");
        cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg("-D")
            .arg(&standby.data_dir)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        standby.run(cmd, "pg_basebackup")?;
        Ok(standby)
    }

    /// Runs `pg_resetwal -l <next_wal_file>` on the stopped cluster, so that it writes its WAL
    /// from that file on: tests and demos start a cluster just below a log id boundary (or
    /// past segment 0x100) instead of writing gigabytes of WAL to get there.
    pub fn reset_wal(&self, next_wal_file: &str) -> Result<(), Error> {
        let mut cmd = self.program("pg_resetwal");
        cmd.arg("-l").arg(next_wal_file).arg("-D").arg(&self.data_dir);
        self.run(cmd, "pg_resetwal")
    }

    /// Starts the server with extra `-c name=value` settings and environment, waiting until it
    /// accepts connections.
    pub fn start(&mut self, settings: &[(&str, String)], env: &[(String, String)]) -> Result<(), Error> {
        hand_over(&self.work_dir)?;
        let socket = self.work_dir.join(format!(".s.PGSQL.{}", self.port));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::Program {
                program: self.bin_dir.join("postgres"),
                message: format!(
                    "the socket path {} is longer than {MAX_SOCKET_PATH} bytes, which Unix sockets cannot be; choose a shorter scratch directory",
                    socket.display()
                ),
            });
        }
        let listen = if self.socket_only {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.work_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|source| Error::Io { what: "cannot make private", path: self.work_dir.clone(), source })?;
            "''"
        } else {
            "127.0.0.1"
        };
        let mut options = format!("-c listen_addresses={listen} -p {} -k {}", self.port, self.work_dir.display());
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}='{}'", value.replace('\'', "'\\''")));
        }
        let mut cmd = self.program("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "120", "-o", &options, "start"])
            .envs(env.iter().map(|(k, v)| (k, v)));
        self.running = true;
        let started = self.run(cmd, "pg_ctl");
        if started.is_err() && !self.data_dir.join("postmaster.pid").exists() {
            self.running = false;
        }
        started
    }

    /// Stops the server immediately (no shutdown checkpoint: it is thrown away anyway).
    pub fn stop(&mut self) -> Result<(), Error> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let mut cmd = self.program("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).args(["-m", "immediate", "-w", "stop"]);
        self.run(cmd, "pg_ctl")
    }

    /// Stops the server cleanly (a shutdown checkpoint), as `pg_checksums` requires.
    pub fn stop_clean(&mut self) -> Result<(), Error> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let mut cmd = self.program("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).args(["-m", "fast", "-w", "stop"]);
        self.run(cmd, "pg_ctl")
    }

    /// Runs `pg_checksums --check` on the stopped cluster; the error carries its report.
    pub fn check_checksums(&self) -> Result<(), Error> {
        let mut cmd = self.program("pg_checksums");
        cmd.arg("--check").arg("-D").arg(&self.data_dir);
        self.run(cmd, "pg_checksums")
    }

    /// Runs `pg_verifybackup` on the stopped, restored data directory against the
    /// `backup_manifest` the restore wrote: PostgreSQL's own tool re-reads every file and
    /// compares it with the backup-time checksums. `--no-parse-wal`: the WAL is fetched from the
    /// archive during recovery, not kept in `pg_wal`.
    pub fn verify_backup(&self) -> Result<(), Error> {
        let mut cmd = self.program("pg_verifybackup");
        cmd.arg("--no-parse-wal").arg("--quiet").arg(&self.data_dir);
        self.run(cmd, "pg_verifybackup")
    }

    /// Runs `pg_amcheck` over every database (heap and B-tree indexes), installing the amcheck
    /// extension where missing; the error carries what it found.
    pub fn amcheck(&self) -> Result<(), Error> {
        let mut cmd = self.program("pg_amcheck");
        cmd.args(["-h", &self.host(), "-U", "postgres", "--all", "--install-missing", "-p"]).arg(self.port.to_string());
        self.run(cmd, "pg_amcheck")
    }

    /// Waits until recovery has ended and the server accepts writes, or `timeout` passes.
    pub async fn wait_promoted(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match super::connect(&self.connection()).await {
                Ok(client) => match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
                    Ok(row) if !row.get::<_, bool>(0) => return Ok(()),
                    Ok(_) => last_error = "still in recovery".into(),
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Program {
            program: self.bin_dir.join("postgres"),
            message: format!("not promoted within {timeout:?} ({last_error}); see {}", self.log_file().display()),
        })
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(error = %error, data_dir = %self.data_dir.display(), "could not stop scratch cluster");
        }
    }
}
