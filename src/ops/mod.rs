//! Operator commands: `status`, `switch`, `rollback`, `deploy`, `diagnose`. They read the same
//! config the proxy serves with, so the switch follows the source: the upstreams file, the Consul
//! KV selector, or the tags of the Nomad job. Every refusal says why and changes nothing.

pub mod change;
pub mod deploy;
pub mod diagnose;
mod error;
pub mod hsms;
pub mod http;
pub mod nomad;
pub mod record;
pub mod rollback;
pub mod status;
pub mod switch;

use std::time::Duration;

use serde::Serialize;

pub use self::error::{NomadError, OpsError};
use crate::admin::status::StatusDoc;
use crate::config::{
    process_env, ActiveSelector, Config, ConsulAddress, ConsulSourceConfig, SetupError,
    SourceConfig,
};
use crate::core::discovery::consul::{self, ConsulClient, ParsedEntry, VersionRule};

/// How a switch is made, from the source the proxy runs.
pub enum Mode {
    File(std::path::PathBuf),
    Kv {
        consul: ConsulClient,
        key: String,
    },
    Nomad {
        consul: ConsulClient,
        nomad: Option<ConsulClient>,
        job: String,
    },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::File(_) => "file",
            Mode::Kv { .. } => "consul-kv",
            Mode::Nomad { .. } => "nomad-tags",
        }
    }

    pub fn consul(&self) -> Option<&ConsulClient> {
        match self {
            Mode::File(_) => None,
            Mode::Kv { consul, .. } | Mode::Nomad { consul, .. } => Some(consul),
        }
    }
}

/// Everything a command needs.
pub struct Ctx {
    pub cfg: Config,
    pub mode: Mode,
    /// The proxy's admin API, `host:port`.
    pub admin: String,
    pub admin_token: Option<String>,
    /// The proxy's public listener, `host:port`, for end-to-end checks.
    pub proxy: String,
    pub service: Option<String>,
    /// The service of a multi-service proxy this command is about (`/status?service=`); `None`
    /// for the primary one.
    pub status_service: Option<String>,
    /// How an instance's version is read: the proxy's own rule, so both agree.
    pub versions: VersionRule,
    pub timeout: Duration,
}

/// Where to find things, from flags (else config, else the standard variables).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub admin: Option<String>,
    pub proxy: Option<String>,
    pub nomad_addr: Option<String>,
    pub job: Option<String>,
}

