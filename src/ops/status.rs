//! `zerodown status`: what the proxy routes to, side by side with what Consul (or the upstreams
//! file) holds, with a live probe of every instance and the answers through the proxy.
//! Disagreements are spelled out with the proxy's reason, and so is every route that fails and
//! every empty pool: the report is healthy only when none is left. `--json` prints the same
//! report.

use std::collections::BTreeSet;
use std::io::IsTerminal;

use serde::Serialize;

use super::{ago, http, probe, Ctx, Entry, Mode};
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
    /// What `hello` and `standby` probed: `/hello` and `/standby` under the default routes, else
    /// the service's first route to each pool (`host/prefix` when it matches a Host).
    pub probed: [String; 2],
    pub disagreements: Vec<String>,
    /// What does not work: a route through the proxy that answers 5xx or not at all, an empty
    /// pool.
    pub problems: Vec<String>,
}

impl Report {
    /// The proxy answered, agrees with its source, serves both routes and has both pools.
    pub fn healthy(&self) -> bool {
        self.proxy_error.is_none() && self.disagreements.is_empty() && self.problems.is_empty()
    }
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
    let targets = [
        ctx.probe_route(crate::config::PoolName::Active),
        ctx.probe_route(crate::config::PoolName::Standby),
    ];
    let mut probes = Vec::new();
    for t in &targets {
        probes.push(match t {
            Some(route) => Some(Probe::from(ctx.through(route).await)),
            None => None,
        });
    }
    if let Some(doc) = &proxy {
        disagreements.extend(compare(ctx, doc, &instances));
    }
    let probed = targets.clone().map(|t| match t {
        Some((path, Some(host))) => format!("{host}{path}"),
        Some((path, None)) => path,
        None => "(no route)".into(),
    });
    let [hello, standby] = [probes.remove(0), probes.remove(0)].map(|p| {
        p.unwrap_or(Probe {
            status: None,
            body: String::new(),
            latency_ms: 0.0,
            error: None,
        })
    });
    let routed: Vec<(&str, &Probe)> = [
        (&probed[0], &hello, &targets[0]),
        (&probed[1], &standby, &targets[1]),
    ]
    .into_iter()
    .filter(|(_, _, t)| t.is_some())
    .map(|(name, p, _)| (name.as_str(), p))
    .collect();
    let problems = problems(proxy.as_ref(), &routed);
    Report {
        mode: ctx.mode.name(),
        proxy,
        proxy_error,
        instances,
        hello,
        standby,
        probed,
        disagreements,
        problems,
    }
}

/// Routes through the proxy that answer 5xx or not at all, and pools without an instance.
fn problems(proxy: Option<&StatusDoc>, routes: &[(&str, &Probe)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, p) in routes {
        match (p.status, &p.error) {
            (Some(s), _) if s >= 500 => {
                out.push(format!("{path} answers {s} through the proxy: {}", p.body))
            }
            (None, Some(e)) => out.push(format!("{path} gets no answer through the proxy: {e}")),
            _ => {}
        }
    }
    if let Some(note) = proxy.and_then(|d| d.source_status.note.as_ref()) {
        out.push(note.clone());
    }
    for (name, pool) in proxy.map(|d| d.pools.named()).into_iter().flatten() {
        if pool.instances.is_empty() {
            let effect = if name == "active" {
                "/hello has no instance to go to"
            } else {
                "there is nothing to switch to"
            };
            out.push(format!("the {name} pool is empty: {effect}"));
        }
    }
    out
}

