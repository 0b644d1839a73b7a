//! The `hearth` binary: parse the command line, run the command, print errors with their causes.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    hearth::server::memory::small_thread_caches();
    hearth::server::memory::limit_arenas();
    hearth::matrix::crypto::password::return_large_allocations_to_the_system();
    let cli = hearth::server::cli::Cli::parse();
    match hearth::server::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", err.chain());
            ExitCode::FAILURE
        }
    }
}
