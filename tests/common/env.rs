//! One isolated radd environment per test: a temp dir (handed to the `postgres` OS user so
//! archive_command can reach it), keys, two configs — the archiving side's holds only the
//! recipient and id key, the restore side's also the identity — and an initialised repository
//! on the chosen backend (local directory, or a private prefix on the shared S3 server).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use radd::pg::ScratchCluster;
use tempfile::TempDir;

use super::pg::PgVersion;
use super::s3;

/// Storage backend of a test repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A directory in the test's temp dir.
    Local,
    /// A unique prefix in the shared SeaweedFS bucket.
    S3,
}

/// The radd binary, linked (or copied) into a directory every user can traverse, because
/// archive_command and restore_command run as `postgres` and the checkout may not be reachable.
pub fn radd_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("radd-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create test bin dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod test bin dir");
        let bin = dir.join("radd");
        let _ = std::fs::remove_file(&bin);
        let built = env!("CARGO_BIN_EXE_radd");
        if std::fs::hard_link(built, &bin).is_err() {
            std::fs::copy(built, &bin).expect("copy radd binary");
        }
        bin
    })
}

/// A test environment: keys, configs and an initialised repository.
pub struct TestEnv {
    /// Owns every file of the test; removed on drop.
    pub dir: TempDir,
    /// Backend of the repository.
    pub backend: Backend,
    /// Full config (with identity): restores.
    pub config: PathBuf,
    /// Archiving-side config (recipient + id key only): wal-push and backups.
    pub push_config: PathBuf,
    /// Environment for radd processes (S3 credentials).
    pub env: Vec<(String, String)>,
    /// PostgreSQL version of the clusters this environment starts.
    pub pg: PgVersion,
}

/// A key prefix on the shared S3 server no other test of any process uses: the pid, a counter
/// and the name of the test's own temp dir `root`.
pub fn s3_prefix(root: &Path) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        root.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    )
}

/// Repository settings beyond the defaults (see [`TestEnv::with_repository`]).
#[derive(Debug, Default)]
pub struct RepoOptions {
    /// S3: the endpoint to use instead of the shared server's (a fault proxy in front of it).
    pub endpoint: Option<String>,
    /// Local: the repository directory instead of `<test dir>/repo` (e.g. on a small tmpfs).
    pub local_path: Option<PathBuf>,
    /// Extra `[repository]` lines, e.g. `retry_budget = "5s"`.
    pub extra: String,
}

impl TestEnv {
    /// Creates keys, configs and the repository; clusters run the default PostgreSQL version.
    pub fn new(backend: Backend) -> Self {
        Self::with_pg(backend, PgVersion::default())
    }

    /// Creates keys, configs and the repository; clusters run PostgreSQL `pg`.
    pub fn with_pg(backend: Backend, pg: PgVersion) -> Self {
        Self::build(backend, pg, &RepoOptions::default())
    }

    /// Creates keys, configs and a repository with `options` (another endpoint or directory,
    /// extra settings); clusters run the default PostgreSQL version.
    pub fn with_repository(backend: Backend, options: &RepoOptions) -> Self {
        Self::build(backend, PgVersion::default(), options)
    }

