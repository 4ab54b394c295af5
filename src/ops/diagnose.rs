//! `zerodown diagnose`: checks every link in order — config, Consul, the service, its instances and
//! health, the proxy, the proxy's pools against the source, Nomad — and never stops at the first
//! failure. Each failure names the likely cause and the command that fixes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{entries, json_text, probe, Ctx, Entry, Mode};
use crate::admin::status::StatusDoc;
use crate::core::discovery::consul::{ConsulClient, ConsulError};

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
    let entries = match &ctx.mode {
        Mode::File(path) => upstreams_file(path, &mut out),
        _ => consul_service(ctx, &mut out).await,
    };
    if !entries.is_empty() {
        out.push(tags_and_versions(ctx, &entries));
        // The file source has no health checks to report on: the probes below stand in.
        if !matches!(ctx.mode, Mode::File(_)) {
            out.push(health_checks(&entries));
        }
        out.push(instances_answer(&entries).await);
    }
    out.extend(proxy_and_pools(ctx, &entries).await);
    if let Mode::Nomad { nomad, job, .. } = &ctx.mode {
        out.push(nomad_job(ctx, nomad.as_ref(), job).await);
    }
    out
}

/// The upstreams file parses; its instances are the source's.
fn upstreams_file(path: &Path, out: &mut Vec<Check>) -> Vec<Entry> {
    match crate::core::discovery::file::load(path) {
        Ok(list) => {
            out.push(check(
                "upstreams file",
                true,
                format!(
                    "{} lists {} instance(s); the file source has no health checks (the probe of each instance below stands in)",
                    path.display(),
                    list.len()
                ),
                None,
            ));
            list.into_iter()
                .map(|i| Entry {
                    id: i.id,
                    address: i.address,
                    tags: i.tags,
                    version: i.version,
                    health: "n/a".into(),
                    passing: true,
                })
                .collect()
        }
        Err(e) => {
            out.push(check(
                "upstreams file",
                false,
                e.to_string(),
                Some("fix the file; the proxy keeps its last good pools meanwhile".to_string()),
            ));
            Vec::new()
        }
    }
}

/// Consul answers with a leader and the token is accepted; the service is registered. Its
/// entries, passing or not, are the source's.
async fn consul_service(ctx: &Ctx, out: &mut Vec<Check>) -> Vec<Entry> {
    let c = ctx.mode.consul().expect("consul modes have a client");
    let service = ctx.service.clone().unwrap_or_default();
    let r = match c
        .get(
            &format!("/v1/health/service/{service}"),
            Duration::from_secs(10),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            out.push(check(
                "consul",
                false,
                e.to_string(),
                Some(format!("is the Consul agent running at {}? (consul members); set CONSUL_HTTP_ADDR or --consul-addr", c.address())),
            ));
            return Vec::new();
        }
    };
    if r.status != 200 {
        let fix = if r.status == 403 {
            "export CONSUL_HTTP_TOKEN=<a token with service:read> (or CONSUL_HTTP_TOKEN_FILE)"
        } else {
            "consul operator raft list-peers (is there a leader?); consul monitor"
        };
        out.push(check(
            "consul",
            false,
            ConsulError::from_status(r.status, &r.body, &format!("service {service}")).to_string(),
            Some(fix.into()),
        ));
        return Vec::new();
    }
    out.push(leader(c, r.known_leader != Some(false)));
    let entries = entries(&r.body, &ctx.versions).unwrap_or_default();
    out.push(check(
        "service registered",
        !entries.is_empty(),
        format!("{service}: {} instance(s) in Consul", entries.len()),
        Some(format!("nothing is registered as {service}: nomad job run config/nomad/hello-service.nomad.hcl (or check --service)")),
    ));
    entries
}

fn leader(c: &ConsulClient, known: bool) -> Check {
    check(
        "consul",
        known,
        format!(
            "reachable at {}, token accepted, leader {}",
            c.address(),
            if known { "known" } else { "UNKNOWN" }
        ),
        Some("Consul has no leader: consul operator raft list-peers; or set source.consistency = \"stale\"".into()),
    )
}

/// Exactly one version is tagged active (any number under the KV selector, which ignores tags).
fn tags_and_versions(ctx: &Ctx, entries: &[Entry]) -> Check {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries {
        let tagged = |tag: &str| e.tags.iter().any(|t| t.eq_ignore_ascii_case(tag));
        let pool = if tagged(ctx.active_tag()) {
            "active"
        } else if tagged(ctx.standby_tag()) {
            "standby"
        } else {
            "untagged"
        };
        *by.entry(format!("{pool} {}", e.version)).or_default() += 1;
    }
    let summary: Vec<String> = by.iter().map(|(k, n)| format!("{k}×{n}")).collect();
    let active_versions = by.keys().filter(|k| k.starts_with("active ")).count();
    check(
        "instances per tag and version",
        active_versions == 1 || matches!(ctx.mode, Mode::Kv { .. }),
        summary.join(", "),
        Some(if active_versions == 0 {
            "no instance is tagged active: zerodown switch, or fix the job's tags".into()
        } else {
            "several versions are tagged active (a flip in progress, or a bad job): zerodown status; the proxy's single-version gate keeps serving one".into()
        }),
    )
}

/// Every instance passes its health checks.
fn health_checks(entries: &[Entry]) -> Check {
    let failing: Vec<String> = entries
        .iter()
        .filter(|e| !e.passing)
        .map(|e| format!("{} {}: {}", e.id, e.address, e.health))
        .collect();
    check(
        "health checks",
        failing.is_empty(),
        if failing.is_empty() {
            "all passing".into()
        } else {
            failing.join("; ")
        },
        Some("the instances above fail their checks: nomad alloc logs <alloc>; consul watch -type=checks".into()),
    )
}

