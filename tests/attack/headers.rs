//! Headers: hop-by-hop stripped both ways, forwarding headers from the socket peer (appended only
//! for trusted proxies), underscore names, and exactly one valid Host checked before routing.

use zerodown::config::{Cidr, Underscores};

use crate::common::start;
use crate::raw::{barrier, exchange, Message, Recorder};
use crate::{assert_one_framing, forwarded, proxy_to, refused, Upstream};

/// Headers that must never cross the proxy, whatever the direction.
const HOP_BY_HOP: [&str; 9] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "transfer-encoding",
    "connection",
];

/// No hop-by-hop header and none of `nominated` in `m`. `transfer-encoding: chunked` and a
/// `connection: keep-alive|close` that the proxy writes for its own hop are allowed.
fn assert_no_hop_by_hop(m: &Message, nominated: &[&str], who: &str) {
    let mut found = Vec::new();
    for name in HOP_BY_HOP {
        for v in m.all(name) {
            let own = match name {
                "transfer-encoding" => v == "chunked",
                "connection" => m
                    .connection_tokens()
                    .iter()
                    .all(|t| t == "keep-alive" || t == "close"),
                _ => false,
            };
            if !own {
                found.push(format!("{name}: {v}"));
            }
        }
    }
    for name in nominated {
        for v in m.all(name) {
            found.push(format!("{name}: {v} (named by the client's Connection)"));
        }
    }
    assert!(
        found.is_empty(),
        "{who} still carries {found:?}:\n{}",
        m.head_text()
    );
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_stripped() {
    let (_, req) = forwarded(
        b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Secret, x-other\r\nX-Secret: 1\r\nX-Other: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Authenticate: Basic\r\nX-Fine: yes\r\n\r\n",
        |_| {},
    )
    .await;
    assert_no_hop_by_hop(&req, &["x-secret", "x-other"], "upstream request");
    assert_eq!(
        req.get("x-fine"),
        Some("yes"),
        "an end-to-end header was lost"
    );
}

#[tokio::test]
async fn connection_on_several_lines_nominates_every_token() {
    let (_, req) = forwarded(
        b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: x-a\r\nConnection:  X-B ,x-c,\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n\r\n",
        |_| {},
    )
    .await;
    assert_no_hop_by_hop(&req, &["x-a", "x-b", "x-c"], "upstream request");
    assert_eq!(req.get("x-d"), Some("4"));
}

/// A client naming the framing, Host or forwarding headers in Connection must not strip what the
/// proxy itself writes: the body still arrives framed once, with one Host and the proxy's XFF.
#[tokio::test]
async fn connection_naming_framing_host_or_forwarding_does_not_break_the_rewrite() {
    let (_, req) = forwarded(
        b"POST / HTTP/1.1\r\nHost: example.test\r\nConnection: content-length, host, x-forwarded-for, x-real-ip\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Length: 5\r\n\r\nhello",
        |_| {},
    )
    .await;
    assert_one_framing(&req, b"hello", "upstream");
    assert_eq!(req.all("host"), ["example.test"], "{}", req.head_text());
    assert_eq!(
        req.all("x-forwarded-for"),
        ["127.0.0.1"],
        "{}",
        req.head_text()
    );
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let up = Recorder::canned(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Up-Secret\r\nX-Up-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nTE: trailers\r\nX-Fine: yes\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let d = proxy_to(&up, |_| {}).await;
    let (resp, _) = exchange(
        d.daemon.public_addr,
        b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
    )
    .await;
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.head_text());
    assert_no_hop_by_hop(&resp, &["x-up-secret"], "client response");
    assert_eq!(resp.get("x-fine"), Some("yes"));
    assert_eq!(resp.body, b"ok");
}

const SPOOFED: &[u8] = b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https\r\n\r\n";

#[tokio::test]
async fn forwarding_headers_are_replaced_for_an_untrusted_peer() {
    let (_, req) = forwarded(SPOOFED, |_| {}).await;
    let head = req.head_text();
    assert_eq!(req.all("x-forwarded-for"), ["127.0.0.1"], "{head}");
    assert_eq!(req.all("x-real-ip"), ["127.0.0.1"], "{head}");
    for f in req.all("forwarded") {
        assert!(
            !f.contains("6.6.6.6") && f.contains("127.0.0.1"),
            "client's Forwarded survived from an untrusted peer: {f:?}\n{head}"
        );
    }
}

#[tokio::test]
async fn forwarding_headers_are_appended_for_a_trusted_peer() {
    let (_, req) = forwarded(SPOOFED, |c| {
        c.limits.trusted_proxies = vec![Cidr::parse("127.0.0.1/32").unwrap()];
    })
    .await;
    let head = req.head_text();
    assert_eq!(req.all("x-forwarded-for"), ["1.2.3.4, 127.0.0.1"], "{head}");
    let fwd = req.all("forwarded").join(", ");
    let (old, new) = (fwd.find("6.6.6.6"), fwd.find("127.0.0.1"));
    assert!(
        matches!((old, new), (Some(o), Some(n)) if o < n),
        "Forwarded from a trusted peer should keep for=6.6.6.6 and append 127.0.0.1, got {fwd:?}\n{head}"
    );
}

const TWO_XFF: &[u8] = b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n";

#[tokio::test]
async fn several_x_forwarded_for_lines_from_an_untrusted_peer_are_replaced() {
    let (_, req) = forwarded(TWO_XFF, |_| {}).await;
    assert_eq!(
        req.all("x-forwarded-for"),
        ["127.0.0.1"],
        "{}",
        req.head_text()
    );
}

#[tokio::test]
async fn several_x_forwarded_for_lines_from_a_trusted_peer_are_all_kept() {
    let (_, req) = forwarded(TWO_XFF, |c| {
        c.limits.trusted_proxies = vec![Cidr::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    assert_eq!(
        req.all("x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 127.0.0.1"],
        "{}",
        req.head_text()
    );
}

#[tokio::test]
async fn a_trusted_list_without_the_peer_still_replaces() {
    let (_, req) = forwarded(SPOOFED, |c| {
        c.limits.trusted_proxies = vec![Cidr::parse("10.0.0.0/8").unwrap()];
    })
    .await;
    assert_eq!(
        req.all("x-forwarded-for"),
        ["127.0.0.1"],
        "{}",
        req.head_text()
    );
}

const UNDERSCORES: &[u8] = b"GET / HTTP/1.1\r\nHost: example.test\r\nX_Forwarded_For: 6.6.6.6\r\nX_Secret: 1\r\nX-Normal: ok\r\n\r\n";

#[tokio::test]
async fn underscore_headers_are_dropped_by_default() {
    let (_, req) = forwarded(UNDERSCORES, |_| {}).await;
    let with_underscore: Vec<_> = req
        .headers
        .iter()
        .filter(|(n, _)| n.contains('_'))
        .collect();
    assert!(with_underscore.is_empty(), "forwarded {with_underscore:?}");
    assert_eq!(req.get("x-normal"), Some("ok"));
    assert_eq!(req.all("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn underscore_headers_are_refused_when_configured() {
    refused(
        "underscore reject",
        UNDERSCORES,
        400,
        false,
        Upstream::Nothing,
        |c| {
            c.limits.underscore_headers = Underscores::Reject;
        },
    )
    .await;
}

#[tokio::test]
async fn underscore_headers_pass_when_allowed() {
    let (_, req) = forwarded(UNDERSCORES, |c| {
        c.limits.underscore_headers = Underscores::Allow;
    })
    .await;
    assert_eq!(req.get("x_secret"), Some("1"), "{}", req.head_text());
}

macro_rules! bad_host {
    ($($name:ident: $bytes:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            refused(stringify!($name), $bytes, 400, false, Upstream::Nothing, |_| {}).await;
        }
    )*};
}

bad_host! {
    missing_host_is_refused: b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n";
    two_different_hosts_are_refused: b"GET / HTTP/1.1\r\nHost: example.test\r\nHost: evil.test\r\n\r\n";
    two_identical_hosts_are_refused: b"GET / HTTP/1.1\r\nHost: example.test\r\nHost: example.test\r\n\r\n";
    host_with_a_space_is_refused: b"GET / HTTP/1.1\r\nHost: exa mple.test\r\n\r\n";
    host_with_userinfo_is_refused: b"GET / HTTP/1.1\r\nHost: user@example.test\r\n\r\n";
    host_with_a_path_is_refused: b"GET / HTTP/1.1\r\nHost: example.test/x\r\n\r\n";
    host_with_a_non_numeric_port_is_refused: b"GET / HTTP/1.1\r\nHost: example.test:http\r\n\r\n";
    host_list_is_refused: b"GET / HTTP/1.1\r\nHost: example.test, evil.test\r\n\r\n";
    // Would break out of `Forwarded: ...;host="<Host>"` and forge a `for=` if it got that far.
    host_with_a_quote_is_refused: b"GET / HTTP/1.1\r\nHost: example.test\";for=6.6.6.6;x=\"\r\n\r\n";
}

/// The Host check comes before an upstream is chosen: with no instance at all the answer is still
/// 400 (a bad request), not 503.
#[tokio::test]
async fn host_is_checked_before_an_upstream_is_chosen() {
    let d = start(&[], |_| {}).await;
    for (case, bytes) in [
        ("missing", &b"GET / HTTP/1.1\r\n\r\n"[..]),
        (
            "duplicate",
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        ),
        ("invalid", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    ] {
        let (resp, _) = exchange(d.daemon.public_addr, bytes).await;
        let status = resp.as_ref().map(|m| m.status()).map_err(|e| e.clone());
        assert_eq!(
            status,
            Ok(400),
            "{case} Host with an empty pool: {:?}",
            resp.as_ref().map(|m| m.head_text())
        );
    }
}

#[tokio::test]
async fn absolute_form_target_goes_upstream_in_origin_form_with_one_host() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let (resp, _) = exchange(
        d.daemon.public_addr,
        b"GET http://example.test/abs?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n",
    )
    .await;
    assert_eq!(resp.map(|m| m.status()), Ok(200));
    barrier(d.daemon.public_addr).await;
    let req = up.only();
    assert_eq!(req.target(), "/abs?q=1");
    assert_eq!(req.all("host"), ["example.test"], "{}", req.head_text());
}

/// A `Connection` value holding a non-ASCII byte (obs-text, which httparse accepts) must still
/// strip the headers it names — or the request is refused; never forwarded with them.
#[tokio::test]
async fn connection_with_a_non_ascii_byte_still_nominates_its_tokens() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let (resp, _) = exchange(
        d.daemon.public_addr,
        b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: x-secret, \xff\r\nX-Secret: 1\r\n\r\n",
    )
    .await;
    barrier(d.daemon.public_addr).await;
    match resp.as_ref().map(|m| m.status()) {
        Ok(400) => assert_eq!(up.bytes_received(), 0, "refused, yet {}", up.summary()),
        Ok(200) => assert_no_hop_by_hop(&up.only(), &["x-secret"], "upstream request"),
        other => panic!("unexpected answer {other:?}"),
    }
}
