//! Upstream sources. Each one reports the *whole* instance set whenever it may have changed (a
//! reset, never a diff) to the [`Publisher`], which gates and publishes it; sources never touch the
//! snapshot themselves, so the gates exist once.

pub mod consul;
pub mod file;
mod source;
pub mod status;

pub use source::{split_by_tags, Reports, UpstreamSource};

use crate::config::{PoolsConfig, SetupError, SourceConfig};

/// Builds the source a config names; fails (naming the setting) when e.g. a TLS or token file
/// cannot be read.
pub fn from_config(
    source: &SourceConfig,
    pools: &PoolsConfig,
) -> Result<Box<dyn UpstreamSource>, SetupError> {
    Ok(match source {
        SourceConfig::File(f) => Box::new(file::FileSource::new(f.clone(), pools.clone())),
        SourceConfig::Consul(c) => Box::new(consul::ConsulSource::new(c.clone(), pools.clone())?),
    })
}
