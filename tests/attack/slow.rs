//! Slow clients under short timers: a slowloris head, a slow or dripping body, idle keep-alive,
//! requests per connection and connection age — none can hold a connection forever or starve
//! the others.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy_to;
use crate::raw::{barrier, Client, Recorder};

const SHORT: Duration = Duration::from_millis(300);
/// Slack over a timer before a test calls the connection held: generous for a loaded 2-core box.
const SLACK: Duration = Duration::from_millis(1200);

/// One normal request on a fresh connection; panics unless it is answered 200.
async fn normal_client(addr: SocketAddr, what: &str) {
    let mut c = Client::connect(addr).await;
    c.send(b"GET /normal HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    let r = c.response().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status(), 200, "{what}: {}", r.head_text());
}

/// What a dripping connection saw: how long the proxy kept it, and what it sent back.
struct Dripped {
    held: Duration,
    answer: Vec<u8>,
    others_served: usize,
}

/// Writes `first`, then `piece(i)` every `every` (at most `max` pieces) until the proxy closes
/// the connection; between pieces, a normal client on another connection must be served.
async fn drip(
    addr: SocketAddr,
    first: &[u8],
    piece: impl Fn(usize) -> Vec<u8>,
    every: Duration,
    max: usize,
) -> Dripped {
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let began = Instant::now();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            match r.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&b[..n]),
            }
        }
        (began.elapsed(), answer)
    });
    let _ = w.write_all(first).await;
    let mut others_served = 0;
    for i in 0..max {
        if reader.is_finished() {
            break;
        }
        normal_client(addr, "a normal client while another connection drips").await;
        others_served += 1;
        tokio::time::sleep(every).await;
        let _ = w.write_all(&piece(i)).await;
    }
    let (held, answer) = tokio::time::timeout(Duration::from_secs(1), reader)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the dripping connection was still open after {:?} of dripping",
                began.elapsed()
            )
        })
        .unwrap();
    drop(w);
    Dripped {
        held,
        answer,
        others_served,
    }
}

/// Panics if the upstream received a complete request for `target`.
fn assert_not_forwarded(up: &Recorder, target: &str) {
    let hits: Vec<String> = up
        .requests()
        .iter()
        .filter(|m| m.target() == target)
        .map(|m| crate::raw::cut(&m.head_text(), 300))
        .collect();
    assert!(
        hits.is_empty(),
        "the cut-off {target} reached the upstream: {hits:?}"
    );
}

/// The first status code in `answer`, if it holds a response.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test]
async fn slowloris_head_is_cut_off_by_the_header_timeout_while_others_are_served() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| c.server.header_timeout = SHORT).await;
    let addr = d.daemon.public_addr;
    let got = drip(
        addr,
        b"GET /slowloris HTTP/1.1\r\nHost: example.test\r\n",
        |i| format!("X-Drip-{i}: 1\r\n").into_bytes(),
        Duration::from_millis(50),
        60,
    )
    .await;
    assert!(
        got.held < SHORT + SLACK,
        "a slowloris head was held {:?} with header_timeout {SHORT:?}",
        got.held
    );
    assert!(
        got.others_served > 0,
        "no normal client was served meanwhile"
    );
    if let Some(s) = status_of(&got.answer) {
        assert_eq!(s, 408, "a cut-off head may only be answered 408");
    }
    barrier(addr).await;
    assert_not_forwarded(&up, "/slowloris");
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| c.server.header_timeout = SHORT).await;
    let mut c = Client::connect(d.daemon.public_addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.response().await.unwrap().status(), 200);
    assert!(
        c.closed_within(SHORT + SLACK).await,
        "an idle keep-alive connection outlived header_timeout {SHORT:?} by {SLACK:?}"
    );
}

