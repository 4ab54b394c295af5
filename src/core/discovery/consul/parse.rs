//! Consul health answers → instances. Tolerant where Consul varies (null `Meta`, omitted `Port`,
//! empty `Service.Address`, unknown fields), strict where a guess would route wrongly.

use std::collections::HashMap;

use regex_lite::Regex;
use serde::Deserialize;

use crate::core::Instance;

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "Node")]
    node: Node,
    #[serde(rename = "Service")]
    service: Service,
    #[serde(rename = "Checks", default)]
    checks: Option<Vec<Check>>,
}

#[derive(Debug, Deserialize)]
struct Node {
    #[serde(rename = "Address", default)]
    address: String,
}

#[derive(Debug, Deserialize)]
struct Service {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Tags", default)]
    tags: Option<Vec<String>>,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Port", default)]
    port: u16,
    #[serde(rename = "Meta", default)]
    meta: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct Check {
    #[serde(rename = "CheckID", default)]
    check_id: String,
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "Output", default)]
    output: String,
    #[serde(rename = "Notes", default)]
    notes: String,
}

/// How an instance's version is found: `Service.Meta[meta_key]`, else the first tag matching
/// `tag_pattern`, else `unknown`.
#[derive(Debug, Clone)]
pub struct VersionRule {
    pub meta_key: String,
    pub tag_pattern: Regex,
}

impl VersionRule {
    /// Built from a config's `version_meta_key` and `version_tag_pattern`.
    pub fn new(meta_key: &str, tag_pattern: &str) -> Result<VersionRule, String> {
        Ok(VersionRule {
            meta_key: meta_key.to_string(),
            tag_pattern: Regex::new(tag_pattern)
                .map_err(|e| format!("source.version_tag_pattern: {e}"))?,
        })
    }

    /// The meta value when set, else the first tag matching the pattern, else `unknown`.
    pub fn pick(&self, meta_value: Option<&str>, tags: &[String]) -> String {
        if let Some(v) = meta_value.filter(|v| !v.is_empty()) {
            return v.to_string();
        }
        tags.iter()
            .find(|t| self.is_version_tag(t))
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    }

    pub fn is_version_tag(&self, tag: &str) -> bool {
        self.tag_pattern.is_match(tag)
    }

    fn version(&self, meta: Option<&HashMap<String, String>>, tags: &[String]) -> String {
        let value = meta.and_then(|m| m.get(&self.meta_key)).map(String::as_str);
        self.pick(value, tags)
    }
}

/// Parsed instances, plus the reasons entries were left out.
#[derive(Debug, Default)]
pub struct Parsed {
    pub instances: Vec<Instance>,
    pub skipped: Vec<String>,
}

pub fn health_entries(body: &[u8], versions: &VersionRule) -> Result<Parsed, serde_json::Error> {
    let entries: Option<Vec<Entry>> = serde_json::from_slice(body)?;
    let mut out = Parsed::default();
    for e in entries.unwrap_or_default() {
        let s = e.service;
        // `?passing` filters on the agent; checking again costs nothing and guards against an
        // agent or proxy in between that ignores the parameter.
        if let Some(bad) = e.checks.iter().flatten().find(|c| c.status != "passing") {
            out.skipped.push(format!(
                "{}: check {} is {}",
                s.id, bad.check_id, bad.status
            ));
            continue;
        }
        if s.port == 0 {
            out.skipped
                .push(format!("{}: registered without a port", s.id));
            continue;
        }
        let host = if s.address.is_empty() {
            e.node.address
        } else {
            s.address
        };
        if host.is_empty() {
            out.skipped.push(format!(
                "{}: neither Service.Address nor Node.Address is set",
                s.id
            ));
            continue;
        }
        let address = host_port(&host, s.port);
        let mut tags = s.tags.unwrap_or_default();
        tags.dedup();
        let version = versions.version(s.meta.as_ref(), &tags);
        let hsms = hsms_address(&host, s.meta.as_ref());
        let id = if s.id.is_empty() {
            address.clone()
        } else {
            s.id
        };
        out.instances.push(Instance {
            id,
            address,
            version,
            tags,
            hsms,
        });
    }
    Ok(out)
}

/// The Meta key naming an instance's HSMS port (Nomad: `hsms_port = "${NOMAD_PORT_hsms}"`).
pub const HSMS_PORT_META: &str = "hsms_port";

/// The instance's HSMS address: its host with the port in `Meta.hsms_port`, if that is a port.
fn hsms_address(host: &str, meta: Option<&HashMap<String, String>>) -> Option<String> {
    let port = meta?.get(HSMS_PORT_META)?.trim().parse::<u16>().ok()?;
    (port > 0).then(|| host_port(host, port))
}

/// `host:port`, with an IPv6 host in brackets (`[::1]:8080`) so the port stays unambiguous.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One health entry as Consul reports it, passing or not, for the operator commands' tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEntry {
    /// `Service.ID` as registered (possibly empty).
    pub id: String,
    /// `Service.Address`, else `Node.Address`, with the port (`host:port`, IPv6 bracketed); the
    /// host is empty and the port 0 when Consul has none.
    pub address: String,
    pub tags: Vec<String>,
    pub version: String,
    pub checks: Vec<CheckState>,
}

