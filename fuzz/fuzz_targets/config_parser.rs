//! The config parser: any text gives a config or an error, never a panic; a config it accepts
//! renders (`check-config`) without a panic too.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use zerodown::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz", Path::new(".")) {
        Ok(cfg) => {
            let _ = cfg.render();
        }
        Err(e) => {
            // The error must format (it is what the operator reads).
            let _ = e.to_string();
        }
    }
});
