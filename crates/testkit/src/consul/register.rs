//! Decoding of `PUT /v1/agent/service/register` bodies. Go's JSON decoding matches field
//! names case-insensitively and Consul also accepts snake_case, so keys are compared after
//! lowercasing and dropping underscores (`EnableTagOverride` = `enable_tag_override`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::params::ApiError;
use super::spec::{CheckSpec, CheckStatus, ServiceSpec};

fn decode_err(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Request decode failed: {what}"))
}

/// Looks a field up by its normalised name.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let norm = |k: &str| k.to_ascii_lowercase().replace('_', "");
    obj.iter()
        .find(|(k, _)| norm(k) == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn string(obj: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match field(obj, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(decode_err(format!(
            "{name}: expected a string, got {other}"
        ))),
    }
}

fn uint(obj: &Map<String, Value>, name: &str, max: u64) -> Result<u64, ApiError> {
    match field(obj, name) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= max)
            .ok_or_else(|| decode_err(format!("{name}: invalid number {v}"))),
    }
}

fn strings(obj: &Map<String, Value>, name: &str) -> Result<Vec<String>, ApiError> {
    let Some(v) = field(obj, name) else {
        return Ok(Vec::new());
    };
    let items = v
        .as_array()
        .ok_or_else(|| decode_err(format!("{name}: expected an array")))?;
    let as_str = |t: &Value| t.as_str().map(str::to_string);
    items
        .iter()
        .map(|t| as_str(t).ok_or_else(|| decode_err(format!("{name}: expected strings"))))
        .collect()
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| decode_err(format!("{what}: expected an object")))
}

/// Consul's limits on service metadata.
fn meta(obj: &Map<String, Value>) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(v) = field(obj, "meta") else {
        return Ok(None);
    };
    let invalid = |why: String| ApiError::bad_request(format!("Invalid Service Meta: {why}"));
    let map = object(v, "Meta")?;
    if map.len() > 64 {
        return Err(invalid(
            "cannot contain more than 64 key/value pairs".into(),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if k.is_empty() || k.len() > 128 || !k.chars().all(ok) {
            return Err(invalid(format!("Key contains invalid characters: {k:?}")));
        }
        if k.starts_with("consul-") {
            return Err(invalid(format!("Key prefix 'consul-' is reserved: {k:?}")));
        }
        let v = v
            .as_str()
            .ok_or_else(|| decode_err("Meta: expected string values"))?;
        if v.len() > 512 {
            return Err(invalid(format!("Value is too long for key {k:?}")));
        }
        out.insert(k.clone(), v.to_string());
    }
    Ok(Some(out))
}

fn check(obj: &Map<String, Value>) -> Result<CheckSpec, ApiError> {
    let status = match string(obj, "status")?.as_str() {
        "" => CheckStatus::Critical,
        s => CheckStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request("Status for checks must 'passing', 'warning', 'critical'")
        })?,
    };
    let kind = ["http", "tcp", "grpc", "ttl", "args", "h2ping", "udp"]
        .into_iter()
        .find(|k| field(obj, k).is_some())
        .map_or("", |k| if k == "args" { "script" } else { k });
    let id = Some(string(obj, "checkid")?)
        .filter(|s| !s.is_empty())
        .or(Some(string(obj, "id")?).filter(|s| !s.is_empty()));
    let name = Some(string(obj, "name")?).filter(|s| !s.is_empty());
    let mut spec = CheckSpec::new(status);
    spec.id = id;
    spec.name = name;
    spec.kind = kind.to_string();
    spec.interval = string(obj, "interval")?;
    spec.timeout = string(obj, "timeout")?;
    spec.notes = string(obj, "notes")?;
    Ok(spec)
}

/// Decodes a registration body into the spec of an instance on the agent node.
pub(crate) fn decode(body: &[u8]) -> Result<ServiceSpec, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(decode_err)?;
    let obj = object(&v, "body")?;
    let name = string(obj, "name")?;
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing service name"));
    }
    let id = Some(string(obj, "id")?)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    let mut spec = ServiceSpec::new(id, name);
    spec.address = string(obj, "address")?;
    spec.port = u16::try_from(uint(obj, "port", 65535)?).unwrap_or(0);
    spec.tags = strings(obj, "tags")?;
    spec.meta = meta(obj)?;
    spec.kind = string(obj, "kind")?;
    spec.enable_tag_override =
        field(obj, "enabletagoverride").and_then(Value::as_bool) == Some(true);
    if let Some(w) = field(obj, "weights") {
        let w = object(w, "Weights")?;
        let (p, wa) = (
            uint(w, "passing", u32::MAX.into())?,
            uint(w, "warning", u32::MAX.into())?,
        );
        spec.weights = (
            u32::try_from(p).unwrap_or(1),
            u32::try_from(wa).unwrap_or(1),
        );
    }
    if let Some(t) = field(obj, "taggedaddresses") {
        for (k, a) in object(t, "TaggedAddresses")? {
            let a = object(a, "TaggedAddresses entry")?;
            let port = u16::try_from(uint(a, "port", 65535)?).unwrap_or(0);
            spec.tagged_addresses
                .insert(k.clone(), (string(a, "address")?, port));
        }
    }
    if let Some(c) = field(obj, "check") {
        spec.checks.push(check(object(c, "Check")?)?);
    }
    if let Some(cs) = field(obj, "checks") {
        let cs = cs
            .as_array()
            .ok_or_else(|| decode_err("Checks: expected an array"))?;
        for c in cs {
            spec.checks.push(check(object(c, "Checks entry")?)?);
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_and_snake_case() {
        let body = br#"{"Name":"web","Tags":["a"],"Port":8080,"enable_tag_override":true,
            "tagged_addresses":{"lan":{"address":"10.0.0.1","port":80}},
            "Checks":[{"CheckID":"c1","HTTP":"http://x","Interval":"10s","Status":"passing"},{"TTL":"5s"}]}"#;
        let s = decode(body).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (s.id.as_str(), s.port, s.enable_tag_override),
            ("web", 8080, true)
        );
        assert_eq!(s.tagged_addresses["lan"], ("10.0.0.1".to_string(), 80));
        assert_eq!(s.checks[0].status, CheckStatus::Passing);
        assert_eq!(s.checks[0].kind, "http");
        assert_eq!(s.checks[1].status, CheckStatus::Critical);
        assert_eq!(s.checks[1].kind, "ttl");
    }

    #[test]
    fn bad_bodies_are_400() {
        for body in [
            &b"{"[..],
            b"[]",
            b"{}",
            br#"{"Name":"w","Port":-1}"#,
            br#"{"Name":"w","Tags":"a"}"#,
        ] {
            assert_eq!(decode(body).map_err(|e| e.status), Err(400), "{body:?}");
        }
        let reserved = br#"{"Name":"w","Meta":{"consul-x":"1"}}"#;
        assert!(decode(reserved).is_err());
    }
}
