//! HTTP/2 (h2c by prior knowledge): advertised limits, and floods that must end in GOAWAY for the
//! flooding connection while other clients keep being served. The flooding client writes raw
//! frames (`common/h2raw.rs`); the well-behaved one is hyper's HTTP/2 client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::h2raw::*;
use crate::raw::Recorder;
use crate::{assert_one_framing, proxy_to, HOST};

type Sender = http2::SendRequest<Full<Bytes>>;

async fn h2_client(addr: SocketAddr) -> Sender {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2_request(
    s: &mut Sender,
    addr: SocketAddr,
    req: http::request::Builder,
    body: &'static [u8],
) -> (u16, Bytes) {
    let req = req
        .uri(format!("http://{addr}/h2"))
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let fut = async {
        s.ready().await?;
        let resp = s.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("h2 request hung")
        .expect("h2 request failed")
}

async fn h2_get_ok(s: &mut Sender, addr: SocketAddr, what: &str) {
    let (status, body) = h2_request(s, addr, http::Request::get("/"), b"").await;
    assert_eq!((status, &body[..]), (200, &b"echo\n"[..]), "{what}");
}

#[tokio::test]
async fn h2_settings_advertise_the_defaults() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let h = H2::connect(d.daemon.public_addr).await;
    assert_eq!(
        h.setting(SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(128),
        "server SETTINGS {:?}",
        h.settings
    );
    let list = h.setting(SETTINGS_MAX_HEADER_LIST_SIZE);
    assert!(
        list.is_some_and(|v| (16 * 1024..=64 * 1024).contains(&v)),
        "MAX_HEADER_LIST_SIZE {list:?} not within 16–64 KiB; SETTINGS {:?}",
        h.settings
    );
}

#[tokio::test]
async fn h2_settings_follow_the_config() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| {
        c.http2.max_concurrent_streams = 7;
        c.http2.max_header_list_size = 16 * 1024;
    })
    .await;
    let h = H2::connect(d.daemon.public_addr).await;
    assert_eq!(
        h.setting(SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(7),
        "{:?}",
        h.settings
    );
    assert_eq!(
        h.setting(SETTINGS_MAX_HEADER_LIST_SIZE),
        Some(16 * 1024),
        "{:?}",
        h.settings
    );
}

/// An h2 request with a body reaches the HTTP/1.1 upstream framed once, like any other.
#[tokio::test]
async fn h2_request_body_is_reframed_for_the_upstream() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let addr = d.daemon.public_addr;
    let mut s = h2_client(addr).await;
    let (status, _) = h2_request(
        &mut s,
        addr,
        http::Request::post("/").header("content-length", "5"),
        b"hello",
    )
    .await;
    assert_eq!(status, 200);
    let req = up.only();
    assert_one_framing(&req, b"hello", "upstream");
    assert_eq!(req.all("host").len(), 1, "{}", req.head_text());
}

/// Runs `flood` on a raw connection and returns the GOAWAY it ended in, with the count of frames
/// received before it by type; meanwhile an h2 client opened before the flood, and a fresh one
/// after it, must both be served.
async fn flood_ends_in_goaway(
    addr: SocketAddr,
    what: &str,
    batches: Vec<Vec<u8>>,
) -> (GoAway, [usize; 16]) {
    let mut bystander = h2_client(addr).await;
    h2_get_ok(&mut bystander, addr, "bystander before the flood").await;
    let mut h = H2::connect(addr).await;
    let writer = h.flood(batches);
    let mut seen = [0usize; 16];
    let goaway = h.until_goaway(Duration::from_secs(5), &mut seen).await;
    writer.abort();
    let goaway = match goaway {
        Ok(Some(g)) => g,
        Ok(None) => {
            panic!("{what}: connection closed without a GOAWAY (frames seen by type: {seen:?})")
        }
        Err(e) => panic!("{what}: {e} (frames seen by type: {seen:?})"),
    };
    h2_get_ok(&mut bystander, addr, &format!("bystander after the {what}")).await;
    let mut fresh = h2_client(addr).await;
    h2_get_ok(&mut fresh, addr, &format!("fresh client after the {what}")).await;
    (goaway, seen)
}

#[tokio::test]
async fn h2_rapid_reset_ends_in_goaway_while_others_are_served() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let addr = d.daemon.public_addr;
    let block = get_block(HOST, "/");
    let mut batches = Vec::new();
    for b in 0..20u32 {
        let mut batch = Vec::new();
        for i in 0..50u32 {
            let id = 1 + 2 * (b * 50 + i);
            batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
            batch.extend(rst(id, CANCEL));
        }
        batches.push(batch);
    }
    let (g, _) = flood_ends_in_goaway(addr, "rapid reset (1000 streams)", batches).await;
    assert_eq!(g.code, ENHANCE_YOUR_CALM, "rapid reset GOAWAY {g:?}");
}

