//! Pool lifecycle through the file source: never empty, invalid edits ignored, removed instances
//! finish in-flight work and lose their idle connections; and HTTP/2 (h2c) clients.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use zerodown::http::upstream::ConnPool;

#[tokio::test]
async fn emptied_file_keeps_the_last_pool_and_status_says_so() {
    let v1 = backend("v1").await;
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    let mut rx = d.daemon.publisher().subscribe();
    write_upstreams(&d.upstreams, &[]);
    tokio::time::timeout(DEADLINE, rx.wait_for(|g| *g >= 2))
        .await
        .unwrap()
        .unwrap();
    let snap = d.daemon.publisher().load_full();
    assert!(
        matches!(snap.active.hold, Some(zerodown::core::Hold::Empty { .. })),
        "{:?}",
        snap.active.hold
    );
    assert_eq!(
        get(d.daemon.public_addr, "/hello").await,
        (200, "msg-v1 (version v1)\n".into())
    );
}

#[tokio::test]
async fn invalid_edit_is_ignored_and_the_pool_keeps_serving() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    std::fs::write(&d.upstreams, "[[instances]]\naddress = \"no-port\"\n").unwrap();
    // Give the source several polls to (wrongly) act on it.
    for _ in 0..10 {
        assert_eq!(get(d.daemon.public_addr, "/hello").await.0, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(d.daemon.publisher().load_full().generation, 1);
    // A valid edit afterwards is applied.
    write_upstreams(&d.upstreams, &[("b", v2.to_string(), "v2", "active")]);
    eventually("valid edit applied", || async {
        get(d.daemon.public_addr, "/hello").await.1.contains("v2")
    })
    .await;
}

/// An upstream that counts its open connections and answers `/slow` only when told to.
struct Counting {
    addr: std::net::SocketAddr,
    open: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

async fn counting_upstream() -> Counting {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (o, r) = (open.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            o.fetch_add(1, Ordering::SeqCst);
            let (o, r) = (o.clone(), r.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            if req.uri().path() == "/slow" {
                                r.notified().await;
                            }
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                "counted v1",
                            ))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Counting {
        addr,
        open,
        release,
    }
}

#[tokio::test]
async fn removed_instance_finishes_in_flight_and_closes_idle_connections() {
    let old = counting_upstream().await;
    let new = backend("v2").await;
    let d = start(&[("old", old.addr.to_string(), "v1", "active")], |_| {}).await;
    let addr = d.daemon.public_addr;
    // Keep a slow request in flight on one upstream connection; a fast request then needs a
    // second connection, which goes back to the idle pool.
    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    eventually("slow request at the upstream", || {
        let open = old.open.clone();
        async move { open.load(Ordering::SeqCst) == 1 }
    })
    .await;
    assert_eq!(get(addr, "/fast").await.0, 200);
    assert_eq!(old.open.load(Ordering::SeqCst), 2);
    let snap = d.daemon.publisher().load_full();
    let upstream = snap.active.members[0].endpoint.clone();
    drop(snap);
    eventually("fast connection back in the idle pool", || {
        let up = upstream.clone();
        async move { ConnPool::of(&up).idle_connections() == 1 }
    })
    .await;
    drop(upstream);

    write_upstreams(&d.upstreams, &[("new", new.to_string(), "v2", "active")]);
    eventually("new instance serving", || async {
        get(addr, "/hello").await.1.contains("v2")
    })
    .await;
    // The idle connection to the removed instance is closed; the in-flight one is not.
    eventually("idle connection to the removed instance closed", || {
        let open = old.open.clone();
        async move { open.load(Ordering::SeqCst) == 1 }
    })
    .await;
    old.release.notify_one();
    assert_eq!(slow.await.unwrap(), (200, "counted v1".into()));
    eventually("last connection to the removed instance closed", || {
        let open = old.open.clone();
        async move { open.load(Ordering::SeqCst) == 0 }
    })
    .await;
}

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served() {
    let v1 = backend("v1").await;
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    let stream = tokio::net::TcpStream::connect(d.daemon.public_addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/hello", "/standby"] {
        let uri = format!("http://{}{path}", d.daemon.public_addr);
        let req = http::Request::get(uri)
            .body(Full::<Bytes>::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if path == "/hello" {
            assert_eq!((status, &body[..]), (200, &b"msg-v1 (version v1)\n"[..]));
        } else {
            assert_eq!(
                status, 503,
                "no standby instance: 503, never the active pool"
            );
        }
    }
}

#[tokio::test]
async fn a_file_that_vanishes_and_returns_unchanged_is_healthy_again() {
    let v1 = backend("v1").await;
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    let status = d.daemon.status();
    let aside = d.upstreams.with_extension("moved");
    std::fs::rename(&d.upstreams, &aside).unwrap();
    eventually("read error recorded", || async {
        status.state().stale_since_ms.is_some()
    })
    .await;
    assert_eq!(
        get(d.daemon.public_addr, "/hello").await.0,
        200,
        "the last pool keeps serving"
    );
    std::fs::rename(&aside, &d.upstreams).unwrap();
    eventually("source healthy again with the same content", || async {
        let s = status.state();
        s.stale_since_ms.is_none() && s.consecutive_errors == 0
    })
    .await;
}

/// A pooled connection nobody reuses is closed once it has been idle for `upstream.idle_timeout`,
/// without waiting for a next request to that instance.
#[tokio::test]
async fn an_idle_upstream_connection_is_closed_after_the_idle_timeout() {
    let up = counting_upstream().await;
    let d = start(&[("a", up.addr.to_string(), "v1", "active")], |c| {
        c.upstream.idle_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    assert_eq!(get(d.daemon.public_addr, "/fast").await.0, 200);
    assert_eq!(up.open.load(Ordering::SeqCst), 1, "one pooled connection");
    eventually("the idle connection closed by the reaper", || {
        let open = up.open.clone();
        async move { open.load(Ordering::SeqCst) == 0 }
    })
    .await;
}
