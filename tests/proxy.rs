//! The request path against real sockets: routes, rewrite, errors, retry, ejection, streaming.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

#[tokio::test]
async fn routes_rewrite_and_health() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let d = start(
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("s", v2.to_string(), "v2", "standby"),
        ],
        |_| {},
    )
    .await;
    let addr = d.daemon.public_addr;
    assert_eq!(
        get(addr, "/hello").await,
        (200, "msg-v1 (version v1)\n".into())
    );
    assert_eq!(
        get(addr, "/standby").await,
        (200, "msg-v2 (version v2)\n".into())
    );
    // /standby/x → /hello/x on the standby pool, query kept.
    assert_eq!(
        get(addr, "/standby/x?q=1").await,
        (200, "msg-v2 (version v2)\n".into())
    );
    // Segment matching: /standbyx is not /standby, so it goes to the active pool unchanged (404 there).
    assert_eq!(get(addr, "/standbyx").await.0, 404);
    assert_eq!(get(addr, "/health").await, (200, "healthy\n".into()));
}

#[tokio::test]
async fn empty_pool_is_503_and_all_failed_is_502() {
    let dead = dead_address();
    let d = start(&[("dead", dead.to_string(), "v1", "active")], |_| {}).await;
    let addr = d.daemon.public_addr;
    let (status, body) = get(addr, "/hello").await;
    assert_eq!(status, 502);
    assert!(body.contains("bad gateway"), "{body}");
    // No standby instance at all: 503, and never a fallback to the active pool.
    let (status, body) = get(addr, "/standby").await;
    assert_eq!(status, 503);
    assert!(body.contains("no upstream"), "{body}");
}

#[tokio::test]
async fn first_load_may_be_empty_then_503() {
    let d = start(&[], |_| {}).await;
    assert_eq!(get(d.daemon.public_addr, "/hello").await.0, 503);
}