    fn build(backend: Backend, pg: PgVersion, options: &RepoOptions) -> Self {
        let dir = tempfile::Builder::new().prefix("radd-test-").tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let root = dir.path();
        let identity = root.join("identity.key");
        let out = run(Command::new(radd_binary()).args(["keygen", "--identity"]).arg(&identity), &[]);
        assert!(out.status.success(), "keygen failed: {}", stderr(&out));
        let recipient = String::from_utf8(out.stdout).expect("utf8").trim().to_owned();
        assert!(recipient.starts_with("age1"), "keygen printed {recipient:?}");

        let (repository, env) = match backend {
            Backend::Local => {
                let path = options.local_path.clone().unwrap_or_else(|| root.join("repo"));
                (format!("path = \"{}\"\n", path.display()), Vec::new())
            }
            Backend::S3 => {
                let server = s3::shared();
                let prefix = s3_prefix(root);
                (
                    format!(
                        "backend = \"s3\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\nregion = \"{}\"\nallow_http = true\n",
                        server.bucket,
                        options.endpoint.as_deref().unwrap_or(&server.endpoint),
                        server.region
                    ),
                    server.env(),
                )
            }
        };
        let keys = format!("recipients = [\"{recipient}\"]\nid_key_file = \"{}\"\n", root.join("id.key").display());
        let common = format!(
            "[backup]\nstate_dir = \"{}\"\n\n[events]\ndir = \"{}\"\n\n[drills]\ndir = \"{}\"\nscratch_dir = \"{}\"\n\n[repository]\n{repository}{}\n",
            root.join("state").display(),
            root.join("events").display(),
            root.join("drills").display(),
            root.join("scratch").display(),
            options.extra
        );
        let push_config = root.join("radd-push.toml");
        std::fs::write(&push_config, format!("{common}[keys]\n{keys}")).expect("write config");
        let config = root.join("radd.toml");
        std::fs::write(&config, format!("{common}[keys]\n{keys}identity_file = \"{}\"\n", identity.display()))
            .expect("write config");
        std::fs::create_dir(root.join("drills")).expect("create drills dir");
        let env = TestEnv { dir, backend, config, push_config, env, pg };
        let init = env.radd_push(&["repo", "init"]);
        assert!(init.status.success(), "repo init failed: {}", stderr(&init));
        radd::pg::hand_over(env.dir.path()).expect("hand temp dir to postgres");
        if let Some(path) = &options.local_path {
            radd::pg::hand_over(path).expect("hand the repository to postgres");
        }
        env
    }

    /// An environment on a copy of `tests/fixtures/<name>`: a repository an older radd wrote
    /// (`repo/`), its keys and its two configs, whose relative paths resolve in the copy. Key
    /// files get back the 0600 git does not keep; the copy is handed to `postgres`; clusters run
    /// PostgreSQL 15, which wrote the fixture's WAL and base backups.
    pub fn from_fixture(name: &str) -> Self {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        assert!(fixture.join("repo/config").is_file(), "{} holds no repository", fixture.display());
        let dir = tempfile::Builder::new().prefix("radd-test-").tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        copy_tree(&fixture, dir.path());
        for key in ["identity.key", "id.key"] {
            std::fs::set_permissions(dir.path().join(key), std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        }
        std::fs::create_dir_all(dir.path().join("drills")).expect("create drills dir");
        let root = dir.path().to_owned();
        let env = TestEnv {
            dir,
            backend: Backend::Local,
            config: root.join("radd.toml"),
            push_config: root.join("radd-push.toml"),
            env: Vec::new(),
            pg: PgVersion::V15,
        };
        radd::pg::hand_over(env.path()).expect("hand temp dir to postgres");
        env
    }

    /// The test's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs radd with the full (restore-side) config.
    pub fn radd(&self, args: &[&str]) -> Output {
        self.radd_with(&self.config, args)
    }

    /// Runs radd with the archiving-side config (no identity).
    pub fn radd_push(&self, args: &[&str]) -> Output {
        self.radd_with(&self.push_config, args)
    }

    /// Runs radd with a given config.
    pub fn radd_with(&self, config: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(radd_binary());
        cmd.arg("--config").arg(config).args(args);
        run(&mut cmd, &self.env)
    }

    /// The `archive_command` that archives into this repository with the archiving-side config.
    pub fn archive_command(&self) -> String {
        format!("'{}' --config '{}' wal-push %p", radd_binary().display(), self.push_config.display())
    }

    /// The PostgreSQL binaries of this environment's version.
    pub fn pg_bin(&self) -> &'static Path {
        self.pg.bin()
    }

    /// Starts a source cluster archiving into this repository through `radd wal-push`.
    pub fn source_cluster(&self) -> ScratchCluster {
        self.source_cluster_with(&[], &[])
    }

    /// Like [`source_cluster`](Self::source_cluster) with extra `initdb` arguments (e.g.
    /// `--wal-segsize=1`) and extra server settings.
    pub fn source_cluster_with(&self, initdb_args: &[&str], settings: &[(&str, String)]) -> ScratchCluster {
        self.source_cluster_prepared(initdb_args, settings, |_| {})
    }

