//! `zerodown diagnose`: checks every link in order — config, Consul, the service, its instances and
//! health, the proxy, the proxy's pools against the source, Nomad — and never stops at the first
//! failure. Each failure names the likely cause and the command that fixes it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{json_text, probe, Ctx, Entry, Mode};

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &'static str, ok: bool, detail: String, fix: Option<String>) -> Check {
    Check {
        name,
        ok,
        detail,
        fix: if ok { None } else { fix },
    }
}

pub async fn run(ctx: &Ctx) -> Vec<Check> {
    let mut out = vec![check(
        "config",
        true,
        format!("valid; switches through {}", ctx.mode.name()),
        None,
    )];
    let mut entries: Vec<Entry> = Vec::new();
    match &ctx.mode {
        Mode::File(path) => match crate::core::discovery::file::load(path) {
            Ok(list) => {
                out.push(check(
                    "upstreams file",
                    true,
                    format!("{} lists {} instance(s)", path.display(), list.len()),
                    None,
                ));
                entries = list
                    .into_iter()
                    .map(|i| Entry {
                        id: i.id,
                        address: i.address,
                        tags: i.tags,
                        version: i.version,
                        health: "n/a".into(),
                        passing: true,
                    })
                    .collect();
            }
            Err(e) => out.push(check(
                "upstreams file",
                false,
                e.to_string(),
                Some("fix the file; the proxy keeps its last good pools meanwhile".to_string()),
            )),
        },
        _ => {
            let c = ctx.mode.consul().expect("consul modes have a client");
            let service = ctx.service.clone().unwrap_or_default();
            match c.get(&format!("/v1/health/service/{service}"), Duration::from_secs(10)).await {
                Err(e) => out.push(check(
                    "consul",
                    false,
                    e.to_string(),
                    Some(format!("is the Consul agent running at {}? (consul members); set CONSUL_HTTP_ADDR or --consul-addr", c.address())),
                )),
                Ok(r) if r.status == 403 => out.push(check(
                    "consul",
                    false,
                    crate::core::discovery::consul::ConsulError::from_status(r.status, &r.body, &format!("service {service}")).to_string(),
                    Some("export CONSUL_HTTP_TOKEN=<a token with service:read> (or CONSUL_HTTP_TOKEN_FILE)".into()),
                )),
                Ok(r) if r.status != 200 => out.push(check(
                    "consul",
                    false,
                    crate::core::discovery::consul::ConsulError::from_status(r.status, &r.body, &format!("service {service}")).to_string(),
                    Some("consul operator raft list-peers (is there a leader?); consul monitor".into()),
                )),
                Ok(r) => {
                    let leader = r.known_leader != Some(false);
                    out.push(check(
                        "consul",
                        leader,
                        format!("reachable at {}, token accepted, leader {}", c.address(), if leader { "known" } else { "UNKNOWN" }),
                        Some("Consul has no leader: consul operator raft list-peers; or set source.consistency = \"stale\"".into()),
                    ));
                    entries = super::entries(&r.body, &ctx.versions).unwrap_or_default();
                    out.push(check(
                        "service registered",
                        !entries.is_empty(),
                        format!("{service}: {} instance(s) in Consul", entries.len()),
                        Some(format!("nothing is registered as {service}: nomad job run config/nomad/hello-service.nomad.hcl (or check --service)")),
                    ));
                }
            }
        }
    }
    if !entries.is_empty() {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for e in &entries {
            let pool = if e
                .tags
                .iter()
                .any(|t| t.eq_ignore_ascii_case(ctx.active_tag()))
            {
                "active"
            } else if e
                .tags
                .iter()
                .any(|t| t.eq_ignore_ascii_case(ctx.standby_tag()))
            {
                "standby"
            } else {
                "untagged"
            };
            *by.entry(format!("{pool} {}", e.version)).or_default() += 1;
        }
        let summary: Vec<String> = by.iter().map(|(k, n)| format!("{k}×{n}")).collect();
        let active_versions = by.keys().filter(|k| k.starts_with("active ")).count();
        out.push(check(
            "instances per tag and version",
            active_versions == 1 || matches!(ctx.mode, Mode::Kv { .. }),
            summary.join(", "),
            Some(if active_versions == 0 {
                "no instance is tagged active: zerodown switch, or fix the job's tags".into()
            } else {
                "several versions are tagged active (a flip in progress, or a bad job): zerodown status; the proxy's single-version gate keeps serving one".into()
            }),
        ));
        let failing: Vec<String> = entries
            .iter()
            .filter(|e| !e.passing)
            .map(|e| format!("{} {}: {}", e.id, e.address, e.health))
            .collect();
        out.push(check(
            "health checks",
            failing.is_empty(),
            if failing.is_empty() { "all passing".into() } else { failing.join("; ") },
            Some("the instances above fail their checks: nomad alloc logs <alloc>; consul watch -type=checks".into()),
        ));
        let mut down = Vec::new();
        for e in &entries {
            match probe(&e.address).await {
                Ok(a) if a.status == 200 => {}
                Ok(a) => down.push(format!("{} answered {}", e.address, a.status)),
                Err(err) => down.push(err),
            }
        }
        out.push(check(
            "instances answer",
            down.is_empty(),
            if down.is_empty() { format!("{} instance(s) answer GET /hello", entries.len()) } else { down.join("; ") },
            Some("an instance does not answer GET /hello: check it is running and listening on its registered address".into()),
        ));
    }
    match ctx.proxy_status().await {
        Err(e) => out.push(check(
            "proxy admin API",
            false,
            e,
            Some(format!(
                "start zerodown (zerodown serve --config ...), or pass --admin HOST:PORT (now {})",
                ctx.admin
            )),
        )),
        Ok(s) => {
            out.push(check(
                "proxy admin API",
                true,
                format!("{} reachable, generation {}", ctx.admin, s.generation),
                None,
            ));
            let proxy_active: Vec<String> = {
                let mut v: Vec<String> = s
                    .pools
                    .active
                    .instances
                    .iter()
                    .map(|i| i.id.clone())
                    .collect();
                v.sort();
                v
            };
            let source_active: Vec<String> = {
                let mut v: Vec<String> = entries
                    .iter()
                    .filter(|e| {
                        e.passing
                            && e.tags
                                .iter()
                                .any(|t| t.eq_ignore_ascii_case(ctx.active_tag()))
                    })
                    .map(|e| e.id.clone())
                    .collect();
                v.sort();
                v
            };
            let agree = matches!(ctx.mode, Mode::Kv { .. })
                || entries.is_empty()
                || proxy_active == source_active;
            let hold = &s.pools.active.hold;
            out.push(check(
                "proxy pools match the source",
                agree,
                format!("proxy active {:?}, source active {:?}", proxy_active, source_active),
                Some(match hold {
                    Some(h) => format!("the proxy's gate is holding ({}: {}); it releases when the source settles — zerodown status shows why", h.kind(), json_text(h)),
                    None => format!("the proxy's source reports: {}", json_text(&s.source_status.last_error)),
                }),
            ));
        }
    }
    if let Mode::Nomad { nomad, job, .. } = &ctx.mode {
        match nomad {
            None => out.push(check(
                "nomad",
                false,
                "NOMAD_ADDR is not set".into(),
                Some("export NOMAD_ADDR=http://<nomad>:4646 (needed by switch and deploy)".into()),
            )),
            Some(n) => match super::nomad::read_job(n, job).await {
                Err(e) => out.push(check(
                    "nomad",
                    false,
                    e,
                    Some("check NOMAD_ADDR / NOMAD_TOKEN and --job".into()),
                )),
                Ok(j) => {
                    let service = ctx.service.clone().unwrap_or_default();
                    let a = super::nomad::groups_tagged(&j, &service, ctx.active_tag());
                    let sb = super::nomad::groups_tagged(&j, &service, ctx.standby_tag());
                    let ok = a.len() == 1 && sb.len() == 1 && a != sb;
                    out.push(check(
                        "nomad job",
                        ok,
                        format!(
                            "job {job} version {}: active group {:?}, standby group {:?}",
                            j["Version"],
                            a.iter().map(|g| super::nomad::group_name(&j, *g)).collect::<Vec<_>>(),
                            sb.iter().map(|g| super::nomad::group_name(&j, *g)).collect::<Vec<_>>()
                        ),
                        Some("each of the two groups must tag its service exactly one of active/standby: fix the job file and nomad job run it".into()),
                    ));
                }
            },
        }
    }
    out
}

pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{} {}: {}\n",
            if c.ok { "✓" } else { "✗" },
            c.name,
            c.detail
        ));
        if let Some(f) = &c.fix {
            s.push_str(&format!("    likely cause / fix: {f}\n"));
        }
    }
    let bad = checks.iter().filter(|c| !c.ok).count();
    s.push_str(&if bad == 0 {
        "all checks passed\n".to_string()
    } else {
        format!("{bad} check(s) failed\n")
    });
    s
}
