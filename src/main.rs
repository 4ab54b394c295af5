//! The `zerodown` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let code = zerodown::cli::run(zerodown::cli::Cli::parse());
    // Access-log lines still gathering in memory (see telemetry::writer).
    zerodown::telemetry::writer::flush();
    code
}
