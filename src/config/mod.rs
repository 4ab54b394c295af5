//! Validated configuration. The file format lives in [`file`]; this module turns it into values the
//! daemon can use, refusing anything invalid with the file, line and key ([`ConfigError`]).
//! Precedence: command-line flags, then the file, then the defaults of [`Config::default`], which
//! `config/zerodown.toml` documents (a test keeps the two equal).

mod consul;
pub mod duration;
mod error;
mod limits;
mod model;
mod setup;
pub(crate) use error::Source as TextSource;
mod file;
mod hsms;
mod validate;

use std::path::Path;

pub use consul::{
    process_env, ActiveSelector, Consistency, ConsulAddress, ConsulSourceConfig, ConsulTls, Env,
};
pub use error::ConfigError;
pub use hsms::{HsmsConfig, HsmsMode};
pub use limits::{Cidr, Http2Config, LimitsConfig, TlsConfig, Underscores};
pub use model::{
    default_routes, Config, FileSourceConfig, LogConfig, LogFormat, PoolName, PoolsConfig, Route,
    ServerConfig, ServiceConfig, SourceConfig, UpstreamConfig, DEFAULT_SERVICE,
};
pub use setup::SetupError;

impl Config {
    /// Reads and validates a config file. Relative paths inside it resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &origin, base)
    }

    /// Validates config text; `origin` names it in errors, `base` anchors relative paths.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, origin, base)
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn render(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