pub(crate) fn loopback_for(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The Nomad client from `--nomad-addr`, else `NOMAD_ADDR`, with `NOMAD_TOKEN` and the `NOMAD_*`
/// TLS variables.
pub fn nomad_client(flag: Option<&str>) -> Result<Option<ConsulClient>, OpsError> {
    let Some(addr) = flag
        .map(str::to_string)
        .or_else(|| process_env("NOMAD_ADDR"))
    else {
        return Ok(None);
    };
    let mut cfg = ConsulSourceConfig::from_env("nomad", &|_| None).map_err(OpsError::Usage)?;
    cfg.address = ConsulAddress::parse(&addr, false)
        .map_err(|e| OpsError::Usage(format!("--nomad-addr / NOMAD_ADDR: {e}")))?;
    cfg.tls.ca_file = process_env("NOMAD_CACERT").map(Into::into);
    cfg.tls.client_cert = process_env("NOMAD_CLIENT_CERT").map(Into::into);
    cfg.tls.client_key = process_env("NOMAD_CLIENT_KEY").map(Into::into);
    cfg.tls.server_name = process_env("NOMAD_TLS_SERVER_NAME");
    let client = consul::client_with_token(&cfg, process_env("NOMAD_TOKEN"))?;
    Ok(Some(client.nomad()))
}

impl Ctx {
    pub fn new(cfg: Config, t: &Targets, timeout: Duration) -> Result<Ctx, OpsError> {
        let admin = t
            .admin
            .clone()
            .unwrap_or_else(|| loopback_for(cfg.server.admin_listen));
        let proxy = t
            .proxy
            .clone()
            .unwrap_or_else(|| loopback_for(cfg.server.listen));
        let admin_token = cfg.server.admin_token()?;
        let versions = match &cfg.source {
            SourceConfig::Consul(c) => version_rule(c)?,
            SourceConfig::File(_) => version_rule(
                &ConsulSourceConfig::from_env("file", &|_| None).map_err(OpsError::Usage)?,
            )?,
        };
        let (mode, service) = match &cfg.source {
            SourceConfig::File(f) => (Mode::File(f.path.clone()), None),
            SourceConfig::Consul(c) => {
                let client = consul::client(c)?;
                let mode = match c.active_selector {
                    ActiveSelector::Kv => Mode::Kv {
                        consul: client,
                        key: c.kv_key.clone(),
                    },
                    ActiveSelector::Tags => Mode::Nomad {
                        consul: client,
                        nomad: nomad_client(t.nomad_addr.as_deref())?,
                        job: t.job.clone().unwrap_or_else(|| c.service.clone()),
                    },
                };
                (mode, Some(c.service.clone()))
            }
        };
        Ok(Ctx {
            cfg,
            mode,
            admin,
            admin_token,
            proxy,
            service,
            status_service: None,
            versions,
            timeout,
        })
    }

    /// The proxy's `/status` document.
    pub async fn proxy_status(&self) -> Result<StatusDoc, OpsError> {
        let auth = self.admin_token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let path = match &self.status_service {
            Some(s) => format!("/status?service={s}"),
            None => "/status".to_string(),
        };
        let a = http::fetch(
            &self.admin,
            ::http::Method::GET,
            &path,
            &headers,
            bytes::Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        .map_err(|error| OpsError::AdminUnreachable { error })?;
        if a.status != 200 {
            return Err(OpsError::AdminStatus {
                status: a.status,
                excerpt: a.excerpt(120),
            });
        }
        serde_json::from_slice(&a.body).map_err(|error| OpsError::StatusDocument { error })
    }

    /// Every instance of the service in Consul, passing or not (`/v1/health/service/<name>`).
    pub async fn consul_entries(&self) -> Result<Vec<Entry>, OpsError> {
        let (Some(c), Some(service)) = (self.mode.consul(), &self.service) else {
            return Ok(Vec::new());
        };
        let r = c
            .get(
                &format!("/v1/health/service/{service}"),
                Duration::from_secs(10),
            )
            .await?;
        if r.status != 200 {
            return Err(consul::ConsulError::from_status(
                r.status,
                &r.body,
                &format!("service {service}"),
            )
            .into());
        }
        entries(&r.body, &self.versions).map_err(OpsError::ConsulAnswer)
    }

    /// The (path, Host) to probe a pool through the proxy: `/hello` and `/standby` under the
    /// default routes, else the service's first route to that pool; `None` when no route sends
    /// there.
    pub fn probe_route(&self, pool: crate::config::PoolName) -> Option<(String, Option<String>)> {
        if self.cfg.routes == crate::config::default_routes() {
            let path = match pool {
                crate::config::PoolName::Active => "/hello",
                crate::config::PoolName::Standby => "/standby",
            };
            return Some((path.to_string(), None));
        }
        let r = self.cfg.routes.iter().find(|r| r.pool == pool)?;
        Some((r.prefix.clone(), r.host.clone()))
    }

    /// GET `route` (a [`Ctx::probe_route`]) through the proxy, with its Host when it has one.
    pub async fn through(
        &self,
        (path, host): &(String, Option<String>),
    ) -> Result<http::Answer, http::FetchError> {
        let headers: Vec<(&str, &str)> = host.iter().map(|h| ("host", h.as_str())).collect();
        let (method, body) = (::http::Method::GET, bytes::Bytes::new());
        http::fetch(
            &self.proxy,
            method,
            path,
            &headers,
            body,
            Duration::from_secs(5),
        )
        .await
    }

    pub fn active_tag(&self) -> &str {
        &self.cfg.pools.active_tag
    }

    pub fn standby_tag(&self) -> &str {
        &self.cfg.pools.standby_tag
    }
}

/// One Consul entry, flattened for tables and checks.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub address: String,
    pub tags: Vec<String>,
    pub version: String,
    /// `passing`, or the first failing check's status and output.
    pub health: String,
    pub passing: bool,
}

impl From<ParsedEntry> for Entry {
    fn from(e: ParsedEntry) -> Entry {
        let (health, passing) = match e.failing_check() {
            None => ("passing".to_string(), true),
            Some(c) if c.is_maintenance() => {
                let reason = c.notes.trim();
                let reason = if reason.is_empty() {
                    "no reason given"
                } else {
                    reason
                };
                (format!("maintenance ({reason})"), false)
            }
            Some(c) => {
                let status = if c.status.is_empty() { "?" } else { &c.status };
                let name = match (&c.name, c.check_id.as_str()) {
                    (Some(name), _) => name.as_str(),
                    (None, "") => "check",
                    (None, id) => id,
                };
                (format!("{status} {name}: {}", c.output.trim()), false)
            }
        };
        Entry {
            id: e.id,
            address: e.address,
            tags: e.tags,
            version: e.version,
            health,
            passing,
        }
    }
}

/// A Consul health answer as entries, passing or not.
pub fn entries(body: &[u8], versions: &VersionRule) -> Result<Vec<Entry>, serde_json::Error> {
    Ok(consul::all_entries(body, versions)?
        .into_iter()
        .map(Entry::from)
        .collect())
}

/// The version rule a Consul source config names.
fn version_rule(c: &ConsulSourceConfig) -> Result<VersionRule, SetupError> {
    VersionRule::new(&c.version_meta_key, &c.version_tag_pattern)
        .map_err(|e| SetupError::setting("source.version_tag_pattern", e))
}

/// A value as compact JSON (`null`, `"v1"`, `{"kind":…}`), the way messages quote the proxy's
/// document.
pub(crate) fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Now, in Unix milliseconds (the unit of `/status` times).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long ago a Unix-milliseconds time was, as `3m12s ago`.
pub fn ago(at_ms: u64) -> String {
    let secs = now_ms().saturating_sub(at_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m{:02}s ago", secs / 60, secs % 60),
        _ => format!("{}h{:02}m ago", secs / 3600, secs % 3600 / 60),
    }
}

/// Probes an instance: `GET /hello` straight to it.
pub async fn probe(address: &str) -> Result<http::Answer, http::FetchError> {
    http::get(address, "/hello", Duration::from_secs(3)).await
}

/// Polls the proxy until `check` accepts its `/status`, or the timeout passes.
pub async fn wait_for_proxy(
    ctx: &Ctx,
    what: &str,
    mut check: impl FnMut(&StatusDoc) -> bool,
) -> Result<Duration, OpsError> {
    let started = std::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < ctx.timeout {
        match ctx.proxy_status().await {
            Ok(s) if check(&s) => return Ok(started.elapsed()),
            Ok(s) => {
                last = format!(
                    "active serves {}, hold {}",
                    json_text(&s.pools.active.version),
                    json_text(&s.pools.active.hold)
                )
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(OpsError::NotConverged {
        what: what.to_string(),
        timeout: ctx.timeout,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> VersionRule {
        VersionRule::new("version", r"^v\d+").unwrap()
    }

    #[test]
    fn ages_read_in_the_largest_sensible_unit() {
        let now = now_ms();
        assert_eq!(ago(now - 5_000), "5s ago");
        assert_eq!(ago(now - 192_000), "3m12s ago");
        assert_eq!(ago(now - 7_500_000), "2h05m ago");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let body = br#"[
          {"Node":{"Address":"fe80::2"},"Service":{"ID":"a","Tags":["active"],"Address":"::1","Port":8080,"Meta":{"version":"v1"}}},
          {"Node":{"Address":"fe80::2"},"Service":{"ID":"b","Tags":["standby","v2"],"Address":"","Port":8081}},
          {"Node":{"Address":"10.0.0.1"},"Service":{"ID":"c","Tags":[],"Address":"[::3]","Port":80}}
        ]"#;
        let got: Vec<(String, String)> = entries(body, &rule())
            .unwrap()
            .into_iter()
            .map(|e| (e.address, e.version))
            .collect();
        assert_eq!(
            got,
            [
                ("[::1]:8080".into(), "v1".into()),
                ("[fe80::2]:8081".into(), "v2".into()),
                ("[::3]:80".into(), "unknown".into()),
            ]
        );
    }

    #[test]
    fn an_entry_names_its_first_failing_check() {
        let body = br#"[
          {"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Port":80},"Checks":[
            {"CheckID":"serfHealth","Name":"Serf","Status":"passing"},
            {"CheckID":"svc","Status":"critical","Output":" refused \n"},
            {"CheckID":"other","Name":"Other","Status":"warning"}]},
          {"Node":{"Address":"10.0.0.2"},"Service":{"ID":"b","Port":80},"Checks":null}
        ]"#;
        let e = entries(body, &rule()).unwrap();
        assert_eq!(
            (e[0].health.as_str(), e[0].passing),
            ("critical svc: refused", false)
        );
        assert_eq!((e[1].health.as_str(), e[1].passing), ("passing", true));
    }
}
