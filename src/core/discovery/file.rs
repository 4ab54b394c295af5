//! The `file` source: instances listed in a TOML file, re-read when its content changes. Polling
//! (rather than inotify) sees every way editors and tools replace a file, including rename-over and
//! bind mounts; the file is small, so reading it each interval is cheap.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use serde::Deserialize;
use toml::Spanned;
use tracing::Instrument;

use super::source::{split_by_tags, Reports, UpstreamSource};
use crate::config::{ConfigError, FileSourceConfig, PoolsConfig, TextSource};
use crate::core::{Candidates, Instance, SourceInfo};
use crate::telemetry::metrics::Lv;

/// The upstreams file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamsFile {
    #[serde(default)]
    instances: Vec<InstanceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceEntry {
    id: Option<String>,
    address: Spanned<String>,
    #[serde(default)]
    tags: Vec<String>,
    version: Option<String>,
    /// The instance's HSMS listener, `HOST:PORT`.
    hsms: Option<Spanned<String>>,
}

/// Parses and checks an upstreams file; errors name the file, line and key.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Instance>, ConfigError> {
    let src = TextSource { origin, text };
    let raw: UpstreamsFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    let mut out: Vec<Instance> = Vec::with_capacity(raw.instances.len());
    let mut ids = std::collections::HashSet::with_capacity(raw.instances.len());
    for e in raw.instances {
        let address = host_port(&src, &e.address, "instances.address", "127.0.0.1:9001")?;
        let hsms = e
            .hsms
            .as_ref()
            .map(|h| host_port(&src, h, "instances.hsms", "127.0.0.1:5001"))
            .transpose()?;
        let id = e.id.unwrap_or_else(|| address.clone());
        if !ids.insert(id.clone()) {
            return Err(src.at(
                Some(e.address.span()),
                format!("instances.id: {id:?} is listed twice: give each instance its own id"),
            ));
        }
        out.push(Instance {
            id,
            address,
            version: e.version.unwrap_or_else(|| "unknown".into()),
            tags: e.tags,
            hsms,
        });
    }
    Ok(out)
}

/// A `HOST:PORT` value, trimmed; the error names the key and shows an example.
fn host_port(
    src: &TextSource,
    v: &Spanned<String>,
    key: &str,
    example: &str,
) -> Result<String, ConfigError> {
    let address = v.get_ref().trim().to_string();
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return Err(src.at(
            Some(v.span()),
            format!("{key}: {address:?} is not HOST:PORT (e.g. \"{example}\")"),
        ));
    }
    Ok(address)
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Vec<Instance>, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        origin: origin.clone(),
        source,
    })?;
    parse(&text, &origin)
}

pub struct FileSource {
    cfg: FileSourceConfig,
    pools: PoolsConfig,
}

impl FileSource {
    pub fn new(cfg: FileSourceConfig, pools: PoolsConfig) -> FileSource {
        FileSource { cfg, pools }
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "file",
            origin: self.cfg.path.display().to_string(),
            index: None,
        }
    }
}

impl UpstreamSource for FileSource {
    fn run(self: Box<Self>, out: Reports) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let span = tracing::info_span!("watch", file = %self.cfg.path.display());
        Box::pin(async move {
            let path: PathBuf = self.cfg.path.clone();
            out.status.reset("file", path.display().to_string());
            let label = [
                ("service", out.publisher.service_label().clone()),
                ("watch", Lv::S("file")),
            ];
            let _ = out.metrics.watch_errors.get_or_create(&label);
            let mut last_text: Option<(String, bool)> = None;
            let mut tick = tokio::time::interval(self.cfg.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                out.metrics.watch_requests.get_or_create(&label).inc();
                let started = std::time::Instant::now();
                let read = tokio::fs::read_to_string(&path).await;
                out.metrics
                    .watch_duration
                    .get_or_create(&label)
                    .observe(started.elapsed().as_secs_f64());
                let text = match read {
                    Ok(t) => t,
                    Err(e) => {
                        out.metrics.watch_errors.get_or_create(&label).inc();
                        let msg =
                            format!("{}: cannot read the upstreams file: {e}", path.display());
                        if out.status.error(&msg) {
                            tracing::error!(target: "zerodown::source", source = "file", error = %msg, "upstreams file unreadable: the current pools keep serving");
                        }
                        continue;
                    }
                };
                // Unchanged text keeps the verdict it had; a valid one still counts as a good read
                // (e.g. after the file was briefly missing).
                if let Some((seen, valid)) = &last_text {
                    if *seen == text {
                        if *valid && out.status.ok(None) > 0 {
                            tracing::info!(target: "zerodown::source", source = "file", "upstreams file readable again");
                        }
                        continue;
                    }
                }
                let valid = match parse(&text, &path.display().to_string()) {
                    Ok(instances) => {
                        if out.status.ok(None) > 0 {
                            tracing::info!(target: "zerodown::source", source = "file", "upstreams file valid again");
                        }
                        let (active, standby) = split_by_tags(instances, &self.pools);
                        out.publisher.offer(Candidates {
                            active,
                            standby,
                            source: self.info(),
                        });
                        true
                    }
                    Err(e) => {
                        out.metrics.watch_errors.get_or_create(&label).inc();
                        let msg = e.to_string();
                        if out.status.error(&msg) {
                            tracing::error!(target: "zerodown::source", source = "file", error = %msg, "upstreams file rejected: the current pools keep serving");
                        }
                        false
                    }
                };
                last_text = Some((text, valid));
            }
        }
        .instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_instances_with_defaults() {
        let text = "[[instances]]\naddress = \"127.0.0.1:9001\"\ntags = [\"active\"]\nversion = \"v1\"\n\n[[instances]]\nid = \"b\"\naddress = \"localhost:9002\"\n";
        let v = parse(text, "u.toml").unwrap();
        assert_eq!(v[0].id, "127.0.0.1:9001");
        assert_eq!(v[1].version, "unknown");
        assert!(v[1].tags.is_empty());
    }

    #[test]
    fn bad_address_names_line_and_key() {
        let text = "[[instances]]\naddress = \"127.0.0.1\"\n";
        let e = parse(text, "u.toml").unwrap_err().to_string();
        assert!(e.starts_with("u.toml:2:"), "{e}");
        assert!(e.contains("instances.address"), "{e}");
    }
}
