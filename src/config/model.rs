//! The validated configuration's types and their defaults (which `config/zerodown.toml`
//! documents).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::consul::ConsulSourceConfig;
use super::hsms::HsmsConfig;
use super::limits::{Http2Config, LimitsConfig, TlsConfig};

/// Everything the daemon needs, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub http2: Http2Config,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsms: Option<HsmsConfig>,
    pub log: LogConfig,
    pub upstream: UpstreamConfig,
    pub pools: PoolsConfig,
    pub source: SourceConfig,
    /// Services beside the primary one (`[source]` + `[pools]`), each with its own source and pools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    pub routes: Vec<Route>,
}

/// A service beside the primary one: its own pools, gates and switch, from its own source
/// (the primary's Consul connection watching another service, or its own upstreams file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceConfig {
    pub name: String,
    pub source: SourceConfig,
    pub pools: PoolsConfig,
}

/// The name the primary service goes by when the file source has none to give.
pub const DEFAULT_SERVICE: &str = "default";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Answered locally with 200 `healthy`; `None` (an empty string in the file) turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// Worker threads, each running its own current-thread runtime (see [`crate::runtime`]); 0
    /// means one per core.
    pub threads: usize,
    #[serde(serialize_with = "super::duration::serialize")]
    pub drain_timeout: Duration,
    /// Also bounds an idle HTTP/1 keep-alive connection: hyper starts this timer when it waits for a head.
    #[serde(serialize_with = "super::duration::serialize")]
    pub header_timeout: Duration,
    #[serde(serialize_with = "super::duration::serialize")]
    pub keepalive_timeout: Duration,
    /// File holding a bearer token required by `/status`, `/consul-status` and `/metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Unix socket (mode 0600) a successor started with `serve --upgrade` takes the listening
    /// sockets from; off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `zerodown=debug`; `RUST_LOG` wins when set.
    pub level: String,
    pub access_log: bool,
    /// Fraction of successful requests written to the access log; 5xx and aborted ones always are.
    pub access_sample: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamConfig {
    #[serde(serialize_with = "super::duration::serialize")]
    pub connect_timeout: Duration,
    /// From the request sent to the response head received.
    #[serde(serialize_with = "super::duration::serialize")]
    pub response_timeout: Duration,
    /// How long a chunked answer's head is held for its first chunk, so a malformed first chunk
    /// becomes a 502 instead of a truncated 200. A slower first chunk is streamed after the head.
    #[serde(serialize_with = "super::duration::serialize")]
    pub first_chunk_wait: Duration,
    /// Idle pooled connections older than this are closed rather than reused.
    #[serde(serialize_with = "super::duration::serialize")]
    pub idle_timeout: Duration,
    pub max_idle_per_instance: usize,
    /// Instances tried for one request when connecting fails (the request was never sent).
    pub max_attempts: usize,
    /// Consecutive connect failures that eject an instance.
    pub eject_after: u32,
    #[serde(serialize_with = "super::duration::serialize")]
    pub eject_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolsConfig {
    pub active_tag: String,
    pub standby_tag: String,
    /// Route each pool to one version at a time while its candidates hold several.
    pub single_version: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// Built once per (re)load, never on the request path: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum SourceConfig {
    File(FileSourceConfig),
    Consul(ConsulSourceConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileSourceConfig {
    pub path: PathBuf,
    #[serde(serialize_with = "super::duration::serialize")]
    pub poll_interval: Duration,
}

/// Which pool a route sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolName {
    Active,
    Standby,
}

impl PoolName {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolName::Active => "active",
            PoolName::Standby => "standby",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Matched against the request's Host (port and case ignored); `None` matches any host that
    /// no route names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The service this route sends to; `None` is the primary service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Matched on whole path segments: `/standby` matches `/standby` and `/standby/x`, not `/standbyx`.
    pub prefix: String,
    pub pool: PoolName,
    /// Replaces the matched prefix before the request goes upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// Raises (or lowers) `limits.max_body_bytes` for this route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Overrides `limits.body_min_rate` for this route (0: off, e.g. for slow uploaders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_min_rate: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig {
                listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
                admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
                health_path: Some("/health".into()),
                threads: 0,
                drain_timeout: Duration::from_secs(30),
                header_timeout: Duration::from_secs(10),
                keepalive_timeout: Duration::from_secs(75),
                admin_token_file: None,
                upgrade_socket: None,
            },
            limits: LimitsConfig::default(),
            http2: Http2Config::default(),
            tls: None,
            hsms: None,
            log: LogConfig {
                format: LogFormat::Json,
                level: "info".into(),
                access_log: true,
                access_sample: 1.0,
            },
            upstream: UpstreamConfig {
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(60),
                first_chunk_wait: Duration::from_millis(20),
                idle_timeout: Duration::from_secs(60),
                max_idle_per_instance: 256,
                max_attempts: 3,
                eject_after: 3,
                eject_for: Duration::from_secs(10),
            },
            pools: PoolsConfig {
                active_tag: "active".into(),
                standby_tag: "standby".into(),
                single_version: true,
            },
            source: SourceConfig::File(FileSourceConfig {
                path: PathBuf::from("config/upstreams.toml"),
                poll_interval: Duration::from_secs(1),
            }),
            services: Vec::new(),
            routes: default_routes(),
        }
    }
}

/// The routes of the nginx config zerodown replaces.
pub fn default_routes() -> Vec<Route> {
    vec![
        Route {
            rewrite: Some("/hello".into()),
            ..Route::new("/standby", PoolName::Standby)
        },
        Route::new("/", PoolName::Active),
    ]
}

impl Route {
    /// A route of the primary service on any host, with no overrides.
    pub fn new(prefix: &str, pool: PoolName) -> Route {
        Route {
            host: None,
            service: None,
            prefix: prefix.into(),
            pool,
            rewrite: None,
            max_body_bytes: None,
            body_min_rate: None,
        }
    }
}

impl Config {
    /// The primary service's name: the Consul service it watches, else [`DEFAULT_SERVICE`].
    pub fn primary_service(&self) -> &str {
        match &self.source {
            SourceConfig::Consul(c) => &c.service,
            SourceConfig::File(_) => DEFAULT_SERVICE,
        }
    }

    /// Every service's name, the primary first.
    pub fn service_names(&self) -> Vec<&str> {
        std::iter::once(self.primary_service())
            .chain(self.services.iter().map(|s| s.name.as_str()))
            .collect()
    }

    /// This config as seen by one service: its source, pools and routes in the primary's place
    /// (HSMS stays with the primary). `None` when no service has that name.
    pub fn for_service(&self, name: &str) -> Option<Config> {
        let mut view = self.clone();
        view.services.clear();
        if name != self.primary_service() {
            let s = self.services.iter().find(|s| s.name == name)?;
            view.source = s.source.clone();
            view.pools = s.pools.clone();
            view.hsms = None;
        }
        let primary = self.primary_service();
        view.routes
            .retain(|r| r.service.as_deref().unwrap_or(primary) == name);
        for r in &mut view.routes {
            r.service = None;
        }
        Some(view)
    }
}
