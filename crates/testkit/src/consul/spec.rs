//! Public description of a service instance, used both by tests (`ConsulDouble::register`)
//! and by the `PUT /v1/agent/service/register` endpoint, so both paths share one upsert.

use std::collections::BTreeMap;

/// Node that agent registrations land on, like the single agent a client talks to.
pub const AGENT_NODE: &str = "node-1";
/// Address of [`AGENT_NODE`].
pub const AGENT_ADDRESS: &str = "127.0.0.1";

/// Status of a Consul health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    /// The lowercase wire form (`passing`, `warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }

    /// Parses the wire form; Consul rejects anything else at registration.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            _ => None,
        }
    }
}

/// One check attached to a service instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// `None` gives Consul's default `service:<id>` (or `service:<id>:<n>` with several).
    pub id: Option<String>,
    /// `None` gives `Service '<name>' check`.
    pub name: Option<String>,
    /// Initial status; kept on re-registration when the check ID is unchanged.
    pub status: CheckStatus,
    /// `http`, `tcp`, `ttl`, `script`, `grpc` or `""`.
    pub kind: String,
    pub interval: String,
    pub timeout: String,
    pub output: String,
    pub notes: String,
}

impl CheckSpec {
    /// A check with a default ID and name and the given initial status.
    pub fn new(status: CheckStatus) -> Self {
        CheckSpec {
            id: None,
            name: None,
            status,
            kind: String::new(),
            interval: String::new(),
            timeout: String::new(),
            output: String::new(),
            notes: String::new(),
        }
    }

    /// Sets an explicit check ID (Nomad uses `_nomad-check-<hash>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// A service instance as registered with the agent. Build it with [`ServiceSpec::new`] and
/// the chained setters; the defaults mirror a bare registration (no port, `Meta: null`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub id: String,
    pub name: String,
    /// May be `""`: clients must then dial the node address.
    pub address: String,
    /// 0 means "no port": the field is omitted from health answers.
    pub port: u16,
    pub tags: Vec<String>,
    /// `None` renders as JSON `null`, as Go does for a nil map.
    pub meta: Option<BTreeMap<String, String>>,
    /// Name → (address, port); omitted from answers when empty.
    pub tagged_addresses: BTreeMap<String, (String, u16)>,
    /// `(Passing, Warning)`, default `(1, 1)`.
    pub weights: (u32, u32),
    pub kind: String,
    pub enable_tag_override: bool,
    pub node: String,
    pub node_address: String,
    pub checks: Vec<CheckSpec>,
}

impl ServiceSpec {
    /// An instance on the agent node with no address, port, tags, meta or checks.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceSpec {
            id: id.into(),
            name: name.into(),
            address: String::new(),
            port: 0,
            tags: Vec::new(),
            meta: None,
            tagged_addresses: BTreeMap::new(),
            weights: (1, 1),
            kind: String::new(),
            enable_tag_override: false,
            node: AGENT_NODE.to_string(),
            node_address: AGENT_ADDRESS.to_string(),
            checks: Vec::new(),
        }
    }

    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `Meta` to a map (possibly empty, which renders `{}` rather than `null`).
    pub fn meta<I, K, V>(mut self, pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map = pairs.into_iter().map(|(k, v)| (k.into(), v.into()));
        self.meta = Some(map.collect());
        self
    }

    pub fn tagged_address(mut self, name: &str, address: &str, port: u16) -> Self {
        self.tagged_addresses
            .insert(name.to_string(), (address.to_string(), port));
        self
    }

    pub fn weights(mut self, passing: u32, warning: u32) -> Self {
        self.weights = (passing, warning);
        self
    }

    /// Places the instance on another node (created on first use with `serfHealth` passing).
    pub fn node(mut self, name: impl Into<String>, address: impl Into<String>) -> Self {
        self.node = name.into();
        self.node_address = address.into();
        self
    }

    /// Adds a service check with a default ID and the given initial status.
    pub fn check(mut self, status: CheckStatus) -> Self {
        self.checks.push(CheckSpec::new(status));
        self
    }

    /// Adds a fully specified check.
    pub fn check_spec(mut self, check: CheckSpec) -> Self {
        self.checks.push(check);
        self
    }
}
