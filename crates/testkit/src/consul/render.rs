//! JSON shapes of the answers, field for field as Consul's Go structs encode them:
//! `Tags` is `[]` never `null`, `Port` is omitted when 0, `Meta` may be `null`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::checks::Check;
use super::kv::KvEntry;
use super::state::{Instance, Node};

/// Datacenter of the double; any other `?dc=` gets `No path to datacenter`.
pub(crate) const DATACENTER: &str = "dc1";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeJson<'a> {
    #[serde(rename = "ID")]
    id: String,
    node: &'a str,
    address: &'a str,
    datacenter: &'static str,
    tagged_addresses: BTreeMap<&'static str, &'a str>,
    meta: Map<String, Value>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    address: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    tagged_addresses: Map<String, Value>,
    meta: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "is_zero")]
    port: u16,
    weights: Value,
    enable_tag_override: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    proxy: Value,
    connect: Value,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckJson<'a> {
    node: &'a str,
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    name: &'a str,
    status: &'static str,
    notes: &'a str,
    output: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    #[serde(rename = "Type")]
    kind: &'a str,
    interval: &'a str,
    timeout: &'a str,
    exposed_port: u16,
    definition: Value,
    create_index: u64,
    modify_index: u64,
}

fn is_zero(p: &u16) -> bool {
    *p == 0
}

/// A stable UUID-shaped node ID derived from the node name (FNV-1a).
fn node_id(name: &str) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in name.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let x = format!("{h:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn node_json(n: &Node) -> NodeJson<'_> {
    let a = n.address.as_str();
    NodeJson {
        id: node_id(&n.name),
        node: &n.name,
        address: a,
        datacenter: DATACENTER,
        tagged_addresses: [("lan", a), ("lan_ipv4", a), ("wan", a), ("wan_ipv4", a)].into(),
        meta: Map::new(),
        create_index: n.create_index,
        modify_index: n.modify_index,
    }
}

/// `TaggedAddresses` with Go's `Address`/`Port` keys, or the docs' lowercase ones.
fn tagged(i: &Instance, lowercase: bool) -> Map<String, Value> {
    let (ka, kp) = if lowercase {
        ("address", "port")
    } else {
        ("Address", "Port")
    };
    let entries = i.spec.tagged_addresses.iter();
    entries
        .map(|(name, (addr, port))| (name.clone(), json!({ ka: addr, kp: port })))
        .collect()
}

fn service_json(i: &Instance, lowercase: bool) -> ServiceJson<'_> {
    let s = &i.spec;
    ServiceJson {
        id: &s.id,
        service: &s.name,
        tags: &s.tags,
        address: &s.address,
        tagged_addresses: tagged(i, lowercase),
        meta: s.meta.as_ref(),
        port: s.port,
        weights: json!({ "Passing": s.weights.0, "Warning": s.weights.1 }),
        enable_tag_override: s.enable_tag_override,
        kind: &s.kind,
        proxy: json!({ "Mode": "", "MeshGateway": {}, "Expose": {} }),
        connect: json!({}),
        create_index: i.create_index,
        modify_index: i.modify_index,
    }
}

fn check_json<'a>(node: &'a str, c: &'a Check, svc: Option<&'a Instance>) -> CheckJson<'a> {
    CheckJson {
        node,
        check_id: &c.id,
        name: &c.name,
        status: c.status.as_str(),
        notes: &c.notes,
        output: &c.output,
        service_id: svc.map_or("", |i| i.spec.id.as_str()),
        service_name: svc.map_or("", |i| i.spec.name.as_str()),
        service_tags: &c.service_tags,
        kind: &c.kind,
        interval: &c.interval,
        timeout: &c.timeout,
        exposed_port: 0,
        definition: json!({}),
        create_index: c.create_index,
        modify_index: c.modify_index,
    }
}

/// `GET /v1/health/service/:name`: `[{Node, Service, Checks}]`, node check first.
pub(crate) fn health(entries: &[(Node, Instance)], lowercase: bool) -> Value {
    let items = entries.iter().map(|(n, i)| {
        let mut checks = vec![check_json(&n.name, &n.serf, None)];
        checks.extend(n.maintenance.iter().map(|c| check_json(&n.name, c, None)));
        checks.extend(i.checks.iter().map(|c| check_json(&n.name, c, Some(i))));
        json!({ "Node": node_json(n), "Service": service_json(i, lowercase), "Checks": checks })
    });
    Value::Array(items.collect())
}

/// `GET /v1/catalog/service/:name`: the flat `ServiceNode` shape, no checks.
pub(crate) fn catalog(entries: &[(Node, Instance)], lowercase: bool) -> Value {
    let items = entries.iter().map(|(n, i)| {
        let (node, svc) = (node_json(n), service_json(i, lowercase));
        let mut o = json!({
            "ID": node.id, "Node": node.node, "Address": node.address,
            "Datacenter": DATACENTER, "TaggedAddresses": node.tagged_addresses, "NodeMeta": {},
            "ServiceKind": svc.kind, "ServiceID": svc.id, "ServiceName": svc.service,
            "ServiceTags": svc.tags, "ServiceAddress": svc.address,
            "ServiceWeights": svc.weights, "ServiceMeta": svc.meta, "ServicePort": svc.port,
            "ServiceEnableTagOverride": svc.enable_tag_override, "ServiceProxy": svc.proxy,
            "ServiceConnect": svc.connect,
            "CreateIndex": i.create_index, "ModifyIndex": i.modify_index,
        });
        if !svc.tagged_addresses.is_empty() {
            o["ServiceTaggedAddresses"] = Value::Object(svc.tagged_addresses);
        }
        o
    });
    Value::Array(items.collect())
}

/// `GET /v1/kv/:key`: base64 `Value`, `null` when empty; `Session` only when held.
pub(crate) fn kv(entries: &[KvEntry]) -> Value {
    let items = entries.iter().map(|e| {
        let value = (!e.value.is_empty()).then(|| base64(&e.value));
        let mut o = json!({
            "LockIndex": e.lock_index, "Key": e.key, "Flags": e.flags, "Value": value,
            "CreateIndex": e.create_index, "ModifyIndex": e.modify_index,
        });
        if let Some(s) = &e.session {
            o["Session"] = json!(s);
        }
        o
    });
    Value::Array(items.collect())
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
pub(crate) fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"blue"), "Ymx1ZQ==");
    }

    #[test]
    fn node_ids_are_uuid_shaped_and_stable() {
        let id = node_id("node-1");
        assert_eq!(id.len(), 36);
        assert_eq!(id, node_id("node-1"));
        assert_ne!(id, node_id("node-2"));
    }
}
