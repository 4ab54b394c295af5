//! The header rewrite on the request path: `strip_hop_by_hop`, then `set_forwarded`, on a header
//! map built from fuzz bytes. Invariants: no hop-by-hop header and no header the input's
//! `Connection` named survives (except the forwarding headers the proxy writes itself); no value
//! holds CR, LF or NUL; one X-Forwarded-For / Forwarded / X-Real-IP, naming the peer, and from an
//! untrusted peer nothing of the client's chain.
//!
//! Input: byte 0 = flags (bit 0 trusted peer, bit 1 IPv6 peer, bit 2 https, bit 3 pass the Host),
//! then 16 address bytes, then `name:value` lines separated by `\n`.
#![no_main]

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use zerodown::http::proxy::headers::{set_forwarded, strip_hop_by_hop, Peer};

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Written by `set_forwarded` after the strip, so a client naming them changes nothing.
const OWN: [&str; 5] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Splits on `sep` outside double quotes (backslash escapes inside quotes).
fn split_unquoted(s: &str, seps: &[char]) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in s.chars() {
        if quoted && escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && seps.contains(&c) {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// The request path only hands `set_forwarded` a Host that parses as an authority without
/// userinfo (`request_host`); mirror that contract.
fn valid_host(v: &HeaderValue) -> bool {
    v.to_str()
        .ok()
        .filter(|s| !s.contains('@'))
        .and_then(|s| s.parse::<http::uri::Authority>().ok())
        .is_some()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let flags = data[0];
    let (trusted, https, pass_host) = (flags & 1 != 0, flags & 4 != 0, flags & 8 != 0);
    let peer: IpAddr = if flags & 2 != 0 {
        <[u8; 16]>::try_from(&data[1..17]).unwrap().into()
    } else {
        <[u8; 4]>::try_from(&data[1..5]).unwrap().into()
    };
    let mut headers = HeaderMap::new();
    for line in data[17..].split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    // Every token any Connection line names, read from the raw bytes (not only ASCII values).
    let nominated: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .filter(|n| !OWN.contains(&n.as_str()))
        .collect();
    let host = headers
        .get(header::HOST)
        .filter(|h| pass_host && valid_host(h))
        .cloned();

    strip_hop_by_hop(&mut headers);
    set_forwarded(
        &mut headers,
        &Peer::new(SocketAddr::new(peer, 40000), if https { "https" } else { "http" }),
        host.as_ref(),
        trusted,
    );

    for name in HOP_BY_HOP {
        assert!(!headers.contains_key(name), "hop-by-hop {name} survived");
    }
    for name in &nominated {
        assert!(
            !headers.contains_key(name),
            "Connection-nominated {name} survived"
        );
    }
    for (name, value) in &headers {
        assert!(
            !value
                .as_bytes()
                .iter()
                .any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{name} carries CR, LF or NUL: {value:?}"
        );
    }
    let peer_s = peer.to_string();
    let xff: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1, "X-Forwarded-For lines: {xff:?}");
    let xff = xff[0].to_str().expect("X-Forwarded-For is ASCII");
    if trusted {
        assert!(
            xff == peer_s || xff.ends_with(&format!(", {peer_s}")),
            "trusted X-Forwarded-For {xff:?} does not end with the peer {peer_s}"
        );
    } else {
        assert_eq!(
            xff, peer_s,
            "untrusted X-Forwarded-For kept the client's chain"
        );
        let real: Vec<&HeaderValue> = headers.get_all("x-real-ip").iter().collect();
        assert_eq!(real, [peer_s.as_str()], "untrusted X-Real-IP");
    }
    let fwd: Vec<&HeaderValue> = headers.get_all(header::FORWARDED).iter().collect();
    assert_eq!(fwd.len(), 1, "Forwarded lines: {fwd:?}");
    let fwd = fwd[0].to_str().expect("Forwarded is ASCII");
    let fors: Vec<String> = split_unquoted(fwd, &[',', ';'])
        .into_iter()
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| p.starts_with("for="))
        .collect();
    let last = fors
        .last()
        .map(|f| f.trim_start_matches("for=").trim_matches('"').to_string());
    let node = if peer.is_ipv6() {
        format!("[{peer_s}]")
    } else {
        peer_s.clone()
    };
    assert_eq!(
        last.as_deref(),
        Some(node.as_str()),
        "last Forwarded for= is not the peer: {fwd:?}"
    );
    if !trusted {
        assert_eq!(
            fors.len(),
            1,
            "untrusted Forwarded carries more than one for=: {fwd:?}"
        );
    }
});