/// A gate hold in words, with its age.
fn hold_text(h: &HoldDoc) -> String {
    let age = |since: u64| {
        if since == 0 {
            String::new()
        } else {
            format!(", held since {}", ago(since))
        }
    };
    match h {
        HoldDoc::Empty { since } => format!(
            "hold: the source lists no instance, the last set keeps serving{}",
            age(*since)
        ),
        HoldDoc::Version {
            serving,
            waiting,
            since,
        } => format!(
            "hold: {serving} keeps serving while the source also lists {}{}",
            waiting.join(", "),
            age(*since)
        ),
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
                    Some(h) => p.c("33", &format!("  {}", hold_text(h))),
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
    for (path, pr) in [(&r.probed[0], &r.hello), (&r.probed[1], &r.standby)] {
        let line = match (&pr.status, &pr.error) {
            (Some(s), _) => format!("{s} {:.1}ms {}", pr.latency_ms, pr.body),
            (None, Some(e)) => e.clone(),
            _ => "not probed".into(),
        };
        out.push_str(&format!("  {path:<9} {}\n", ok(pr.ok(), &line)));
    }
    out.push('\n');
    if r.healthy() {
        out.push_str(&format!(
            "{}\n",
            p.c(
                "32",
                "proxy and source agree; both pools serve and both routes answer"
            )
        ));
    }
    for d in &r.disagreements {
        out.push_str(&format!("{} {d}\n", p.c("31;1", "DISAGREE")));
    }
    for d in &r.problems {
        out.push_str(&format!("{} {d}\n", p.c("31;1", "PROBLEM")));
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
            probed: ["/hello".into(), "/standby".into()],
            disagreements: vec![
                "active: the source tags active on v2 but the proxy serves v1".into(),
            ],
            problems: vec!["/standby answers 502 through the proxy: bad gateway".into()],
        }
    }

    #[test]
    fn colour_marks_what_is_fine_and_what_is_not() {
        let t = render_with(&report(), true);
        for painted in [
            "\x1b[32m200 1.5ms\x1b[0m",         // a's probe: fine
            "\x1b[32mpassing\x1b[0m",           // a's health
            "\x1b[31mdown\x1b[0m",              // b's probe
            "\x1b[31mcritical\x1b[0m",          // b's health
            "\x1b[31m502 1.5ms",                // /standby through the proxy
            "\x1b[31;1mDISAGREE\x1b[0m",        // the disagreement
            "\x1b[33m  hold: v1 keeps serving", // the gate hold
            "\x1b[31;1mPROBLEM\x1b[0m /standby answers 502",
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
        assert!(!t.contains("agree;"), "{t}");
    }

    fn doc(active: usize, standby: usize) -> StatusDoc {
        let pool = |n: usize| serde_json::json!({"version": "v1", "instances": vec![serde_json::json!({}); n]});
        serde_json::from_value(
            serde_json::json!({"pools": {"active": pool(active), "standby": pool(standby)}}),
        )
        .unwrap()
    }

    #[test]
    fn a_failing_route_or_an_empty_pool_is_a_problem() {
        let ok = probe(Some(200), None);
        let routes = |hello: &Probe| -> Vec<String> {
            problems(Some(&doc(1, 1)), &[("/hello", hello), ("/standby", &ok)])
        };
        assert!(routes(&ok).is_empty());
        assert!(
            routes(&probe(Some(404), None)).is_empty(),
            "a 4xx is the app's answer"
        );
        let p = routes(&probe(Some(503), None));
        assert!(
            p.len() == 1 && p[0].starts_with("/hello answers 503"),
            "{p:?}"
        );
        let p = routes(&probe(None, Some("connection refused")));
        assert!(
            p[0].contains("no answer") && p[0].contains("refused"),
            "{p:?}"
        );
        let p = problems(Some(&doc(0, 1)), &[]);
        assert_eq!(
            p,
            ["the active pool is empty: /hello has no instance to go to"]
        );
        let p = problems(Some(&doc(1, 0)), &[]);
        assert_eq!(
            p,
            ["the standby pool is empty: there is nothing to switch to"]
        );
    }

    #[test]
    fn a_healthy_report_says_so_and_only_then() {
        let mut r = report();
        r.disagreements.clear();
        r.problems.clear();
        assert!(r.healthy());
        assert!(render_with(&r, false).contains("proxy and source agree"));
        r.problems.push("the standby pool is empty".into());
        assert!(!r.healthy());
        assert!(!render_with(&r, false).contains("proxy and source agree"));
    }

    #[test]
    fn a_hold_shows_its_age() {
        let since = super::super::now_ms() - 125_000;
        let t = hold_text(&HoldDoc::Version {
            serving: "v1".into(),
            waiting: vec!["v2".into()],
            since,
        });
        assert_eq!(
            t,
            "hold: v1 keeps serving while the source also lists v2, held since 2m05s ago"
        );
    }
}