#[tokio::test]
async fn h2_continuation_flood_ends_in_goaway_while_others_are_served() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let addr = d.daemon.public_addr;
    // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATIONs of ~1 KiB.
    let mut batches = vec![frame(HEADERS, END_STREAM, 1, &get_block(HOST, "/"))];
    let mut piece = Vec::new();
    for i in 0..10 {
        hpack_literal(&format!("x-flood-{i}"), &[b'f'; 90], &mut piece);
    }
    for _ in 0..20 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            batch.extend(frame(CONTINUATION, 0, 1, &piece));
        }
        batches.push(batch);
    }
    let (g, _) = flood_ends_in_goaway(addr, "CONTINUATION flood (1000 frames)", batches).await;
    assert_ne!(g.code, NO_ERROR, "CONTINUATION flood GOAWAY {g:?}");
}

/// Streams the server itself must reset (an invalid content-length is a stream error).
fn bad_streams(n: u32) -> Vec<Vec<u8>> {
    let mut block = get_block(HOST, "/");
    hpack_literal_indexed_name(28, b"abc", &mut block); // content-length: abc
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &block));
        if batch.len() > 16 * 1024 {
            batches.push(std::mem::take(&mut batch));
        }
    }
    batches.push(batch);
    batches
}

/// How many bad streams the server dealt with before its GOAWAY, from two lower bounds: the
/// RST_STREAMs it sent (it may send the GOAWAY before flushing them), and the streams it
/// processed per GOAWAY's last-stream-id (streams refused for concurrency — locally reset
/// streams occupy a slot until they expire — are not "processed"). Observed with hyper 1.12 /
/// h2 0.4.20: limit 10 → last-stream-id 21 and no RST_STREAM yet; limit 1024 → 824 RST_STREAMs,
/// last-stream-id 399 (h2 counts a stream that is reset and then refused twice).
fn streams_handled(g: &GoAway, seen: &[usize; 16]) -> usize {
    seen[RST_STREAM as usize].max((g.last_stream as usize).div_ceil(2))
}

#[tokio::test]
async fn h2_local_error_resets_end_in_goaway_at_the_configured_limit() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| c.http2.max_local_error_reset_streams = 10).await;
    let (g, seen) = flood_ends_in_goaway(
        d.daemon.public_addr,
        "error-reset flood (limit 10)",
        bad_streams(200),
    )
    .await;
    assert_eq!(g.code, ENHANCE_YOUR_CALM, "{g:?}");
    let resets = streams_handled(&g, &seen);
    assert!(
        (5..=12).contains(&resets),
        "{resets} streams reset before the GOAWAY with a limit of 10: {g:?}"
    );
}

#[tokio::test]
async fn h2_local_error_reset_limit_defaults_to_1024() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let (g, seen) = flood_ends_in_goaway(
        d.daemon.public_addr,
        "error-reset flood (default limit)",
        bad_streams(1100),
    )
    .await;
    assert_eq!(g.code, ENHANCE_YOUR_CALM, "{g:?}");
    let resets = streams_handled(&g, &seen);
    assert!(
        (512..=1025).contains(&resets),
        "{resets} streams reset before the GOAWAY, expected 512..=1024 for the default limit of 1024: {g:?}"
    );
}

#[tokio::test]
async fn h2_streams_per_connection_are_capped_with_a_graceful_goaway() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |c| c.limits.max_requests_per_connection = 5).await;
    let addr = d.daemon.public_addr;
    let mut h = H2::connect(addr).await;
    let block = get_block(HOST, "/capped");
    for i in 0..5u32 {
        h.send(&frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block))
            .await
            .unwrap();
    }
    let mut seen = [0usize; 16];
    let goaway = h
        .until_goaway(Duration::from_secs(5), &mut seen)
        .await
        .unwrap()
        .expect("GOAWAY after the stream cap, not a bare close");
    assert_eq!(goaway.code, NO_ERROR, "a graceful GOAWAY: {goaway:?}");
    // The streams up to the cap are answered (a HEADERS frame each), before or after GOAWAY.
    let mut headers = seen[HEADERS as usize];
    while headers < 5 {
        match tokio::time::timeout(Duration::from_secs(5), h.next_frame()).await {
            Ok(Some(f)) if f.kind == HEADERS => headers += 1,
            Ok(Some(_)) => {}
            other => panic!("only {headers} of 5 streams answered: {other:?}"),
        }
    }
    // Other connections are unaffected.
    let mut s = h2_client(addr).await;
    h2_get_ok(&mut s, addr, "a new connection after the capped one").await;
}
