//! What a source reports: instances (id, address, version, tags) and where the report came from.

use serde::Serialize;

use crate::telemetry::metrics::VersionLabel;

/// One instance as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Instance {
    pub id: String,
    /// `host:port` to dial.
    pub address: String,
    pub version: String,
    pub tags: Vec<String>,
    /// `host:port` of the instance's HSMS listener, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsms: Option<String>,
}

impl Instance {
    /// An instance of `version` at a loopback address derived from `id`, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(id: &str, version: &str) -> Instance {
        Instance {
            id: id.into(),
            address: format!("127.0.0.1:{}", 9000 + id.len()),
            version: version.into(),
            tags: vec![],
            hsms: None,
        }
    }
}

impl VersionLabel for Instance {
    fn version_label(&self) -> &str {
        &self.version
    }
}

/// Where a snapshot's data came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    pub kind: &'static str,
    /// File path or Consul URL.
    pub origin: String,
    /// The Consul index of the answer, when there is one.
    pub index: Option<u64>,
}
