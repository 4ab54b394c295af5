//! `zerodown status`: what the proxy routes to, side by side with what Consul (or the upstreams
//! file) holds, with a live probe of every instance and the answers through the proxy.
//! Disagreements are spelled out with the proxy's reason. `--json` prints the same report.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

use super::{http, json_text, probe, Ctx, Entry, Mode};
use crate::admin::status::{HoldDoc, StatusDoc};

#[derive(Debug, Serialize)]
pub struct Probe {
    pub status: Option<u16>,
    pub body: String,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl Probe {
    fn from(r: Result<http::Answer, http::FetchError>) -> Probe {
        match r {
            Ok(a) => Probe {
                status: Some(a.status),
                body: a.excerpt(60),
                latency_ms: a.latency.as_secs_f64() * 1000.0,
                error: None,
            },
            Err(e) => Probe {
                status: None,
                body: String::new(),
                latency_ms: 0.0,
                error: Some(e.to_string()),
            },
        }
    }

    fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub address: String,
    pub tags: Vec<String>,
    pub version: String,
    pub health: String,
    /// The proxy pool this instance serves in, if any.
    pub proxy_pool: Option<String>,
    pub probe: Probe,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    /// The proxy's `/status`; `null` when it could not be read.
    pub proxy: Option<StatusDoc>,
    pub proxy_error: Option<String>,
    pub instances: Vec<Row>,
    pub hello: Probe,
    pub standby: Probe,
    pub disagreements: Vec<String>,
}

pub async fn report(ctx: &Ctx) -> Report {
    let (proxy, proxy_error) = match ctx.proxy_status().await {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut disagreements = Vec::new();
    let mut entries = source_entries(ctx, &mut disagreements).await;
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    let mut instances = Vec::new();
    for e in entries {
        let p = Probe::from(probe(&e.address).await);
        instances.push(Row {
            proxy_pool: proxy.as_ref().and_then(|d| pool_of(d, &e.id)),
            id: e.id,
            address: e.address,
            tags: e.tags,
            version: e.version,
            health: e.health,
            probe: p,
        });
    }
    let through = |path: &'static str| http::get(&ctx.proxy, path, Duration::from_secs(5));
    let hello = Probe::from(through("/hello").await);
    let standby = Probe::from(through("/standby").await);
    if let Some(doc) = &proxy {
        disagreements.extend(compare(ctx, doc, &instances));
    }
    Report {
        mode: ctx.mode.name(),
        proxy,
        proxy_error,
        instances,
        hello,
        standby,
        disagreements,
    }
}

/// What the source holds: the upstreams file's instances, or Consul's entries. A source that
/// cannot be read is a disagreement and contributes no instance.
async fn source_entries(ctx: &Ctx, disagreements: &mut Vec<String>) -> Vec<Entry> {
    match &ctx.mode {
        Mode::File(path) => match crate::core::discovery::file::load(path) {
            Ok(list) => list
                .into_iter()
                .map(|i| Entry {
                    id: i.id,
                    address: i.address,
                    tags: i.tags,
                    version: i.version,
                    health: "n/a (file source)".into(),
                    passing: true,
                })
                .collect(),
            Err(e) => {
                disagreements.push(format!("the upstreams file cannot be read: {e}"));
                Vec::new()
            }
        },
        _ => ctx.consul_entries().await.unwrap_or_else(|e| {
            disagreements.push(format!("Consul: {e}"));
            Vec::new()
        }),
    }
}

/// The proxy pool that routes to instance `id`, if any.
fn pool_of(doc: &StatusDoc, id: &str) -> Option<String> {
    doc.pools
        .named()
        .into_iter()
        .find(|(_, pool)| pool.instances.iter().any(|i| i.id == id))
        .map(|(name, _)| name.to_string())
}

/// Where the source and the proxy disagree, with the proxy's reason.
fn compare(ctx: &Ctx, proxy: &StatusDoc, rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let tags = [ctx.active_tag(), ctx.standby_tag()];
    for ((pool, doc), tag) in proxy.pools.named().into_iter().zip(tags) {
        let wanted: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.health == "passing" || r.health.starts_with("n/a"))
            .filter(|r| r.tags.iter().any(|t| t.eq_ignore_ascii_case(tag)))
            .map(|r| r.version.as_str())
            .collect();
        let serving = doc.version.as_deref().unwrap_or("none");
        if matches!(ctx.mode, Mode::Kv { .. }) || wanted.is_empty() {
            continue;
        }
        if wanted.len() == 1 && wanted.contains(serving) {
            continue;
        }
        let status = &proxy.source_status;
        let why = match &doc.hold {
            Some(HoldDoc::Version { serving, .. }) => format!(
                "the proxy's single-version gate holds {serving} until none of its instances is tagged {tag} (a flip in progress?)"
            ),
            Some(HoldDoc::Empty { .. }) => "the proxy holds its last set because the source reported none".to_string(),
            None => match &status.last_error {
                Some(e) if status.stale_since_ms.is_some() => format!("the proxy cannot read its source: {e}"),
                _ => "the proxy has not seen the change yet".to_string(),
            },
        };
        out.push(format!(
            "{pool}: the source tags {tag} on {} but the proxy serves {serving}: {why}",
            wanted.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

struct Paint(bool);

impl Paint {
    fn c(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// The human table, coloured on a terminal unless `NO_COLOR` is set (no-color.org).
pub fn render(r: &Report) -> String {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    render_with(r, colour)
}

/// The human table; `colour` adds ANSI colours: green for what is fine, red for what is not,
/// yellow for a gate hold.
pub fn render_with(r: &Report, colour: bool) -> String {
    let p = Paint(colour);
    let mut out = String::new();
    let ok = |b: bool, s: &str| if b { p.c("32", s) } else { p.c("31", s) };
    match &r.proxy_error {
        Some(e) => out.push_str(&format!("proxy: {}\n", p.c("31", e))),
        None => {
            let none = StatusDoc::default();
            for (pool, v) in r.proxy.as_ref().unwrap_or(&none).pools.named() {
                let hold = match &v.hold {
                    Some(h) => p.c("33", &format!("  hold: {} {}", h.kind(), json_text(h))),
                    None => String::new(),
                };
                out.push_str(&format!(
                    "proxy {pool:<8} serves {:<10} {} instance(s){hold}\n",
                    v.version.as_deref().unwrap_or("none"),
                    v.instances.len()
                ));
            }
        }
    }
    out.push_str(&format!("\nsource ({})\n", r.mode));
    out.push_str(&format!(
        "  {:<28} {:<22} {:<18} {:<8} {:<9} {:<8} {}\n",
        "ID", "ADDRESS", "TAGS", "VERSION", "PROXY", "PROBE", "HEALTH / ANSWER"
    ));
    for row in &r.instances {
        let probe = match (row.probe.status, &row.probe.error) {
            (Some(s), _) => ok(s == 200, &format!("{s} {:.1}ms", row.probe.latency_ms)),
            (None, Some(_)) => p.c("31", "down"),
            _ => "?".into(),
        };
        let id: String = row
            .id
            .chars()
            .rev()
            .take(28)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        out.push_str(&format!(
            "  {:<28} {:<22} {:<18} {:<8} {:<9} {:<8} {} | {}\n",
            id,
            row.address,
            row.tags.join(","),
            row.version,
            row.proxy_pool.as_deref().unwrap_or("-"),
            probe,
            ok(
                row.health == "passing" || row.health.starts_with("n/a"),
                &row.health
            ),
            row.probe.error.as_deref().unwrap_or(&row.probe.body)
        ));
    }
    if let Some(h) = r.proxy.as_ref().and_then(|d| d.hsms.as_ref()) {
        out.push_str(&super::hsms::render(h));
    }
    out.push_str("\nthrough the proxy\n");
    for (path, pr) in [("/hello", &r.hello), ("/standby", &r.standby)] {
        let line = match (&pr.status, &pr.error) {
            (Some(s), _) => format!("{s} {:.1}ms {}", pr.latency_ms, pr.body),
            (None, Some(e)) => e.clone(),
            _ => "?".into(),
        };
        out.push_str(&format!("  {path:<9} {}\n", ok(pr.ok(), &line)));
    }
    if r.disagreements.is_empty() {
        out.push_str(&format!("\n{}\n", p.c("32", "proxy and source agree")));
    } else {
        out.push('\n');
        for d in &r.disagreements {
            out.push_str(&format!("{} {d}\n", p.c("31;1", "DISAGREE")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(status: Option<u16>, error: Option<&str>) -> Probe {
        Probe {
            status,
            body: "msg-v1 (version v1)".into(),
            latency_ms: 1.5,
            error: error.map(str::to_string),
        }
    }

    fn report() -> Report {
        Report {
            mode: "file",
            proxy: serde_json::from_value(serde_json::json!({"pools": {
                "active": {"version": "v1", "instances": [{}], "hold": {"kind": "version", "serving": "v1"}},
                "standby": {"version": "v2", "instances": [{}]},
            }}))
            .ok(),
            proxy_error: None,
            instances: vec![
                Row {
                    id: "a".into(),
                    address: "127.0.0.1:1".into(),
                    tags: vec!["active".into()],
                    version: "v1".into(),
                    health: "passing".into(),
                    proxy_pool: Some("active".into()),
                    probe: probe(Some(200), None),
                },
                Row {
                    id: "b".into(),
                    address: "127.0.0.1:2".into(),
                    tags: vec!["standby".into()],
                    version: "v2".into(),
                    health: "critical".into(),
                    proxy_pool: None,
                    probe: probe(None, Some("connection refused")),
                },
            ],
            hello: probe(Some(200), None),
            standby: probe(Some(502), None),
            disagreements: vec![
                "active: the source tags active on v2 but the proxy serves v1".into(),
            ],
        }
    }

    #[test]
    fn colour_marks_what_is_fine_and_what_is_not() {
        let t = render_with(&report(), true);
        for painted in [
            "\x1b[32m200 1.5ms\x1b[0m",  // a's probe: fine
            "\x1b[32mpassing\x1b[0m",    // a's health
            "\x1b[31mdown\x1b[0m",       // b's probe
            "\x1b[31mcritical\x1b[0m",   // b's health
            "\x1b[31m502 1.5ms",         // /standby through the proxy
            "\x1b[31;1mDISAGREE\x1b[0m", // the disagreement
            "\x1b[33m  hold: version",   // the gate hold
        ] {
            assert!(t.contains(painted), "missing {painted:?} in:\n{t}");
        }
    }

    #[test]
    fn without_colour_the_table_has_no_escape_codes() {
        let t = render_with(&report(), false);
        assert!(!t.contains('\x1b'), "{t}");
        assert!(
            t.contains("DISAGREE active: the source tags active on v2"),
            "{t}"
        );
        assert!(t.contains("down") && t.contains("critical"), "{t}");
    }
}
