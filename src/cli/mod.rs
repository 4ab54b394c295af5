//! The `zerodown` command line. Flag names are an interface scripts depend on: keep them.

mod args;
mod check;
mod demo;
mod ops;
mod serve;

pub use args::{Cli, Command, DemoArgs, OpsArgs, ServeArgs, UpgradeArgs, EXIT_USAGE};

use std::process::ExitCode;

/// Runs the parsed command; the binary's `main` only calls this.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve {
            serve: args,
            upgrade,
        } => serve::run(args, upgrade),
        Command::CheckConfig { file } => check::run(&file),
        Command::Demo(args) => demo::run(args),
        Command::Status(a) => ops::status(a),
        Command::Switch { ops: a, force } => ops::switch(a, force),
        Command::Deploy {
            version,
            image,
            ops: a,
        } => ops::deploy(a, version, image),
        Command::Rollback { ops: a, force } => ops::rollback(a, force),
        Command::Diagnose(a) => ops::diagnose(a),
        Command::DemoBackend {
            listen,
            version,
            message,
        } => demo::run_backend(listen, version, message),
    }
}
