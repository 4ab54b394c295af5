//! The config file's format, exactly as written by operators. Every key is optional (defaults live in
//! `Config::default`); unknown keys are refused so a typo cannot silently keep a default.
//! Values that need checking are `Spanned` so the error can name their line.

use serde::Deserialize;
use toml::Spanned;

type Opt<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub pools: PoolsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub http2: Http2Section,
    pub tls: Option<Spanned<TlsSection>>,
    pub hsms: Option<HsmsSection>,
    pub source: Option<SourceSection>,
    pub routes: Option<Spanned<Vec<RouteSection>>>,
    pub services: Option<Vec<ServiceSection>>,
}

/// `[[services]]`: a service beside the primary one; unset keys follow `[source]` and `[pools]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub name: Spanned<String>,
    /// Its upstreams file (a file source needs one per service).
    pub path: Opt<String>,
    /// Its Consul KV selector key (default `zerodown/<name>/active`).
    pub kv_key: Opt<String>,
    pub active_tag: Opt<String>,
    pub standby_tag: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Opt<String>,
    pub admin_listen: Opt<String>,
    pub health_path: Opt<String>,
    pub threads: Opt<usize>,
    pub drain_timeout: Opt<String>,
    pub header_timeout: Opt<String>,
    pub keepalive_timeout: Opt<String>,
    pub admin_token_file: Opt<String>,
    pub upgrade_socket: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_header_bytes: Opt<usize>,
    pub max_headers: Opt<usize>,
    pub max_body_bytes: Opt<u64>,
    pub max_upstream_header_bytes: Opt<usize>,
    pub max_connections: Opt<usize>,
    pub connection_wait: Opt<String>,
    pub body_idle_timeout: Opt<String>,
    pub body_timeout: Opt<String>,
    pub body_min_rate: Opt<u64>,
    pub body_min_rate_grace: Opt<String>,
    pub max_requests_per_connection: Opt<u64>,
    pub max_connection_age: Opt<String>,
    pub underscore_headers: Opt<String>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Section {
    pub max_concurrent_streams: Opt<u32>,
    pub max_pending_accept_reset_streams: Opt<usize>,
    pub max_local_error_reset_streams: Opt<usize>,
    pub max_header_list_size: Opt<u32>,
    pub initial_stream_window_size: Opt<u32>,
    pub initial_connection_window_size: Opt<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Spanned<String>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Opt<String>,
    pub level: Opt<String>,
    pub access_log: Opt<bool>,
    pub access_sample: Opt<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub connect_timeout: Opt<String>,
    pub response_timeout: Opt<String>,
    pub first_chunk_wait: Opt<String>,
    pub idle_timeout: Opt<String>,
    pub max_idle_per_instance: Opt<usize>,
    pub max_attempts: Opt<usize>,
    pub eject_after: Opt<u32>,
    pub eject_for: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmsSection {
    pub listen: Opt<String>,
    pub mode: Opt<String>,
    pub t3: Opt<String>,
    pub t6: Opt<String>,
    pub t7: Opt<String>,
    pub t8: Opt<String>,
    pub drain_bound: Opt<String>,
    pub max_message_bytes: Opt<u32>,
    pub max_sessions: Opt<usize>,
    pub max_queued: Opt<usize>,
    pub tcp_drain: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolsSection {
    pub active_tag: Opt<String>,
    pub standby_tag: Opt<String>,
    pub single_version: Opt<bool>,
}

/// One flat table for every source kind: serde's tagged enums lose spans, and a flat table lets the
/// error say "key `x` does not apply to kind = \"file\"".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub kind: Opt<String>,
    // file
    pub path: Opt<String>,
    pub poll_interval: Opt<String>,
    // consul
    pub address: Opt<String>,
    pub service: Opt<String>,
    pub datacenter: Opt<String>,
    pub consistency: Opt<String>,
    pub cached: Opt<bool>,
    pub wait: Opt<String>,
    pub token_file: Opt<String>,
    pub version_meta_key: Opt<String>,
    pub version_tag_pattern: Opt<String>,
    pub active_selector: Opt<String>,
    pub kv_key: Opt<String>,
    pub ca_file: Opt<String>,
    pub client_cert: Opt<String>,
    pub client_key: Opt<String>,
    pub tls_server_name: Opt<String>,
    pub retry_max: Opt<String>,
    pub min_interval: Opt<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub host: Opt<String>,
    pub service: Opt<String>,
    pub prefix: Spanned<String>,
    pub pool: Spanned<String>,
    pub rewrite: Opt<String>,
    pub max_body_bytes: Opt<u64>,
    pub body_min_rate: Opt<u64>,
}
