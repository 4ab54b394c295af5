//! `zerodown check-config FILE`: the config, and under the file source the upstreams file it
//! points to, as the proxy would read them.

use std::path::Path;
use std::process::ExitCode;

use super::args::EXIT_USAGE;
use crate::config::{Config, ConfigError, SourceConfig};
use crate::core::discovery::{file, split_by_tags};
use crate::core::Instance;

pub fn run(file: &Path) -> ExitCode {
    let cfg = match Config::load(file) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("zerodown: invalid config: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut lines = Vec::new();
    for (i, name) in cfg.service_names().into_iter().enumerate() {
        let Some(view) = cfg.for_service(name) else {
            continue;
        };
        if let SourceConfig::File(f) = &view.source {
            match upstreams(&view, &f.path) {
                Ok(line) if i == 0 => lines.push(line),
                Ok(line) => lines.push(format!("service {name}: {line}")),
                Err(e) => {
                    let key = if i == 0 {
                        "source.path".to_string()
                    } else {
                        format!("path of service {name:?}")
                    };
                    eprintln!("zerodown: the upstreams file ({key}) is not usable: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
    }
    let mut text = format!("# {}: valid. Effective configuration:\n", file.display());
    for line in lines {
        text.push_str(&format!("# {line}\n"));
    }
    text.push_str(&cfg.render());
    out!("{text}");
    ExitCode::SUCCESS
}

/// The upstreams file's pools in one line, e.g. `upstreams.toml: active v1 (2 instances), standby
/// v2 (2 instances)`; an error when it cannot be read or parsed.
fn upstreams(cfg: &Config, path: &Path) -> Result<String, String> {
    let list = file::load(path).map_err(|e| match e {
        ConfigError::Read { origin, source } => format!("{origin}: cannot read it: {source}"),
        other => other.to_string(),
    })?;
    let (active, standby) = split_by_tags(list, &cfg.pools);
    let pool = |name: &str, members: &[Instance]| {
        let mut versions: Vec<&str> = members.iter().map(|i| i.version.as_str()).collect();
        versions.sort_unstable();
        versions.dedup();
        match versions.as_slice() {
            [] => format!("{name} empty"),
            vs => format!("{name} {} ({} instances)", vs.join(" + "), members.len()),
        }
    };
    Ok(format!(
        "{}: {}, {}",
        path.display(),
        pool("active", &active),
        pool("standby", &standby)
    ))
}