#[tokio::test]
async fn connect_failure_is_retried_on_another_instance() {
    let live = backend("v1").await;
    let dead = dead_address();
    let d = start(
        &[
            ("dead", dead.to_string(), "v1", "active"),
            ("live", live.to_string(), "v1", "active"),
        ],
        |c| c.upstream.eject_after = 1000,
    )
    .await;
    let mut c = Conn::open(d.daemon.public_addr).await.unwrap();
    for _ in 0..20 {
        assert_eq!(c.get("/hello").await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn failing_instance_is_ejected_then_returns() {
    let live = backend("v1").await;
    // Reserve a port for the instance that will come back later.
    let later = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let later_addr = later.local_addr().unwrap();
    drop(later);
    let d = start(
        &[
            ("live", live.to_string(), "v1", "active"),
            ("later", later_addr.to_string(), "v1", "active"),
        ],
        |c| {
            c.upstream.eject_after = 2;
            c.upstream.eject_for = Duration::from_millis(300);
        },
    )
    .await;
    let mut c = Conn::open(d.daemon.public_addr).await.unwrap();
    for _ in 0..6 {
        assert_eq!(c.get("/hello").await.unwrap().0, 200);
    }
    let snap = d.daemon.publisher().load_full();
    let later_member = snap
        .active
        .members
        .iter()
        .find(|m| m.instance.id == "later")
        .unwrap();
    assert!(
        later_member.endpoint.health.is_ejected(),
        "not ejected after repeated connect failures"
    );
    // The instance comes back; once the cooldown ends it serves again.
    let back = tokio::net::TcpListener::bind(later_addr).await.unwrap();
    tokio::spawn(zerodown::demo::serve_backend(
        back,
        zerodown::demo::Backend {
            version: "v1".into(),
            message: "back".into(),
        },
    ));
    eventually("ejected instance serves again", || {
        let addr = d.daemon.public_addr;
        async move { get(addr, "/hello").await.1.starts_with("back") }
    })
    .await;
    assert!(!later_member.endpoint.health.is_ejected());
}

/// An upstream that accepts and reads but never answers.
async fn silent_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let slow = silent_upstream().await;
    let d = start(&[("slow", slow.to_string(), "v1", "active")], |c| {
        c.upstream.response_timeout = Duration::from_millis(200);
    })
    .await;
    let (status, body) = get(d.daemon.public_addr, "/hello").await;
    assert_eq!(status, 504);
    assert!(body.contains("gateway timeout"), "{body}");
}

/// The `x-request-id` values a `headers_echo` upstream reports it received.
fn ids_seen_upstream(echo_body: &str) -> Vec<&str> {
    echo_body
        .lines()
        .filter_map(|l| l.strip_prefix("x-request-id: "))
        .collect()
}

fn response_id(headers: &http::HeaderMap) -> &str {
    let ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
    assert_eq!(
        ids.len(),
        1,
        "one x-request-id on the response: {headers:?}"
    );
    ids[0].to_str().unwrap()
}

#[tokio::test]
async fn request_id_is_passed_through_or_generated() {
    let echo = headers_echo().await;
    let d = start(&[("e", echo.to_string(), "v1", "active")], |_| {}).await;
    let mut c = Conn::open(d.daemon.public_addr).await.unwrap();

    // A client's id reaches the upstream and comes back, unchanged.
    let (status, headers, body) = c
        .exchange(
            http::Request::get("/x").header("x-request-id", "abc-123"),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(ids_seen_upstream(&body), ["abc-123"], "{body}");
    assert_eq!(response_id(&headers), "abc-123");

    // Without one (or with an empty or oversized one), the proxy generates an id: 20 hex digits,
    // the same one to the upstream and back to the client, and a new one per request.
    let too_long = "x".repeat(201);
    let mut generated = Vec::new();
    for sent in [None, Some(""), Some(too_long.as_str()), None] {
        let mut req = http::Request::get("/x");
        if let Some(v) = sent {
            req = req.header("x-request-id", v);
        }
        let (status, headers, body) = c.exchange(req, Bytes::new()).await.unwrap();
        assert_eq!(status, 200);
        let id = response_id(&headers).to_string();
        assert!(
            id.len() == 20 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "generated id {id:?} for {sent:?}"
        );
        assert_eq!(ids_seen_upstream(&body), [id.as_str()], "{body}");
        generated.push(id);
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 4, "ids repeat: {generated:?}");

    let (_, body) = c.get("/x").await.unwrap();
    assert!(body.contains("x-real-ip: 127.0.0.1"), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(
        body.contains(&format!("x-forwarded-host: {}", d.daemon.public_addr)),
        "{body}"
    );
}

/// The proxy's own error answers carry the id too, so a failed request can be found in the log.
#[tokio::test]
async fn request_id_comes_back_on_a_proxy_error() {
    let d = start(
        &[("dead", dead_address().to_string(), "v1", "active")],
        |_| {},
    )
    .await;
    let mut c = Conn::open(d.daemon.public_addr).await.unwrap();
    let (status, headers, _) = c
        .exchange(
            http::Request::get("/x").header("x-request-id", "abc-123"),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, 502);
    assert_eq!(response_id(&headers), "abc-123");
    let (status, headers, _) = c
        .exchange(http::Request::get("/x"), Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, 502);
    let id = response_id(&headers);
    assert!(
        id.len() == 20 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped() {
    let echo = headers_echo().await;
    let d = start(&[("e", echo.to_string(), "v1", "active")], |_| {}).await;
    let mut c = Conn::open(d.daemon.public_addr).await.unwrap();
    let (_, body) = c
        .send(
            http::Request::get("/x")
                .header("connection", "keep-alive, x-private")
                .header("x-private", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-authorization", "Basic Zm9v")
                .header("x-kept", "yes"),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert!(body.contains("x-kept: yes"), "{body}");
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "connection: keep-alive, x-private",
    ] {
        assert!(!body.contains(gone), "{gone} was forwarded: {body}");
    }
}
