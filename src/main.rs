//! The `radd` binary: parse arguments, set up logging, run the command, map errors to the exit
//! codes documented in the README. Everything else lives in the library and `cli`.

// The only `unsafe` code in radd is the `mallopt` calls of `tune_allocator` (the library
// forbids unsafe code outright).
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_allocator();
    let args = cli::Args::parse();
    cli::init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("radd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = cli::exit_code(&args, &error);
            // "Not in the archive" is how PostgreSQL probes for the end of WAL: not an error.
            if !(code == 1 && matches!(args.command, cli::Command::WalFetch(_))) {
                eprintln!("radd: {}", cli::error_chain(&error));
            }
            ExitCode::from(code)
        }
    }
}

/// Most glibc malloc arenas (`M_ARENA_MAX`): by default glibc gives each thread that meets
/// contention an arena of its own, up to 8 per core, and each keeps the memory freed into it.
/// A restore's or verify's buffers are made on tokio's blocking threads and freed on others, so
/// with the default their peak RSS was 150–220 MiB at 4 GB where the live heap peaked at
/// 50–70 MiB; with 2 arenas it stays near the live heap (see bench/scale.sh).
const MALLOC_ARENAS: i32 = 2;

/// Allocations of at least this size get a mapping of their own, returned to the system when
/// freed (`M_MMAP_THRESHOLD`). glibc's default raises the threshold to the largest block freed
/// so far (up to 32 MiB), after which 16 MiB WAL segments and decrypted packs are carved out of
/// the arenas and stay there. radd's large buffers are pooled (allocated once), so a fixed
/// threshold costs no extra system time.
const MALLOC_MMAP_THRESHOLD: i32 = 4 << 20;

/// Sets glibc's allocator limits (see [`MALLOC_ARENAS`], [`MALLOC_MMAP_THRESHOLD`]) before any
/// thread starts, unless the environment sets them (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES`): an operator's own tuning wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt has no preconditions; it only sets an allocator parameter, and runs
        // here before any other thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) };
    }
}

/// Other allocators keep no per-thread arenas of this kind: nothing to tune.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
