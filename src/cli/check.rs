//! `zerodown check-config FILE`.

use std::path::Path;
use std::process::ExitCode;

use super::args::EXIT_USAGE;
use crate::config::Config;

pub fn run(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(cfg) => {
            println!("# {}: valid. Effective configuration:", file.display());
            print!("{}", cfg.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zerodown: invalid config: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
