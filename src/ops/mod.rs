//! Operator commands: `status`, `switch`, `rollback`, `deploy`, `diagnose`. They read the same
//! config the proxy serves with, so the switch follows the source: the upstreams file, the Consul
//! KV selector, or the tags of the Nomad job. Every refusal says why and changes nothing.

pub mod deploy;
pub mod diagnose;
pub mod http;
pub mod nomad;
pub mod status;
pub mod switch;

use std::time::Duration;

use serde_json::Value;

use crate::config::{
    process_env, ActiveSelector, Config, ConsulAddress, ConsulSourceConfig, SourceConfig,
};
use crate::core::discovery::consul::{self, ConsulClient, VersionRule};

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

fn loopback_for(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The Nomad client from `--nomad-addr`, else `NOMAD_ADDR`, with `NOMAD_TOKEN` and the `NOMAD_*`
/// TLS variables.
pub fn nomad_client(flag: Option<&str>) -> Result<Option<ConsulClient>, String> {
    let Some(addr) = flag
        .map(str::to_string)
        .or_else(|| process_env("NOMAD_ADDR"))
    else {
        return Ok(None);
    };
    let mut cfg = ConsulSourceConfig::from_env("nomad", &|_| None)?;
    cfg.address = ConsulAddress::parse(&addr, false)
        .map_err(|e| format!("--nomad-addr / NOMAD_ADDR: {e}"))?;
    cfg.tls.ca_file = process_env("NOMAD_CACERT").map(Into::into);
    cfg.tls.client_cert = process_env("NOMAD_CLIENT_CERT").map(Into::into);
    cfg.tls.client_key = process_env("NOMAD_CLIENT_KEY").map(Into::into);
    cfg.tls.server_name = process_env("NOMAD_TLS_SERVER_NAME");
    let client =
        consul::client_with_token(&cfg, process_env("NOMAD_TOKEN")).map_err(|e| e.to_string())?;
    Ok(Some(client.nomad()))
}

impl Ctx {
    pub fn new(cfg: Config, t: &Targets, timeout: Duration) -> Result<Ctx, String> {
        let admin = t
            .admin
            .clone()
            .unwrap_or_else(|| loopback_for(cfg.server.admin_listen));
        let proxy = t
            .proxy
            .clone()
            .unwrap_or_else(|| loopback_for(cfg.server.listen));
        let admin_token = cfg.server.admin_token().map_err(|e| e.to_string())?;
        let versions = match &cfg.source {
            SourceConfig::Consul(c) => {
                VersionRule::new(&c.version_meta_key, &c.version_tag_pattern)?
            }
            SourceConfig::File(_) => {
                let d = ConsulSourceConfig::from_env("file", &|_| None)?;
                VersionRule::new(&d.version_meta_key, &d.version_tag_pattern)?
            }
        };
        let (mode, service) = match &cfg.source {
            SourceConfig::File(f) => (Mode::File(f.path.clone()), None),
            SourceConfig::Consul(c) => {
                let client = consul::client(c).map_err(|e| e.to_string())?;
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
            versions,
            timeout,
        })
    }

    /// The proxy's `/status` document.
    pub async fn proxy_status(&self) -> Result<Value, String> {
        let auth = self.admin_token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let a = http::fetch(
            &self.admin,
            ::http::Method::GET,
            "/status",
            &headers,
            bytes::Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| {
            format!("the proxy's admin API: {e} (is zerodown running? pass --admin ADDR)")
        })?;
        if a.status != 200 {
            return Err(format!(
                "the proxy's admin API answered {}: {}",
                a.status,
                a.excerpt(120)
            ));
        }
        serde_json::from_slice(&a.body).map_err(|e| format!("the proxy's /status is not JSON: {e}"))
    }

    /// Every instance of the service in Consul, passing or not (`/v1/health/service/<name>`).
    pub async fn consul_entries(&self) -> Result<Vec<Value>, String> {
        let (Some(c), Some(service)) = (self.mode.consul(), &self.service) else {
            return Ok(Vec::new());
        };
        let r = c
            .get(
                &format!("/v1/health/service/{service}"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(consul::ConsulError::from_status(
                r.status,
                &r.body,
                &format!("service {service}"),
            )
            .to_string());
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("Consul's answer is not JSON: {e}"))
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

pub fn flatten(e: &Value, versions: &VersionRule) -> Entry {
    let s = &e["Service"];
    let host = s["Address"]
        .as_str()
        .filter(|a| !a.is_empty())
        .or_else(|| e["Node"]["Address"].as_str())
        .unwrap_or("");
    let port = s["Port"].as_u64().unwrap_or(0);
    let tags: Vec<String> = s["Tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let version = versions.pick(s["Meta"][versions.meta_key.as_str()].as_str(), &tags);
    let failing = e["Checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["Status"].as_str() != Some("passing"));
    let (health, passing) = match failing {
        None => ("passing".to_string(), true),
        Some(c) => (
            format!(
                "{} {}: {}",
                c["Status"].as_str().unwrap_or("?"),
                c["Name"]
                    .as_str()
                    .or(c["CheckID"].as_str())
                    .unwrap_or("check"),
                c["Output"].as_str().unwrap_or("").trim()
            ),
            false,
        ),
    };
    Entry {
        id: s["ID"].as_str().unwrap_or("").to_string(),
        address: format!("{host}:{port}"),
        tags,
        version,
        health,
        passing,
    }
}

/// Probes an instance: `GET /hello` straight to it.
pub async fn probe(address: &str) -> Result<http::Answer, String> {
    http::get(address, "/hello", Duration::from_secs(3)).await
}

/// Polls the proxy until `check` accepts its `/status`, or the timeout passes.
pub async fn wait_for_proxy(
    ctx: &Ctx,
    what: &str,
    mut check: impl FnMut(&Value) -> bool,
) -> Result<Duration, String> {
    let started = std::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < ctx.timeout {
        match ctx.proxy_status().await {
            Ok(s) if check(&s) => return Ok(started.elapsed()),
            Ok(s) => {
                last = format!(
                    "active serves {}, hold {}",
                    s["pools"]["active"]["version"], s["pools"]["active"]["hold"]
                )
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the proxy did not report {what} within {:?} (last seen: {last})",
        ctx.timeout
    ))
}
