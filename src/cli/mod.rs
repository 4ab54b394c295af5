//! The `zerodown` command line. Flag names are an interface scripts depend on: keep them.

/// `print!` to stdout, ignoring a closed pipe: a reader that stops early (`| head`) is not an
/// error of the command, and `print!` would panic on it (Rust ignores SIGPIPE).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` to stdout, ignoring a closed pipe (see `out!`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod args;
mod check;
mod demo;
mod health;
mod ops;
mod serve;

pub use args::{
    ChangeArgs, Cli, Command, DemoArgs, HealthArgs, NomadArgs, OpsArgs, ServeArgs, UpgradeArgs,
    EXIT_USAGE,
};

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
        Command::Switch { change, force } => ops::switch(change, force),
        Command::Deploy {
            version,
            image,
            change,
        } => ops::deploy(change, version, image),
        Command::Rollback { change, force } => ops::rollback(change, force),
        Command::Diagnose { ops: a, nomad } => ops::diagnose(a, nomad),
        Command::Healthcheck(a) => health::run(a),
        Command::DemoBackend {
            listen,
            version,
            message,
            hsms,
        } => demo::run_backend(listen, version, message, hsms),
    }
}