    /// Like [`source_cluster_with`](Self::source_cluster_with), running `prepare` on the fresh,
    /// stopped cluster before its first start (e.g. `pg_resetwal -l` to start its WAL elsewhere).
    pub fn source_cluster_prepared(
        &self,
        initdb_args: &[&str],
        settings: &[(&str, String)],
        prepare: impl FnOnce(&ScratchCluster),
    ) -> ScratchCluster {
        let work = self.path().join("source");
        std::fs::create_dir(&work).expect("create source dir");
        let mut cluster = ScratchCluster::new(self.pg_bin(), &work).expect("scratch cluster");
        cluster.initdb_with(initdb_args).expect("initdb");
        prepare(&cluster);
        let archive_command = self.archive_command();
        cluster
            .start(
                &[
                    ("wal_level", "replica".into()),
                    ("archive_mode", "on".into()),
                    ("archive_command", archive_command),
                    ("fsync", "off".into()),
                ]
                .into_iter()
                .chain(settings.iter().cloned())
                .collect::<Vec<_>>(),
                &self.env,
            )
            .expect("start source cluster");
        let port = cluster.port();
        let data = cluster.data_dir().display().to_string();
        for config in [&self.push_config, &self.config] {
            std::fs::write(
                config,
                std::fs::read_to_string(config).expect("read config")
                    + &format!(
                        "\n[postgres]\nhost = \"127.0.0.1\"\nport = {port}\ndata_dir = \"{data}\"\nbin_dir = \"{}\"\n",
                        self.pg_bin().display()
                    ),
            )
            .expect("append [postgres] to config");
        }
        cluster
    }

    /// Restores `snapshot` into `<dir>/<name>` with extra args and starts it; returns the
    /// running cluster once recovery has ended.
    pub fn restore_and_start(&self, snapshot: &str, name: &str, extra: &[&str]) -> ScratchCluster {
        let target = self.path().join(name);
        let target_s = target.display().to_string();
        let mut args = vec!["restore", snapshot, "--target", &target_s];
        args.extend_from_slice(extra);
        let out = self.radd(&args);
        assert!(out.status.success(), "restore failed: {}", stderr(&out));
        self.restore_and_start_dir(&target, name)
    }

    /// Starts a data directory radd restored (run files in `<dir>/<name>-run`); returns it once
    /// recovery has ended and it was promoted.
    pub fn restore_and_start_dir(&self, target: &Path, name: &str) -> ScratchCluster {
        let work = self.path().join(format!("{name}-run"));
        std::fs::create_dir(&work).expect("create run dir");
        let mut cluster = ScratchCluster::new(self.pg_bin(), &work).expect("scratch cluster").with_data_dir(target);
        cluster.start(&[], &self.env).expect("start restored cluster");
        block_on(cluster.wait_promoted(Duration::from_secs(120))).unwrap_or_else(|e| {
            panic!("restored cluster {name} does not promote: {e}; see {}", cluster.log_file().display())
        });
        cluster
    }

