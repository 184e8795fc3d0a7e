//! Fault injection in front of real storage: an HTTP/1.1 proxy on 127.0.0.1 in front of the shared
//! SeaweedFS S3 server that answers some requests `503 SlowDown`, resets some connections, loses
//! the reply to some PUTs it forwarded (the object is stored, the client sees a reset), delays
//! replies, or is down (resets everything) for a while; and a small tmpfs to use as a local
//! repository that fills up.
//!
//! The proxy parses just enough HTTP to find request and reply boundaries on keep-alive
//! connections (Content-Length, chunked replies, bodiless replies). Faults are chosen by counting
//! (every n-th request), not at random, so a run is reproducible; [`FaultProxy::stats`] tells a
//! test how many of each it injected, so it can assert they happened.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::s3;

/// Which faults the proxy injects; every counter-based fault is off at 0.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every n-th request is answered `503 SlowDown` without being forwarded.
    pub slow_down_every: u64,
    /// Every n-th request: the client connection is reset (RST) before the request is forwarded.
    pub reset_every: u64,
    /// Every n-th PUT is forwarded (the server stores it), then the client connection is reset
    /// instead of relaying the reply.
    pub lose_put_reply_every: u64,
    /// Pause before each reply is relayed.
    pub delay: Duration,
    /// When the trigger's request arrives, the proxy goes down (resets every connection and
    /// request) for a while, starting with that request.
    pub down_at: Option<Trigger>,
}

/// The request that starts an outage: the `nth` with this method whose path contains the text.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// `PUT`, `GET`, …
    pub method: &'static str,
    /// Part of the request path, e.g. `/packs/`.
    pub path_contains: &'static str,
    /// Which matching request (from 1).
    pub nth: u64,
    /// How long the outage lasts.
    pub down_for: Duration,
}

impl Trigger {
    /// An outage of `down_for` from the first `method` request to a path containing `path`.
    pub fn first(method: &'static str, path: &'static str, down_for: Duration) -> Self {
        Trigger { method, path_contains: path, nth: 1, down_for }
    }
}

/// What the proxy did so far.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// Requests forwarded to the server.
    pub forwarded: u64,
    /// Requests answered 503 SlowDown.
    pub slow_downs: u64,
    /// Connections reset before forwarding.
    pub resets: u64,
    /// PUTs stored whose reply was replaced by a reset.
    pub lost_replies: u64,
    /// Connections and requests reset while down.
    pub refused_while_down: u64,
    /// Times the proxy went down.
    pub outages: u64,
    /// Forwarded requests the server did not answer (the client saw a reset).
    pub upstream_errors: u64,
}

struct State {
    upstream: SocketAddr,
    plan: Mutex<Plan>,
    stats: Mutex<Stats>,
    requests: AtomicU64,
    puts: AtomicU64,
    triggering: AtomicU64,
    down_until: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

impl State {
    fn count(&self, update: impl FnOnce(&mut Stats)) {
        update(&mut self.stats.lock().expect("stats lock"));
    }

    fn is_down(&self) -> bool {
        self.down_until.lock().expect("down lock").is_some_and(|until| Instant::now() < until)
    }
}

/// A fault-injecting proxy in front of the shared S3 server; stops accepting when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: the endpoint to configure instead of the server's.
    pub endpoint: String,
    state: Arc<State>,
    port: u16,
}

impl FaultProxy {
    /// Starts a pass-through proxy in front of [`s3::shared`].
    pub fn start() -> Self {
        let server = s3::shared();
        let upstream: SocketAddr =
            server.endpoint.trim_start_matches("http://").parse().expect("S3 endpoint is host:port");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State {
            upstream,
            plan: Mutex::new(Plan::default()),
            stats: Mutex::new(Stats::default()),
            requests: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            triggering: AtomicU64::new(0),
            down_until: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if accepting.is_down() {
                    accepting.count(|s| s.refused_while_down += 1);
                    reset(client);
                    continue;
                }
                let state = Arc::clone(&accepting);
                std::thread::spawn(move || serve(&state, client));
            }
        });
        FaultProxy { endpoint: format!("http://127.0.0.1:{port}"), state, port }
    }

    /// Switches to `plan` (counters keep running).
    pub fn set(&self, plan: Plan) {
        *self.state.plan.lock().expect("plan lock") = plan;
    }

    /// Goes down now for `duration`.
    pub fn down_for(&self, duration: Duration) {
        *self.state.down_until.lock().expect("down lock") = Some(Instant::now() + duration);
        self.state.count(|s| s.outages += 1);
    }

    /// What the proxy injected so far.
    pub fn stats(&self) -> Stats {
        self.state.stats.lock().expect("stats lock").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Closes a connection with a TCP reset (SO_LINGER 0), as a crashed peer or middlebox does.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// One HTTP message head: the start line and headers as received, plus what framing needs.
struct Head {
    raw: Vec<u8>,
    start: String,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// Reads a message head; `None` at a clean end of the connection.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return if raw.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        let line = &raw[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                raw.clear(); // tolerate blank lines between messages
                continue;
            }
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.lines();
    let start = lines.next().unwrap_or_default().to_owned();
    let (mut content_length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => content_length = value.parse().ok(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value.contains("close"),
            _ => {}
        }
    }
    Ok(Some(Head { raw, start, content_length, chunked, close }))
}