#[tokio::test]
async fn stalled_body_is_cut_off_by_body_idle_timeout() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| c.limits.body_idle_timeout = SHORT).await;
    let addr = d.daemon.public_addr;
    let mut c = Client::connect(addr).await;
    let began = Instant::now();
    c.send(b"POST /stalled HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let resp = c.response_within(SHORT + SLACK).await;
    normal_client(addr, "a normal client while a body stalls").await;
    match &resp {
        Ok(m) => assert_eq!(m.status(), 408, "a stalled body got {}", m.head_text()),
        Err(e) => assert!(
            e.starts_with("connection closed"),
            "a stalled body was not cut off within {:?} of body_idle_timeout {SHORT:?}: {e}",
            SHORT + SLACK
        ),
    }
    assert!(c.closed().await, "the connection survived a cut-off body");
    assert!(began.elapsed() < SHORT + SLACK + crate::raw::CLOSE_WAIT);
    barrier(addr).await;
    assert_not_forwarded(&up, "/stalled");
}

#[tokio::test]
async fn dripping_body_is_cut_off_by_body_timeout() {
    let total = Duration::from_millis(700);
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| {
        c.limits.body_idle_timeout = SHORT;
        c.limits.body_timeout = total;
    })
    .await;
    let addr = d.daemon.public_addr;
    // One byte every 100 ms never trips the idle timer; only the total can stop it.
    let got = drip(
        addr,
        b"POST /drip HTTP/1.1\r\nHost: example.test\r\nContent-Length: 100\r\n\r\n",
        |_| b"d".to_vec(),
        Duration::from_millis(100),
        60,
    )
    .await;
    assert!(
        got.held < total + SLACK,
        "a dripping body was held {:?} with body_timeout {total:?}",
        got.held
    );
    if let Some(s) = status_of(&got.answer) {
        assert_eq!(s, 408, "a cut-off body may only be answered 408");
    }
    barrier(addr).await;
    assert_not_forwarded(&up, "/drip");
}

#[tokio::test]
async fn max_requests_per_connection_closes_gracefully() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| c.limits.max_requests_per_connection = 3).await;
    let mut c = Client::connect(d.daemon.public_addr).await;
    for i in 1..=3 {
        c.send(format!("GET /r{i} HTTP/1.1\r\nHost: example.test\r\n\r\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("request {i}: connection already closed: {e}"));
        let r = c
            .response()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status(), 200, "request {i}");
        let close = r.connection_tokens().contains(&"close".to_string());
        assert_eq!(
            close,
            i == 3,
            "request {i} of 3: `connection: close` expected only on the last:\n{}",
            r.head_text()
        );
    }
    assert!(
        c.closed().await,
        "the connection stayed open after its last allowed request"
    );
    assert_eq!(up.requests().len(), 3);
}

/// A request in flight when the connection reaches max_connection_age is answered, with
/// `connection: close`, and then the connection closes.
#[tokio::test]
async fn max_connection_age_closes_after_the_request_in_flight() {
    let age = Duration::from_millis(500);
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| c.limits.max_connection_age = age).await;
    let began = Instant::now();
    let mut c = Client::connect(d.daemon.public_addr).await;
    c.send(b"GET /young HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    let r = c.response().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !r.connection_tokens().contains(&"close".to_string()),
        "a young connection was told to close:\n{}",
        r.head_text()
    );
    // Half a body now, the rest once the connection is past its age: the request straddles it.
    c.send(b"POST /straddle HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    tokio::time::sleep_until((began + age + Duration::from_millis(200)).into()).await;
    c.send(b"world")
        .await
        .expect("the connection was closed under a request in flight");
    let r = c
        .response()
        .await
        .unwrap_or_else(|e| panic!("the request in flight at max_connection_age was cut off: {e}"));
    assert_eq!(r.status(), 200, "{}", r.head_text());
    assert!(
        r.connection_tokens().contains(&"close".to_string()),
        "the response after max_connection_age lacks `connection: close`:\n{}",
        r.head_text()
    );
    assert!(
        c.closed().await,
        "the connection stayed open after `connection: close`"
    );
    assert_eq!(
        up.requests().last().map(|m| m.body.clone()),
        Some(b"helloworld".to_vec())
    );
}

