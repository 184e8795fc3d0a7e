//! Background radd processes paused at a named point (`RADD_PAUSE_AT`, src/faults.rs), so a test
//! acts while a process is exactly there (a backup before its commit, a drill with its scratch
//! instance running) instead of guessing with sleeps.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::env::{TestEnv, radd_binary};

/// A radd process started in the background with `config`, to pause at `point`.
pub fn spawn_paused(env: &TestEnv, config: &std::path::Path, args: &[&str], point: &str) -> Child {
    let mut cmd = background(env, config, args);
    cmd.env("RADD_PAUSE_AT", point).env("RADD_PAUSE_DIR", env.path());
    cmd.spawn().expect("start radd")
}

/// A radd command with the test's environment (and nothing of the caller's), output piped.
pub fn background(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(radd_binary());
    cmd.arg("--config").arg(config).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("RADD_") || key.starts_with("AWS_") || key.starts_with("PG") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.env.iter().map(|(k, v)| (k, v))).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn marker(env: &TestEnv, point: &str, suffix: &str) -> PathBuf {
    env.path().join(format!("{}.{suffix}", point.replace(':', "-")))
}

/// Waits until the paused process reached `point` (fails the test after 120 s, or when the
/// process ends first).
pub fn wait_reached(env: &TestEnv, child: &mut Child, point: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker(env, point, "reached").exists() {
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("process ended ({status}) before reaching {point}");
        }
        assert!(Instant::now() < deadline, "{point} not reached within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lets the paused process go on.
pub fn resume(env: &TestEnv, point: &str) {
    std::fs::write(marker(env, point, "go"), b"").expect("write resume marker");
}

/// Waits for the process to end (fails the test after `limit`: a hang is a failure).
pub fn finish_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("poll child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect output")
}
