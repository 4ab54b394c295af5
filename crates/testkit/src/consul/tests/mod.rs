//! Tests of the double itself, through the kit's minimal raw HTTP/1.1 client so that
//! broken answers (stalls, resets, short bodies) can be observed exactly.

mod blocking;
mod faults;
mod health;
mod kv;

use std::net::SocketAddr;
use std::time::Duration;

use super::{CheckStatus, ConsulDouble, ServiceSpec};
pub(super) use crate::kit::raw::{parse, send, End, Resp};

/// Upper bound for any single request in these tests.
pub(super) const LIMIT: Duration = Duration::from_secs(5);

pub(super) async fn req(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Resp {
    let (raw, end) = send(addr, method, target, &[], body, LIMIT)
        .await
        .expect("request sent");
    parse(&raw, end)
}

pub(super) async fn get(addr: SocketAddr, target: &str) -> Resp {
    req(addr, "GET", target, b"").await
}

pub(super) async fn get_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Resp {
    let (raw, end) = send(addr, "GET", target, headers, b"", LIMIT)
        .await
        .expect("request sent");
    parse(&raw, end)
}

/// A double with `web-1` (active) and `web-2` (standby), both passing.
pub(super) async fn two_web() -> ConsulDouble {
    let c = ConsulDouble::start().await.expect("double starts");
    for (id, tag, port) in [("web-1", "active", 8001), ("web-2", "standby", 8002)] {
        let spec = ServiceSpec::new(id, "web").address("127.0.0.1").port(port);
        c.register(spec.tags([tag]).check(CheckStatus::Passing));
    }
    c
}

/// Service IDs in a health answer, in order.
pub(super) fn ids(r: &Resp) -> Vec<String> {
    let v = r.json();
    let items = v.as_array().expect("array").iter();
    items
        .map(|e| e["Service"]["ID"].as_str().unwrap_or("").to_string())
        .collect()
}
