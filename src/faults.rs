//! Fault injection for crash-safety tests: with `RADD_CRASH_AT=<point>` in the environment the
//! process ends abruptly (no destructors, no cleanup — as `kill -9` would) when it reaches the
//! named point. Unset in production, where this is one environment lookup per point.

/// Ends the process at once if `RADD_CRASH_AT` names this point.
pub fn crash_point(point: &str) {
    if std::env::var("RADD_CRASH_AT").is_ok_and(|v| v == point) {
        eprintln!("radd: RADD_CRASH_AT={point}: ending abruptly (fault injection)");
        std::process::exit(137);
    }
}

/// Waits at a named point if `RADD_PAUSE_AT` names it, so a test can act while this process is
/// exactly there (e.g. prune while a backup has uploaded its packs but not committed): creates
/// `$RADD_PAUSE_DIR/<point>.reached`, then waits until the test creates `<point>.go` (at most
/// ten minutes). Unset in production, where this is one environment lookup per point.
pub async fn pause_point(point: &str) {
    if !std::env::var("RADD_PAUSE_AT").is_ok_and(|v| v == point) {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var_os("RADD_PAUSE_DIR").unwrap_or_else(|| ".".into()));
    let file_name = point.replace(':', "-");
    if let Err(error) = std::fs::write(dir.join(format!("{file_name}.reached")), b"") {
        eprintln!("radd: RADD_PAUSE_AT={point}: cannot signal the pause: {error}");
        return;
    }
    eprintln!("radd: RADD_PAUSE_AT={point}: paused (fault injection)");
    let go = dir.join(format!("{file_name}.go"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !go.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
