//! Limits: request head size and header count (431), body size per route (413), malformed or
//! oversized upstream answers (502), and the client connection cap.

use std::time::{Duration, Instant};

use zerodown::config::{PoolName, Route};

use crate::raw::{exchange, Client, Recorder};
use crate::{proxy_to, refused, Upstream};

fn with_headers(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.test\r\n{extra}\r\n").into_bytes()
}

/// `n` distinct headers named `x-h-<i>`.
fn many_headers(n: usize) -> String {
    (0..n).map(|i| format!("X-H-{i}: {i}\r\n")).collect()
}

#[tokio::test]
async fn hundred_headers_are_served() {
    // Host + 99 = 100 headers: at the limit.
    let bytes = with_headers("/", &many_headers(99));
    let (resp, _) = crate::forwarded(&bytes, |_| {}).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn more_than_hundred_headers_is_431() {
    let bytes = with_headers("/", &many_headers(100));
    refused("101 headers", &bytes, 431, false, Upstream::Nothing, |_| {}).await;
}

#[tokio::test]
async fn header_count_limit_follows_the_config() {
    let bytes = with_headers("/", &many_headers(20));
    refused(
        "21 headers, max 10",
        &bytes,
        431,
        false,
        Upstream::Nothing,
        |c| {
            c.limits.max_headers = 10;
        },
    )
    .await;
}

#[tokio::test]
async fn head_just_under_64k_is_served() {
    let bytes = with_headers("/", &format!("X-Big: {}\r\n", "a".repeat(60 * 1024)));
    let (_, req) = crate::forwarded(&bytes, |_| {}).await;
    assert_eq!(req.get("x-big").map(str::len), Some(60 * 1024));
}

#[tokio::test]
async fn head_over_64k_is_431() {
    let bytes = with_headers("/", &format!("X-Big: {}\r\n", "a".repeat(70 * 1024)));
    refused(
        "70 KiB header",
        &bytes,
        431,
        false,
        Upstream::Nothing,
        |_| {},
    )
    .await;
}

/// The limit covers request line + headers together: a 40 KiB target and a 30 KiB header are each
/// small, together over 64 KiB.
#[tokio::test]
async fn head_limit_counts_the_request_line() {
    let path = format!("/{}", "p".repeat(40 * 1024));
    let bytes = with_headers(&path, &format!("X-Big: {}\r\n", "a".repeat(30 * 1024)));
    refused(
        "40 KiB target + 30 KiB header",
        &bytes,
        431,
        false,
        Upstream::Nothing,
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn head_limit_follows_the_config() {
    let bytes = with_headers("/", &format!("X-Big: {}\r\n", "a".repeat(20 * 1024)));
    refused(
        "20 KiB header, max 16 KiB",
        &bytes,
        431,
        false,
        Upstream::Nothing,
        |c| {
            c.limits.max_header_bytes = 16 * 1024;
        },
    )
    .await;
}

const MIB: usize = 1024 * 1024;

fn post(path: &str, len: usize) -> Vec<u8> {
    let mut b =
        format!("POST {path} HTTP/1.1\r\nHost: example.test\r\nContent-Length: {len}\r\n\r\n")
            .into_bytes();
    b.resize(b.len() + len, b'b');
    b
}

fn routes_with(c: &mut zerodown::config::Config, prefix: &str, max: u64) {
    c.routes.insert(
        0,
        Route {
            max_body_bytes: Some(max),
            ..Route::new(prefix, PoolName::Active)
        },
    );
}

#[tokio::test]
async fn body_at_the_limit_is_served() {
    let (_, req) = crate::forwarded(&post("/", MIB), |_| {}).await;
    assert_eq!(req.body.len(), MIB);
}

/// A declared length over the limit is answered 413 from the head alone: nothing goes upstream.
#[tokio::test]
async fn declared_body_over_the_limit_is_413_before_anything_goes_upstream() {
    let head = format!(
        "POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: {}\r\n\r\n",
        MIB + 1
    );
    refused(
        "CL 1 MiB + 1",
        head.as_bytes(),
        413,
        false,
        Upstream::Nothing,
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let mut bytes =
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'c'; 64 * 1024];
    for _ in 0..17 {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(&chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    refused(
        "chunked 1 MiB + 64 KiB",
        &bytes,
        413,
        false,
        Upstream::NoCompleteRequest,
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn a_route_can_raise_the_body_limit() {
    let bytes = post("/upload", MIB + MIB / 2);
    let (_, req) = crate::forwarded(&bytes, |c| routes_with(c, "/upload", 2 * MIB as u64)).await;
    assert_eq!(req.body.len(), MIB + MIB / 2);
    let over = format!(
        "POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: {}\r\n\r\n",
        2 * MIB + 1
    );
    refused(
        "/upload over 2 MiB",
        over.as_bytes(),
        413,
        false,
        Upstream::Nothing,
        |c| routes_with(c, "/upload", 2 * MIB as u64),
    )
    .await;
}

#[tokio::test]
async fn a_route_can_lower_the_body_limit() {
    let (_, req) = crate::forwarded(&post("/tiny", 10), |c| routes_with(c, "/tiny", 10)).await;
    assert_eq!(req.body.len(), 10);
    refused(
        "/tiny 11 bytes",
        &post("/tiny", 11),
        413,
        false,
        Upstream::Nothing,
        |c| routes_with(c, "/tiny", 10),
    )
    .await;
}

/// A malicious upstream answers `answer`; the client must get a 502 (and no part of the answer).
async fn upstream_answer_is_502(case: &str, answer: Vec<u8>) {
    upstream_answer_is_502_with(case, answer, |_| {}).await
}

async fn upstream_answer_is_502_with(
    case: &str,
    answer: Vec<u8>,
    tweak: impl FnOnce(&mut zerodown::config::Config),
) {
    let up = Recorder::canned(answer).await;
    let d = proxy_to(&up, tweak).await;
    let (resp, _) = exchange(
        d.daemon.public_addr,
        b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
    )
    .await;
    match resp {
        Ok(m) if m.status() == 502 => {}
        Ok(m) => panic!(
            "{case}: client got {} instead of 502:\n{}",
            m.status(),
            m.head_text()
        ),
        Err(e) => panic!("{case}: client got no 502: {e}"),
    }
}

#[tokio::test]
async fn upstream_bad_status_line_is_502() {
    upstream_answer_is_502(
        "bad status",
        b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    )
    .await;
}

#[tokio::test]
async fn upstream_not_speaking_http_is_502() {
    upstream_answer_is_502("garbage", b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()).await;
}

#[tokio::test]
async fn upstream_differing_content_lengths_is_502() {
    upstream_answer_is_502(
        "two CL",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_vec(),
    )
    .await;
}

#[tokio::test]
async fn upstream_nul_in_header_is_502() {
    upstream_answer_is_502(
        "NUL",
        b"HTTP/1.1 200 OK\r\nx-a: a\0b\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    )
    .await;
}

#[tokio::test]
async fn upstream_obs_fold_is_502() {
    upstream_answer_is_502(
        "obs-fold",
        b"HTTP/1.1 200 OK\r\nx-a: a\r\n folded\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    )
    .await;
}

/// The very first chunk-size line is invalid: the head is held for the first chunk
/// (`upstream.first_chunk_wait`, raised here so a loaded machine cannot make it a race).
#[tokio::test]
async fn upstream_invalid_chunk_size_is_502() {
    upstream_answer_is_502_with(
        "bad chunk",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
        |c| c.upstream.first_chunk_wait = std::time::Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn upstream_head_over_64k_is_502() {
    // Two 40 KiB headers: few headers, so only the size limit can catch it.
    let big = "u".repeat(40 * 1024);
    upstream_answer_is_502(
        "80 KiB head",
        format!("HTTP/1.1 200 OK\r\nx-a: {big}\r\nx-b: {big}\r\ncontent-length: 2\r\n\r\nok")
            .into_bytes(),
    )
    .await;
}

#[tokio::test]
async fn upstream_head_under_64k_is_relayed() {
    let big = "u".repeat(30 * 1024);
    let up = Recorder::canned(
        format!("HTTP/1.1 200 OK\r\nx-a: {big}\r\ncontent-length: 2\r\n\r\nok").into_bytes(),
    )
    .await;
    let d = proxy_to(&up, |_| {}).await;
    let (resp, _) = exchange(
        d.daemon.public_addr,
        b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
    )
    .await;
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.get("x-a").map(str::len), Some(30 * 1024));
}

/// An upstream answer with both Content-Length and Transfer-Encoding is either refused (502) or
/// re-framed: never both headers to the client, and the chunked body wins.
#[tokio::test]
async fn upstream_cl_and_te_never_reach_the_client_together() {
    let up = Recorder::canned(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
    )
    .await;
    let d = proxy_to(&up, |_| {}).await;
    let (resp, _) = exchange(
        d.daemon.public_addr,
        b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
    )
    .await;
    let resp = resp.unwrap();
    if resp.status() != 502 {
        crate::assert_one_framing(&resp, b"hello", "client response");
    }
}

/// Opens a connection and proves it is being served (one full exchange on it).
async fn served(addr: std::net::SocketAddr, what: &str) -> Client {
    let mut c = Client::connect(addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    let r = c.response().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status(), 200, "{what}");
    c
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_after_the_wait_and_existing_ones_keep_working() {
    let up = Recorder::echo().await;
    let wait = Duration::from_millis(200);
    let d = proxy_to(&up, |c| {
        c.limits.max_connections = 2;
        c.limits.connection_wait = wait;
    })
    .await;
    let addr = d.daemon.public_addr;
    let mut c1 = served(addr, "first connection").await;
    let mut c2 = served(addr, "second connection").await;

    let began = Instant::now();
    let mut c3 = Client::connect(addr).await;
    let _ = c3
        .send(b"GET /third HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await;
    let resp = c3.response_within(wait * 10).await;
    let elapsed = began.elapsed();
    match &resp {
        Err(_) => {}
        Ok(m) if m.status() == 503 => {}
        Ok(m) => panic!(
            "third connection over a cap of 2 was served: {}",
            m.head_text()
        ),
    }
    assert!(
        c3.closed().await,
        "third connection over a cap of 2 was left open ({resp:?})"
    );
    assert!(
        elapsed >= wait.mul_f32(0.8),
        "third connection was refused after {elapsed:?}, without waiting connection_wait ({wait:?})"
    );
    barrier_on(&mut c1, "first connection after the refusal").await;
    barrier_on(&mut c2, "second connection after the refusal").await;
    assert!(
        up.requests().iter().all(|m| m.target() != "/third"),
        "the refused connection's request reached the upstream"
    );
}

async fn barrier_on(c: &mut Client, what: &str) {
    c.send(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    let r = c.response().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status(), 200, "{what}");
}

#[tokio::test]
async fn a_waiting_connection_is_served_when_a_slot_frees() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| {
        c.limits.max_connections = 2;
        c.limits.connection_wait = Duration::from_secs(3);
    })
    .await;
    let addr = d.daemon.public_addr;
    let c1 = served(addr, "first connection").await;
    let _c2 = served(addr, "second connection").await;
    let mut c3 = Client::connect(addr).await;
    c3.send(b"GET /third HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    drop(c1);
    let r = c3
        .response()
        .await
        .expect("the waiting connection was not served after a slot freed");
    assert_eq!(r.status(), 200);
}
