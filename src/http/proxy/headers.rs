//! Header rewriting between client and upstream: hop-by-hop headers stripped both ways, and the
//! forwarding headers set as the replaced nginx config did (`$proxy_add_x_forwarded_for`, `$remote_addr`).

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Underscores;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) present names instead of a hashed remove per listed header.
    let present = headers
        .keys()
        .any(|k| k == header::UPGRADE || HOP_BY_HOP.iter().any(|h| h == k));
    if !present {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // Bytes, not `to_str`: one non-ASCII byte must not hide the other tokens.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // Upgrades are not proxied, so the header would promise something that cannot happen.
    headers.remove(header::UPGRADE);
}

/// The client side of a connection, with its forwarding header values built once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub proto: &'static str,
    ip: HeaderValue,
    forwarded: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, proto: &'static str) -> Peer {
        let ip = addr.ip().to_string();
        let node = if addr.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.clone()
        };
        let forwarded = format!("for={node};proto={proto}");
        Peer {
            addr,
            proto,
            ip: HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::from_str(&forwarded)
                .unwrap_or_else(|_| HeaderValue::from_static("for=unknown")),
        }
    }
}

/// Sets `X-Forwarded-For`, `Forwarded`, `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Host`
/// for a request from `peer` that arrived for `host`. From a `trusted` peer (another proxy) the
/// chain it sent is kept and extended; from anyone else it is replaced, so clients cannot forge it.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &Peer,
    host: Option<&HeaderValue>,
    trusted: bool,
) {
    let extend =
        |h: &mut HeaderMap, name: &HeaderName, ours: &HeaderValue, valid: fn(&str) -> bool| {
            let prior: Vec<&str> = h
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            let joined = prior.join(", ");
            let value = if prior.is_empty() || !valid(&joined) {
                ours.clone()
            } else {
                let ours = ours.to_str().unwrap_or("");
                HeaderValue::from_str(&format!("{joined}, {ours}"))
                    .unwrap_or_else(|_| ours_value(ours))
            };
            h.insert(name.clone(), value);
        };
    if trusted {
        extend(headers, &X_FORWARDED_FOR, &peer.ip, |_| true);
        // A prior value with an unclosed quote would swallow ours: drop it instead.
        extend(headers, &header::FORWARDED, &peer.forwarded, |p| {
            p.bytes().filter(|b| *b == b'"').count() % 2 == 0
        });
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), peer.ip.clone());
        headers.insert(header::FORWARDED, peer.forwarded.clone());
    }
    if !(trusted && headers.contains_key(&X_REAL_IP)) {
        headers.insert(X_REAL_IP.clone(), peer.ip.clone());
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(peer.proto),
        );
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

fn ours_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Applies the underscore policy; returns false when the request must be refused.
pub fn underscores(headers: &mut HeaderMap, policy: Underscores) -> bool {
    if policy == Underscores::Allow {
        return true;
    }
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    if found.is_empty() {
        return true;
    }
    if policy == Underscores::Reject {
        return false;
    }
    for k in found {
        headers.remove(k);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_extended() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("10.0.0.1"),
        );
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        let host = HeaderValue::from_static("example.test");
        let peer = Peer::new("192.0.2.7:4000".parse().unwrap(), "http");
        set_forwarded(&mut h, &peer, Some(&host), true);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 192.0.2.7");
        assert_eq!(
            h[&header::FORWARDED],
            "for=10.0.0.1, for=192.0.2.7;proto=http"
        );
        assert_eq!(h[&X_REAL_IP], "192.0.2.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "example.test");
    }

    #[test]
    fn forwarded_headers_from_anyone_else_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_static("6.6.6.6"));
        h.insert(X_REAL_IP.clone(), HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        set_forwarded(
            &mut h,
            &Peer::new("[::1]:4000".parse().unwrap(), "http"),
            None,
            false,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
        assert_eq!(h[&X_REAL_IP], "::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&header::FORWARDED], "for=\"[::1]\";proto=http");
        assert!(!h.contains_key(&X_FORWARDED_HOST));
    }

    #[test]
    fn underscore_policy() {
        let mut h = HeaderMap::new();
        h.insert("x_user", HeaderValue::from_static("admin"));
        h.insert("x-ok", HeaderValue::from_static("1"));
        assert!(!underscores(&mut h.clone(), Underscores::Reject));
        assert!(underscores(&mut h, Underscores::Drop));
        assert!(!h.contains_key("x_user") && h.contains_key("x-ok"));
    }
}