/// An idle keep-alive connection past max_connection_age is closed (header_timeout is long here,
/// so only the age can close it).
#[tokio::test]
async fn idle_connection_is_closed_at_max_connection_age() {
    let age = Duration::from_millis(500);
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| c.limits.max_connection_age = age).await;
    let mut c = Client::connect(d.daemon.public_addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.response().await.unwrap().status(), 200);
    assert!(
        c.closed_within(age + SLACK).await,
        "an idle connection outlived max_connection_age {age:?} by {SLACK:?}"
    );
}

/// The connection cap full of slow clients: they are cut off by their timers and a normal client
/// gets a slot within those timers.
#[tokio::test]
async fn slow_clients_cannot_starve_others_under_the_connection_cap() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| {
        c.server.header_timeout = SHORT;
        c.limits.body_idle_timeout = SHORT;
        c.limits.max_connections = 4;
        c.limits.connection_wait = Duration::from_millis(100);
    })
    .await;
    let addr = d.daemon.public_addr;
    let mut slow = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head: &[u8] = if i % 2 == 0 {
            b"GET / HTTP/1.1\r\nHost: example.test\r\n"
        } else {
            b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nab"
        };
        s.write_all(head).await.unwrap();
        slow.push(s);
    }
    let began = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let mut c = Client::connect(addr).await;
        let _ = c
            .send(b"GET /normal HTTP/1.1\r\nHost: example.test\r\n\r\n")
            .await;
        if let Ok(r) = c.response_within(Duration::from_secs(1)).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            began.elapsed() < SHORT + SLACK * 2,
            "no normal client served within {:?} ({tries} tries) while 4 slow clients held the cap",
            began.elapsed()
        );
    }
    drop(slow);
}

#[tokio::test]
async fn a_body_below_the_minimum_rate_is_a_client_408_not_an_upstream_timeout() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| {
        c.limits.body_min_rate = 500;
        c.limits.body_min_rate_grace = SHORT;
        // Neither of the other body timers, nor the upstream's, may be the one that fires.
        c.limits.body_idle_timeout = Duration::from_secs(30);
        c.limits.body_timeout = Duration::from_secs(60);
        c.upstream.response_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = d.daemon.public_addr;
    // 10 bytes a second (slowhttptest -B style): far below 500 B/s once the grace has passed.
    let got = drip(
        addr,
        b"POST /slow-body HTTP/1.1\r\nHost: example.test\r\nContent-Length: 8192\r\n\r\n",
        |_| b"s".to_vec(),
        Duration::from_millis(100),
        60,
    )
    .await;
    assert!(
        got.held < SHORT + SLACK,
        "a body below the minimum rate was held {:?} (grace {SHORT:?})",
        got.held
    );
    assert_eq!(
        status_of(&got.answer),
        Some(408),
        "{}",
        String::from_utf8_lossy(&got.answer)
    );
    let m = d.daemon.metrics.render();
    assert!(
        m.contains("zerodown_requests_refused_total{reason=\"slow request body\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("zerodown_upstream_timeouts_total{service=\"default\",pool=\"active\"} 0"),
        "the upstream was blamed:\n{m}"
    );
}

#[tokio::test]
async fn a_route_can_turn_the_minimum_rate_off() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| {
        c.limits.body_min_rate = 500;
        c.limits.body_min_rate_grace = Duration::from_millis(100);
        c.routes.push(zerodown::config::Route {
            body_min_rate: Some(0),
            ..zerodown::config::Route::new("/upload", zerodown::config::PoolName::Active)
        });
    })
    .await;
    let addr = d.daemon.public_addr;
    let mut c = Client::connect(addr).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    for b in [b"a", b"b", b"c", b"d", b"e"] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send(b).await.unwrap();
    }
    let r = c.response_within(SLACK).await.expect("answer");
    assert_eq!(r.status(), 200, "{}", r.head_text());
}
