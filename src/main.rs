//! The `radd` binary: parse arguments, set up logging, run the command, map errors to the exit
//! codes documented in the README. Everything else lives in the library and `cli`.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
