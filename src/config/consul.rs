//! The `consul` source's settings: file keys first, then the standard `CONSUL_*` variables, then
//! defaults. The ACL token itself is never stored here (so `check-config` cannot print it): the
//! source reads it from `token_file`, `CONSUL_HTTP_TOKEN_FILE` or `CONSUL_HTTP_TOKEN` when it starts.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Where Consul listens, split out of `CONSUL_HTTP_ADDR`-style URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsulAddress {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// A path suffix of the address becomes a prefix of every API path (as in the Go client).
    pub path_prefix: String,
}

impl std::fmt::Display for ConsulAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path_prefix)
    }
}

impl ConsulAddress {
    /// Parses `http://host:port[/prefix]`, `https://…` or bare `host:port` (https when `ssl`).
    pub fn parse(text: &str, ssl: bool) -> Result<ConsulAddress, String> {
        let text = text.trim();
        let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else if text.starts_with("unix://") {
            return Err(format!(
                "{text:?}: unix sockets are not supported; give an http:// or https:// address"
            ));
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "{text:?}: unknown scheme {scheme:?} (use http:// or https://)"
            ));
        } else {
            (ssl, text)
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let default_port = if https { 8501 } else { 8500 };
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, after) = h
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed '[' in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p, text)?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(p, text)?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!(
                "{text:?}: no host (write e.g. \"http://127.0.0.1:8500\")"
            ));
        }
        Ok(ConsulAddress {
            https,
            host,
            port,
            path_prefix: path.to_string(),
        })
    }
}

fn parse_port(p: &str, text: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?}: invalid port {p:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Default,
    Stale,
}

/// How instances are split into the active and standby pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveSelector {
    /// By the `active` / `standby` tags (Nomad tag flips).
    Tags,
    /// By a Consul KV key naming the active group (one atomic write switches every proxy).
    Kv,
}

/// TLS settings for https addresses; unset files fall back to the system roots / no client cert.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ConsulTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsulSourceConfig {
    #[serde(serialize_with = "ser_display")]
    pub address: ConsulAddress,
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    pub consistency: Consistency,
    /// `?cached`: the local agent answers the service watch from its cache (background refresh).
    pub cached: bool,
    #[serde(serialize_with = "super::duration::serialize")]
    pub wait: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    pub tls: ConsulTls,
    pub version_meta_key: String,
    pub version_tag_pattern: String,
    pub active_selector: ActiveSelector,
    pub kv_key: String,
    /// Upper bound of the error backoff (full jitter, doubling from 250 ms).
    #[serde(serialize_with = "super::duration::serialize")]
    pub retry_max: Duration,
    /// Token-bucket refill interval (burst 2): the fastest the watch loop polls under churn.
    #[serde(serialize_with = "super::duration::serialize")]
    pub min_interval: Duration,
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Reads a variable of the process environment; a seam so tests can pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ConsulSourceConfig {
    /// Defaults for `service`, with the `CONSUL_*` variables applied.
    pub fn from_env(service: &str, env: Env) -> Result<ConsulSourceConfig, String> {
        let ssl = env("CONSUL_HTTP_SSL")
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "True"));
        let address = match env("CONSUL_HTTP_ADDR") {
            Some(a) => {
                ConsulAddress::parse(&a, ssl).map_err(|e| format!("CONSUL_HTTP_ADDR: {e}"))?
            }
            None => ConsulAddress::parse("127.0.0.1:8500", ssl)?,
        };
        Ok(ConsulSourceConfig {
            address,
            service: service.to_string(),
            datacenter: None,
            consistency: Consistency::Default,
            cached: false,
            wait: Duration::from_secs(300),
            token_file: None,
            tls: ConsulTls {
                ca_file: env("CONSUL_CACERT").map(PathBuf::from),
                client_cert: env("CONSUL_CLIENT_CERT").map(PathBuf::from),
                client_key: env("CONSUL_CLIENT_KEY").map(PathBuf::from),
                server_name: env("CONSUL_TLS_SERVER_NAME"),
            },
            version_meta_key: "version".into(),
            version_tag_pattern: r"^v\d+".into(),
            active_selector: ActiveSelector::Tags,
            kv_key: format!("zerodown/{service}/active"),
            retry_max: Duration::from_secs(30),
            min_interval: Duration::from_millis(250),
        })
    }

    /// The client timeout of one blocking call: `wait + wait/16` of server jitter, plus 10 s for the
    /// agent→server hop.
    pub fn request_timeout(&self) -> Duration {
        self.wait + self.wait / 16 + Duration::from_secs(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_like_the_go_client() {
        let a = ConsulAddress::parse("http://10.0.0.1:8500", false).unwrap();
        assert_eq!(
            (a.https, a.host.as_str(), a.port),
            (false, "10.0.0.1", 8500)
        );
        let a = ConsulAddress::parse("consul.service:8501", true).unwrap();
        assert!(a.https);
        let a = ConsulAddress::parse("https://[::1]:9000/consul/", false).unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.path_prefix.as_str()),
            ("::1", 9000, "/consul")
        );
        assert_eq!(a.to_string(), "https://[::1]:9000/consul");
        assert!(ConsulAddress::parse("unix:///tmp/consul.sock", false)
            .unwrap_err()
            .contains("unix"));
        assert!(ConsulAddress::parse("ftp://x", false)
            .unwrap_err()
            .contains("scheme"));
        assert!(ConsulAddress::parse("http://x:0", false)
            .unwrap_err()
            .contains("port"));
    }

    #[test]
    fn environment_fills_defaults() {
        let env = |k: &str| match k {
            "CONSUL_HTTP_ADDR" => Some("consul:8501".to_string()),
            "CONSUL_HTTP_SSL" => Some("true".to_string()),
            "CONSUL_CACERT" => Some("/etc/ca.pem".to_string()),
            _ => None,
        };
        let c = ConsulSourceConfig::from_env("hello-service", &env).unwrap();
        assert_eq!(c.address.to_string(), "https://consul:8501");
        assert_eq!(c.tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.kv_key, "zerodown/hello-service/active");
        assert_eq!(
            c.request_timeout(),
            Duration::from_millis(300_000 + 18_750 + 10_000)
        );
    }
}
