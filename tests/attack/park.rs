//! Parked keep-alive connections (`http::park`): an idle HTTP/1 connection gives back hyper's
//! buffers and keeps its socket; its next requests are answered on the same socket, without
//! `Connection: close`, and a connection closed while parked is noticed.

use std::time::{Duration, Instant};

use crate::proxy_to;
use crate::raw::{Client, Recorder};

/// Waits (up to 10 s) until `parked` gauge reads `want`.
async fn parked_becomes(d: &crate::common::TestDaemon, want: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = d.daemon.metrics.connections_parked.get();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: client_connections_parked stayed {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_kept_open(r: &crate::raw::Message, what: &str) {
    assert_eq!(r.status(), 200, "{what}:\n{}", r.head_text());
    assert!(
        !r.connection_tokens().contains(&"close".to_string()),
        "{what}: told to close:\n{}",
        r.head_text()
    );
}

#[tokio::test]
async fn a_parked_connection_answers_its_next_requests_on_the_same_socket() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let mut c = Client::connect(d.daemon.public_addr).await;
    c.send(b"GET /one HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    assert_kept_open(&c.response().await.unwrap(), "first request");
    parked_becomes(&d, 1, "after the first answer").await;

    // Two pipelined requests in one write wake it: both answered, in order.
    c.send(
        b"GET /two HTTP/1.1\r\nHost: example.test\r\n\r\n\
          POST /three HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .expect("the parked connection was closed");
    assert_kept_open(&c.response().await.unwrap(), "first request after parking");
    assert_kept_open(&c.response().await.unwrap(), "pipelined second request");
    parked_becomes(&d, 1, "parked again").await;

    // A head that arrives in pieces across the wake-up is still one request.
    c.send(b"GET /fo").await.unwrap();
    c.send(b"ur HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    assert_kept_open(
        &c.response().await.unwrap(),
        "head split across the wake-up",
    );

    // Whole request lines: a byte lost or repeated across a park would show here.
    let lines: Vec<String> = up.requests().iter().map(|m| m.start.clone()).collect();
    assert_eq!(
        lines,
        [
            "GET /one HTTP/1.1",
            "GET /two HTTP/1.1",
            "POST /three HTTP/1.1",
            "GET /four HTTP/1.1"
        ]
    );
    assert_eq!(up.requests()[2].body, b"hello");

    parked_becomes(&d, 1, "parked before the client leaves").await;
    drop(c);
    parked_becomes(&d, 0, "the client closed a parked connection").await;
}

/// Shutdown closes a parked connection after the drain grace (it holds no request) instead of
/// waiting out `drain_timeout` (or the idle timeout) for it.
#[tokio::test]
async fn a_drain_closes_a_parked_connection_without_waiting_for_it() {
    let up = Recorder::echo().await;
    // Long timers: only the drain may close it.
    let d = proxy_to(&up, |c| {
        c.server.drain_timeout = Duration::from_secs(60);
        c.server.header_timeout = Duration::from_secs(60);
    })
    .await;
    let mut c = Client::connect(d.daemon.public_addr).await;
    c.send(b"GET /one HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    assert_kept_open(&c.response().await.unwrap(), "first request");
    parked_becomes(&d, 1, "after the first answer").await;

    let crate::common::TestDaemon {
        daemon, dir: _dir, ..
    } = d;
    let bound = Duration::from_secs(15);
    let (closed, stopped) = tokio::join!(
        c.closed_within(bound),
        tokio::time::timeout(bound, daemon.shutdown())
    );
    assert!(closed, "the parked connection was not closed by the drain");
    assert!(
        stopped.is_ok(),
        "the drain waited for the parked connection (drain_timeout 60 s)"
    );
}