/// Reads a body framed by `head` (raw, framing included) into `out`; `until_eof` bodies (no
/// length, not chunked) are read to the end of the connection.
fn read_body(reader: &mut impl BufRead, head: &Head, until_eof: bool, out: &mut Vec<u8>) -> std::io::Result<()> {
    if head.chunked {
        loop {
            let mut size_line = Vec::new();
            if reader.read_until(b'\n', &mut size_line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            out.extend_from_slice(&size_line);
            let text = String::from_utf8_lossy(&size_line);
            let size = usize::from_str_radix(text.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut line = Vec::new();
                    if reader.read_until(b'\n', &mut line)? == 0 {
                        return Ok(());
                    }
                    out.extend_from_slice(&line);
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(());
                    }
                }
            }
            let start = out.len();
            out.resize(start + size + 2, 0);
            reader.read_exact(&mut out[start..])?;
        }
    } else if let Some(length) = head.content_length {
        let start = out.len();
        out.resize(start + length, 0);
        reader.read_exact(&mut out[start..])
    } else if until_eof {
        reader.read_to_end(out).map(|_| ())
    } else {
        Ok(())
    }
}

/// A connection to the server, opened on first use and again after the server closed it.
struct Upstream {
    addr: SocketAddr,
    conn: Option<(BufReader<TcpStream>, TcpStream)>,
}

impl Upstream {
    /// Sends one request and reads its whole reply (head and body, raw).
    fn exchange(&mut self, request: &[u8], method: &str) -> std::io::Result<(Vec<u8>, bool)> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr)?;
            self.conn = Some((BufReader::new(stream.try_clone()?), stream));
        }
        let Some((reader, writer)) = self.conn.as_mut() else { unreachable!("connected above") };
        let result = (|| {
            writer.write_all(request)?;
            let head = read_head(reader)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
            let status: u16 = head.start.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let bodiless = method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304;
            let mut reply = head.raw.clone();
            let until_eof = !bodiless && !head.chunked && head.content_length.is_none();
            if !bodiless {
                read_body(reader, &head, until_eof, &mut reply)?;
            }
            Ok((reply, head.close || until_eof))
        })();
        if result.as_ref().map_or(true, |(_, close)| *close) {
            self.conn = None;
        }
        result
    }
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>radd-fault-proxy</RequestId></Error>";

/// Serves one client connection until it closes or a fault ends it.
fn serve(state: &State, client: TcpStream) {
    let Ok(read_half) = client.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut client = client;
    let mut upstream = Upstream { addr: state.upstream, conn: None };
    loop {
        let Ok(Some(head)) = read_head(&mut reader) else { return };
        let mut request = head.raw.clone();
        if read_body(&mut reader, &head, false, &mut request).is_err() {
            return;
        }
        let mut words = head.start.split_whitespace();
        let (method, path) = (words.next().unwrap_or_default().to_owned(), words.next().unwrap_or_default().to_owned());
        let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
        state.count(|s| s.requests += 1);
        let plan = state.plan.lock().expect("plan lock").clone();
        let mut lose_reply = false;
        if method == "PUT" {
            let put = state.puts.fetch_add(1, Ordering::SeqCst) + 1;
            lose_reply = plan.lose_put_reply_every > 0 && put.is_multiple_of(plan.lose_put_reply_every);
        }
        if let Some(trigger) = &plan.down_at
            && method == trigger.method
            && path.contains(trigger.path_contains)
            && state.triggering.fetch_add(1, Ordering::SeqCst) + 1 == trigger.nth
        {
            *state.down_until.lock().expect("down lock") = Some(Instant::now() + trigger.down_for);
            state.count(|s| s.outages += 1);
        }
        if state.is_down() {
            state.count(|s| s.refused_while_down += 1);
            return reset(client);
        }
        if plan.slow_down_every > 0 && n.is_multiple_of(plan.slow_down_every) {
            state.count(|s| s.slow_downs += 1);
            let reply = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{SLOW_DOWN}",
                SLOW_DOWN.len()
            );
            if client.write_all(reply.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        if plan.reset_every > 0 && n.is_multiple_of(plan.reset_every) {
            state.count(|s| s.resets += 1);
            return reset(client);
        }
        let Ok((reply, close)) = upstream.exchange(&request, &method) else {
            state.count(|s| s.upstream_errors += 1);
            return reset(client);
        };
        state.count(|s| s.forwarded += 1);
        if lose_reply {
            state.count(|s| s.lost_replies += 1);
            return reset(client);
        }
        if !plan.delay.is_zero() {
            std::thread::sleep(plan.delay);
        }
        if client.write_all(&reply).is_err() || close || head.close {
            return;
        }
    }
}

/// A small tmpfs mounted for a test (root only), unmounted (lazily) when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `"40m"`) on a fresh directory owned by the `postgres` user.
    /// Fails the test with the reason when it cannot (not root): never a silent skip.
    pub fn mount(size: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a small tmpfs as a full repository and must run as root (CI does); run the test suite as root"
        );
        let dir = tempfile::Builder::new().prefix("radd-small-disk-").tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs size={size} {}: {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        radd::pg::hand_over(dir.path()).expect("hand the tmpfs to postgres");
        SmallDisk { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(self.path()).expect("statvfs");
        (stat.blocks() - stat.blocks_free()) * stat.fragment_size()
    }

    /// Changes the size (e.g. to leave only a little room above what is used).
    pub fn resize(&self, bytes: u64) {
        let kib = bytes.div_ceil(1024);
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={kib}k")])
            .arg(self.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {} to {kib} KiB: {}",
            self.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Fills the remaining space with a file; returns its path.
    pub fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).expect("create filler");
        let block = vec![0xA5u8; 64 << 10];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("fill {}: {e}", filler.display()),
            }
        }
        // The last partial page too.
        while file.write(&[0xA5]).is_ok_and(|n| n == 1) {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