    /// Deletes the newest-but-one archived segment of timeline 1 (inside the archived range,
    /// after a backup's consistency point when several segments followed it); returns its name.
    pub fn delete_wal_before_last(&self) -> String {
        let wal_dir = self.local_object("wal/00000001");
        let mut segments: Vec<String> = std::fs::read_dir(&wal_dir)
            .expect("wal dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 24)
            .collect();
        segments.sort();
        assert!(segments.len() >= 4, "need several archived segments, have {segments:?}");
        let victim = segments[segments.len() - 2].clone();
        std::fs::remove_file(wal_dir.join(&victim)).expect("delete segment");
        victim
    }

    /// The repository's id key, hashing as the repository's format does.
    pub fn id_key(&self) -> radd::crypto::IdKey {
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.local_object("config")).expect("read config")).expect("JSON");
        let format = u32::try_from(config["format"].as_u64().expect("format")).expect("format fits");
        radd::crypto::IdKey::load(&self.path().join("id.key"), radd::crypto::KeyedHash::of_format(format))
            .expect("id key")
    }

    /// Turns the fresh repository (nothing written yet but `config` and the id key) into one of
    /// an older `format` (1: HMAC-SHA256, 2: keyed BLAKE3 under the raw key), as radd created
    /// them before; returns its id key.
    pub fn make_format(&self, format: u32) -> radd::crypto::IdKey {
        use std::os::unix::fs::PermissionsExt;
        let id_key = radd::crypto::IdKey::load(&self.path().join("id.key"), radd::crypto::KeyedHash::of_format(format))
            .expect("id key");
        let path = self.local_object("config");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read config")).expect("config is JSON");
        assert_eq!(config["format"], 3, "new repositories are of format 3");
        config["format"] = format.into();
        config["id_key_check"] =
            id_key.hash(radd::crypto::Purpose::IdKeyCheck, b"radd id key check v1").to_string().into();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod config");
        std::fs::write(&path, serde_json::to_vec(&config).expect("serialise")).expect("write config");
        id_key
    }

    /// Flips one bit in the middle of the largest pack object; returns the pack's repository key.
    pub fn corrupt_a_pack(&self) -> String {
        // The largest pack holds file content (entry streams make small packs of their own).
        let pack = std::fs::read_dir(self.local_object("packs"))
            .expect("packs dir")
            .filter_map(Result::ok)
            .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .expect("a pack")
            .path();
        let mut data = std::fs::read(&pack).expect("read pack");
        let middle = data.len() / 2;
        data[middle] ^= 0x10;
        std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).expect("chmod pack");
        std::fs::write(&pack, data).expect("write pack");
        format!("packs/{}", pack.file_name().and_then(|n| n.to_str()).unwrap_or_default())
    }

    /// Removes the object at `key` from the repository (local backend only).
    pub fn local_object(&self, key: &str) -> PathBuf {
        assert_eq!(self.backend, Backend::Local);
        self.path().join("repo").join(key)
    }
}

/// Copies the directory tree `from` into the existing directory `to` (files and directories;
/// fixtures hold no links), keeping file modes.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir(&target).expect("create directory");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// Runs a command with a scrubbed environment plus `env`.
pub fn run(cmd: &mut Command, env: &[(String, String)]) -> Output {
    for (key, _) in std::env::vars() {
        if key.starts_with("RADD_") || key.starts_with("AWS_") || key.starts_with("PG") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("run radd")
}

/// stderr as text, for assertion messages.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout parsed as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "radd failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs a future to completion on a fresh runtime (tests are plain #[test] fns).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// Runs SQL on a cluster and returns the first column of the first row as text.
pub fn sql(cluster: &ScratchCluster, query: &str) -> String {
    sql_at(&cluster.connection(), query)
}

/// [`sql`] with explicit connection settings (e.g. a Unix socket directory as the host).
pub fn sql_at(connection: &radd::config::PostgresConfig, query: &str) -> String {
    block_on(async {
        let client = radd::pg::connect(connection).await.expect("connect");
        let rows = client.simple_query(query).await.unwrap_or_else(|e| panic!("{query}: {e}"));
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
                _ => None,
            })
            .unwrap_or_default()
    })
}

/// Switches WAL and waits until the cluster reports the switched segment archived.
pub fn switch_and_wait_archived(cluster: &ScratchCluster) -> String {
    // A switch with nothing written since the last one is a no-op that archives nothing (seen on
    // PostgreSQL 17 and 18 right after a backup), so write a WAL record first.
    sql(cluster, "SELECT pg_logical_emit_message(false, 'radd-test', 'switch')");
    let wal = sql(cluster, "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = sql(cluster, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        // Segments are archived in order; a `.backup` history file name starts with a segment name.
        if last.len() >= 24 && last[..24] >= *wal.as_str() {
            return wal;
        }
        assert!(
            Instant::now() < deadline,
            "segment {wal} not archived within 60 s (last archived {last:?}); see {}",
            cluster.log_file().display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deterministic, incompressible bytes (xorshift64): honest sizes for dedup and upload checks.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The first file named `name` under `dir`, searched depth-first (restored trees keep their
/// absolute paths; a running instance's postmaster.pid sits somewhere in its scratch tree).
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) && path.is_file() {
            return Some(path);
        }
        if path.is_dir()
            && !path.is_symlink()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

/// GET over HTTP/1.0 from 127.0.0.1 (no chunking); the body of a 200, else `None`.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_owned())
}
