//! Tests of the Nomad double through the kit's minimal raw HTTP/1.1 client, and of what
//! it does to the Consul double.

mod jobs;
mod plans;
mod rollouts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::consul::ConsulDouble;
use crate::kit::raw::{parse, send, End, Resp};

use super::{reference_job, NomadDouble, Timing};

/// Upper bound for any wait in these tests.
pub(super) const LIMIT: Duration = Duration::from_secs(5);

/// Sends one request with `Connection: close` and reads the whole answer.
pub(super) async fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let sent = send(addr, method, target, headers, body, LIMIT * 2).await;
    let (raw, end) = sent.expect("connect");
    assert_eq!(end, End::Eof, "answer in time");
    let resp = parse(&raw, end);
    assert_ne!(resp.status, 0, "complete head");
    resp
}

pub(super) async fn get(addr: SocketAddr, target: &str) -> Resp {
    call(addr, "GET", target, &[], b"").await
}

pub(super) async fn post(addr: SocketAddr, target: &str, body: &Value) -> Resp {
    call(addr, "POST", target, &[], body.to_string().as_bytes()).await
}

/// Fast clients: 2 ms between instances, health after 10 ms.
pub(super) fn fast() -> Timing {
    Timing {
        sync_gap: Duration::from_millis(2),
        health_delay: Duration::from_millis(10),
        straggler: Duration::ZERO,
        seed: 7,
    }
}

/// Ports per group and version: blue 1xxxx, green 2xxxx, plus the job version.
pub(super) fn port_of(group: &str, version: u64, index: u32) -> u16 {
    let base = if group == "blue" { 10_000 } else { 20_000 };
    base + (version as u16) * 10 + index as u16
}

/// A Consul double and a Nomad double applying to it, with the reference job (blue v1
/// active, green v2 standby) already rolled out.
pub(super) async fn reference() -> (Arc<ConsulDouble>, NomadDouble) {
    let consul = Arc::new(ConsulDouble::start().await.expect("consul starts"));
    let nomad = NomadDouble::start(Some(consul.clone()))
        .await
        .expect("nomad starts");
    nomad.set_timing(fast());
    nomad.set_port_allocator(|s| port_of(&s.group, s.job_version, s.index));
    nomad
        .seed_job(reference_job("hello:v1", "hello:v2", "v1", "v2"))
        .expect("seeded");
    (consul, nomad)
}

/// `(service ID, tags, port, check statuses)` of every `hello-service` instance in Consul.
pub(super) async fn instances(
    consul: &ConsulDouble,
) -> Vec<(String, Vec<String>, u64, Vec<String>)> {
    let r = get(consul.addr(), "/v1/health/service/hello-service").await;
    let entries = r.json();
    let list = entries.as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|e| {
            let s = &e["Service"];
            let strs = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            };
            let checks = e["Checks"].as_array().into_iter().flatten();
            let service_checks = checks.filter(|c| c["ServiceID"] != "");
            let statuses = service_checks
                .map(|c| c["Status"].as_str().unwrap_or("").to_string())
                .collect();
            (
                s["ID"].as_str().unwrap_or("").to_string(),
                strs(&s["Tags"]),
                s["Port"].as_u64().unwrap_or(0),
                statuses,
            )
        })
        .collect()
}