/// One health check of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    pub check_id: String,
    pub name: Option<String>,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    pub output: String,
    /// For a maintenance check, the reason given.
    pub notes: String,
}

impl CheckState {
    pub fn passing(&self) -> bool {
        self.status == "passing"
    }

    /// The agent's maintenance-mode checks (`consul maint`), for a service or its whole node.
    pub fn is_maintenance(&self) -> bool {
        self.check_id.starts_with("_service_maintenance:") || self.check_id == "_node_maintenance"
    }
}

impl ParsedEntry {
    /// The first check that does not pass, if any.
    pub fn failing_check(&self) -> Option<&CheckState> {
        self.checks.iter().find(|c| !c.passing())
    }

    pub fn passing(&self) -> bool {
        self.failing_check().is_none()
    }
}

/// Every entry of a health answer with its checks, passing or not, nothing skipped: what the
/// operator commands show next to the proxy's view. The watch uses [`health_entries`].
pub fn all_entries(
    body: &[u8],
    versions: &VersionRule,
) -> Result<Vec<ParsedEntry>, serde_json::Error> {
    let entries: Option<Vec<Entry>> = serde_json::from_slice(body)?;
    Ok(entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let s = e.service;
            let host = if s.address.is_empty() {
                e.node.address
            } else {
                s.address
            };
            let tags = s.tags.unwrap_or_default();
            ParsedEntry {
                id: s.id,
                address: host_port(&host, s.port),
                version: versions.version(s.meta.as_ref(), &tags),
                tags,
                checks: e
                    .checks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| CheckState {
                        check_id: c.check_id,
                        name: c.name,
                        status: c.status,
                        output: c.output,
                        notes: c.notes,
                    })
                    .collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> VersionRule {
        VersionRule {
            meta_key: "version".into(),
            tag_pattern: Regex::new(r"^v\d+").unwrap(),
        }
    }

    #[test]
    fn shapes_consul_sends() {
        let body = br#"[
          {"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"a","Service":"web","Tags":["active","v3"],"Address":"","Port":8080,"Meta":null},"Checks":[{"CheckID":"serfHealth","Status":"passing"}],"Extra":1},
          {"Node":{"Address":"10.0.0.2"},"Service":{"ID":"b","Tags":null,"Address":"10.0.0.9","Port":81,"Meta":{"version":"1.4.2"}}},
          {"Node":{"Address":"10.0.0.3"},"Service":{"ID":"c","Tags":["active"],"Address":"fe80::1","Port":82,"Meta":{}}},
          {"Node":{"Address":"10.0.0.4"},"Service":{"ID":"noport","Tags":["active"],"Address":""}},
          {"Node":{"Address":"10.0.0.5"},"Service":{"ID":"warn","Port":9},"Checks":[{"CheckID":"svc","Status":"warning"}]}
        ]"#;
        let p = health_entries(body, &rule()).unwrap();
        let got: Vec<(&str, &str, &str)> = p
            .instances
            .iter()
            .map(|i| (i.id.as_str(), i.address.as_str(), i.version.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "10.0.0.1:8080", "v3"),
                ("b", "10.0.0.9:81", "1.4.2"),
                ("c", "[fe80::1]:82", "unknown"),
            ]
        );
        assert_eq!(p.skipped.len(), 2);
        assert!(p.skipped[0].contains("without a port"));
        assert!(p.skipped[1].contains("warning"));
    }

    #[test]
    fn empty_and_null_and_malformed() {
        assert!(health_entries(b"[]", &rule()).unwrap().instances.is_empty());
        assert!(health_entries(b"null", &rule())
            .unwrap()
            .instances
            .is_empty());
        assert!(health_entries(b"[{\"Node\":", &rule()).is_err());
        assert!(health_entries(b"<html>", &rule()).is_err());
    }

    #[test]
    fn all_entries_keeps_failing_and_incomplete_entries() {
        let body = br#"[
          {"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Tags":["active","v3"],"Address":"","Port":8080},"Checks":[{"CheckID":"serfHealth","Status":"passing"}]},
          {"Node":{"Address":"10.0.0.2"},"Service":{"ID":"b","Tags":null,"Address":"::1","Port":81,"Meta":{"version":"1.4.2"}},"Checks":[{"CheckID":"svc","Name":"http","Status":"critical","Output":"refused"}]},
          {"Node":{"Address":""},"Service":{"ID":"noport"}}
        ]"#;
        let e = all_entries(body, &rule()).unwrap();
        let got: Vec<(&str, &str, &str, bool)> = e
            .iter()
            .map(|e| {
                (
                    e.id.as_str(),
                    e.address.as_str(),
                    e.version.as_str(),
                    e.passing(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "10.0.0.1:8080", "v3", true),
                ("b", "[::1]:81", "1.4.2", false),
                ("noport", ":0", "unknown", true),
            ]
        );
        let bad = e[1].failing_check().unwrap();
        assert_eq!(
            (bad.name.as_deref(), bad.output.as_str()),
            (Some("http"), "refused")
        );
        assert!(all_entries(b"null", &rule()).unwrap().is_empty());
        assert!(all_entries(b"<html>", &rule()).is_err());
    }
}