/// Every instance answers `GET /hello` with 200.
async fn instances_answer(entries: &[Entry]) -> Check {
    let mut down = Vec::new();
    for e in entries {
        match probe(&e.address).await {
            Ok(a) if a.status == 200 => {}
            Ok(a) => down.push(format!("{} answered {}", e.address, a.status)),
            Err(err) => down.push(err.to_string()),
        }
    }
    check(
        "instances answer",
        down.is_empty(),
        if down.is_empty() {
            format!("{} instance(s) answer GET /hello", entries.len())
        } else {
            down.join("; ")
        },
        Some("an instance does not answer GET /hello: check it is running and listening on its registered address".into()),
    )
}

/// The proxy's admin API answers, and its active pool is what the source tags active.
async fn proxy_and_pools(ctx: &Ctx, entries: &[Entry]) -> Vec<Check> {
    match ctx.proxy_status().await {
        Err(e) => vec![check(
            "proxy admin API",
            false,
            e.to_string(),
            Some(format!(
                "start zerodown (zerodown serve --config ...), or pass --admin HOST:PORT (now {})",
                ctx.admin
            )),
        )],
        Ok(s) => {
            let mut out = vec![
                check(
                    "proxy admin API",
                    true,
                    format!("{} reachable, generation {}", ctx.admin, s.generation),
                    None,
                ),
                pools_match(ctx, &s, entries),
            ];
            if s.hsms.is_some() {
                out.push(hsms_ports(ctx, &s).await);
            }
            out
        }
    }
}

/// The proxy's HSMS listener and every pool instance's HSMS port answer Select.req.
async fn hsms_ports(ctx: &Ctx, s: &StatusDoc) -> Check {
    let wait = Duration::from_secs(3);
    let mut failed = Vec::new();
    let mut fine = 0;
    if let Some(h) = &ctx.cfg.hsms {
        let addr = super::loopback_for(h.listen);
        match super::hsms::select_probe(&addr, wait).await {
            Ok(_) => fine += 1,
            Err(e) => failed.push(format!("the proxy's HSMS listener {addr}: {e}")),
        }
    }
    let (active, standby) = (&s.pools.active, &s.pools.standby);
    let mut with_hsms = 0;
    for i in active.instances.iter().chain(&standby.instances) {
        let Some(addr) = &i.hsms else { continue };
        with_hsms += 1;
        match super::hsms::select_probe(addr, wait).await {
            Ok(_) => fine += 1,
            Err(e) => failed.push(format!("{} ({} HSMS {addr}): {e}", i.id, i.version)),
        }
    }
    let mut detail = format!("{fine} HSMS port(s) answer Select.req");
    if with_hsms == 0 {
        failed.push("no pool instance has an HSMS address".into());
    }
    if !failed.is_empty() {
        detail = format!("{detail}; failing: {}", failed.join("; "));
    }
    check(
        "hsms ports",
        failed.is_empty(),
        detail,
        Some("start the instance's HSMS listener, or fix its address (upstreams file `hsms = \"host:port\"`, Consul Meta.hsms_port)".into()),
    )
}

fn pools_match(ctx: &Ctx, s: &StatusDoc, entries: &[Entry]) -> Check {
    let mut proxy_active: Vec<String> = s
        .pools
        .active
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    proxy_active.sort();
    let mut source_active: Vec<String> = entries
        .iter()
        .filter(|e| {
            e.passing
                && e.tags
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(ctx.active_tag()))
        })
        .map(|e| e.id.clone())
        .collect();
    source_active.sort();
    let agree =
        matches!(ctx.mode, Mode::Kv { .. }) || entries.is_empty() || proxy_active == source_active;
    check(
        "proxy pools match the source",
        agree,
        format!("proxy active {proxy_active:?}, source active {source_active:?}"),
        Some(match &s.pools.active.hold {
            Some(h) => format!(
                "the proxy's gate is holding ({}: {}); it releases when the source settles — zerodown status shows why",
                h.kind(),
                json_text(h)
            ),
            None => format!(
                "the proxy's source reports: {}",
                json_text(&s.source_status.last_error)
            ),
        }),
    )
}

/// Nomad answers, and the job tags exactly one group active and another standby.
async fn nomad_job(ctx: &Ctx, nomad: Option<&ConsulClient>, job: &str) -> Check {
    let Some(n) = nomad else {
        return check(
            "nomad",
            false,
            "NOMAD_ADDR is not set".into(),
            Some("export NOMAD_ADDR=http://<nomad>:4646 (needed by switch and deploy)".into()),
        );
    };
    let j = match super::nomad::read_job(n, job).await {
        Ok(j) => j,
        Err(e) => {
            return check(
                "nomad",
                false,
                e.to_string(),
                Some("check NOMAD_ADDR / NOMAD_TOKEN and --job".into()),
            )
        }
    };
    let service = ctx.service.clone().unwrap_or_default();
    let a = super::nomad::groups_tagged(&j, &service, ctx.active_tag());
    let sb = super::nomad::groups_tagged(&j, &service, ctx.standby_tag());
    let names = |groups: &[usize]| -> Vec<String> {
        groups
            .iter()
            .map(|g| super::nomad::group_name(&j, *g))
            .collect()
    };
    check(
        "nomad job",
        a.len() == 1 && sb.len() == 1 && a != sb,
        format!(
            "job {job} version {}: active group {:?}, standby group {:?}",
            j["Version"],
            names(&a),
            names(&sb)
        ),
        Some("each of the two groups must tag its service exactly one of active/standby: fix the job file and nomad job run it".into()),
    )
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
