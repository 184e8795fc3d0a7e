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
