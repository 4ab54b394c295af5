//! Framing: every request is re-framed (one framing header upstream, never the client's verbatim);
//! ambiguous requests are refused with 400 and the connection closed.

use crate::raw::{barrier, Client, Recorder};
use crate::{
    assert_bodiless_framing, assert_one_framing, forwarded, proxy_to, refused, shorten, Upstream,
};

/// A request refused on its head: 400, connection closed, not one byte upstream.
macro_rules! refused_400 {
    ($($name:ident: $bytes:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            refused(stringify!($name), $bytes, 400, true, Upstream::Nothing, |_| {}).await;
        }
    )*};
}

/// A request refused on its body: 400, connection closed, no complete request upstream (the head
/// may have been streamed before the bad chunk arrived).
macro_rules! refused_400_body {
    ($($name:ident: $bytes:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            refused(stringify!($name), $bytes, 400, true, Upstream::NoCompleteRequest, |_| {}).await;
        }
    )*};
}

refused_400! {
    differing_duplicate_content_length_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    content_length_list_with_differing_values_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5, 6\r\n\r\nhello!";
    signed_content_length_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: +5\r\n\r\nhello";
    negative_content_length_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: -5\r\n\r\nhello";
    transfer_encoding_not_ending_in_chunked_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    transfer_encoding_identity_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: identity\r\n\r\nhello";
    second_transfer_encoding_line_not_chunked_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    misspelled_chunked_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    transfer_encoding_on_http10_is_refused:
        b"POST / HTTP/1.0\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    space_before_colon_in_transfer_encoding_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    obs_fold_is_refused:
        b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Long: first\r\n folded\r\n\r\n";
    obs_fold_in_transfer_encoding_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    bare_cr_in_header_value_is_refused:
        b"GET / HTTP/1.1\r\nHost: example.test\r\nX-A: a\rb\r\n\r\n";
    bare_cr_as_line_ending_is_refused:
        b"GET / HTTP/1.1\rHost: example.test\r\n\r\n";
    nul_in_header_value_is_refused:
        b"GET / HTTP/1.1\r\nHost: example.test\r\nX-A: a\0b\r\n\r\n";
    nul_in_header_name_is_refused:
        b"GET / HTTP/1.1\r\nHost: example.test\r\nX-A\0B: 1\r\n\r\n";
}

refused_400_body! {
    non_hex_chunk_size_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    negative_chunk_size_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n";
    hex_prefixed_chunk_size_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n";
    overflowing_chunk_size_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n";
    chunk_size_with_junk_after_it_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n";
    chunk_longer_than_its_size_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n";
    bare_lf_in_chunk_framing_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n";
}

/// Beyond the list: `Transfer-Encoding: gzip, chunked` ends in chunked, but the proxy strips
/// Transfer-Encoding (hop-by-hop) after removing only the chunked layer, so forwarding it would hand
/// the upstream gzip bytes with nothing saying so. The only safe answers are 400 or 501, upstream
/// untouched (nginx answers 501).
#[tokio::test]
async fn transfer_coding_other_than_chunked_is_not_silently_decoded() {
    let bytes = b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let (resp, _) = crate::raw::exchange(d.daemon.public_addr, bytes).await;
    barrier(d.daemon.public_addr).await;
    let status = resp.as_ref().map(|m| m.status()).unwrap_or(0);
    assert!(
        (status == 400 || status == 501) && up.requests().is_empty(),
        "gzip, chunked: client got {:?}; upstream received {}",
        resp.as_ref().map(|m| m.head_text()),
        up.summary()
    );
}

#[tokio::test]
async fn content_length_body_is_reframed_not_copied() {
    // `005` is a valid Content-Length; a re-framed request says `5` (or is chunked).
    let (_, req) = forwarded(
        b"POST /cl HTTP/1.1\r\nHost: example.test\r\nContent-Length: 005\r\n\r\nhello",
        |_| {},
    )
    .await;
    assert_one_framing(&req, b"hello", "upstream");
}

#[tokio::test]
async fn chunked_body_is_reframed() {
    let (_, req) = forwarded(
        b"POST /te HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=smuggle\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        |_| {},
    )
    .await;
    assert_one_framing(&req, b"hello world", "upstream");
    assert!(
        !String::from_utf8_lossy(&req.raw).contains("smuggle"),
        "the client's chunk extension reached the upstream verbatim:\n{}",
        shorten(&req.raw)
    );
}

#[tokio::test]
async fn uppercase_chunked_is_accepted_and_reframed() {
    let (_, req) = forwarded(
        b"POST /te HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        |_| {},
    )
    .await;
    assert_one_framing(&req, b"hello", "upstream");
}

#[tokio::test]
async fn identical_duplicate_content_length_is_forwarded_once() {
    let (_, req) = forwarded(
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        |_| {},
    )
    .await;
    assert_one_framing(&req, b"hello", "upstream");
}

#[tokio::test]
async fn bodiless_get_gets_no_framing_header() {
    let (_, req) = forwarded(b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n", |_| {}).await;
    assert_bodiless_framing(&req, "upstream");
}

#[tokio::test]
async fn http10_request_is_reframed_as_http11() {
    let (_, req) = forwarded(
        b"POST /old HTTP/1.0\r\nHost: example.test\r\nContent-Length: 5\r\n\r\nhello",
        |_| {},
    )
    .await;
    assert!(
        req.start.ends_with("HTTP/1.1"),
        "upstream request line {:?}",
        req.start
    );
    assert_one_framing(&req, b"hello", "upstream");
}

#[tokio::test]
async fn pipelined_requests_are_each_reframed() {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let mut c = Client::connect(d.daemon.public_addr).await;
    c.send(b"POST /a HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    for path in ["/a", "/b", "/c"] {
        let r = c.response().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(r.status(), 200, "{path}: {}", r.head_text());
    }
    let reqs = up.requests();
    let targets: Vec<&str> = reqs.iter().map(|m| m.target()).collect();
    assert_eq!(targets, ["/a", "/b", "/c"]);
    assert_one_framing(&reqs[0], b"hello", "/a upstream");
    assert_one_framing(&reqs[1], b"abc", "/b upstream");
    assert_bodiless_framing(&reqs[2], "/c upstream");
}

/// The response to the client is re-framed too: one framing header, matching the body.
#[tokio::test]
async fn response_to_client_has_one_framing_header() {
    let (resp, _) = forwarded(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n", |_| {}).await;
    assert_one_framing(&resp, b"echo\n", "client response");
}

/// Heads hyper would accept leniently; zerodown's strict framing check refuses them first.
macro_rules! refused_400 {
    ($($name:ident: $bytes:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            refused(stringify!($name), $bytes, 400, true, Upstream::Nothing, |_| {}).await;
        }
    )*};
}

refused_400! {
    content_length_then_transfer_encoding_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    transfer_encoding_then_content_length_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    cl_te_smuggling_attempt_is_refused:
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n";
    bare_lf_line_endings_are_refused:
        b"GET / HTTP/1.1\nHost: example.test\n\n";
    bare_lf_between_headers_is_refused:
        b"GET / HTTP/1.1\r\nHost: example.test\nX-A: 1\r\n\r\n";
    bare_lf_after_request_line_is_refused:
        b"GET / HTTP/1.1\nHost: example.test\r\n\r\n";
}

/// Sends `bytes` (one good request, then a refused one) on one connection: the good request gets
/// 200, then the 400 comes, then the connection closes, and the upstream sees only `first_target`.
async fn good_then_refused(bytes: &[u8], first_target: &str) -> crate::common::TestDaemon {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, |_| {}).await;
    let mut c = Client::connect(d.daemon.public_addr).await;
    c.send(bytes).await.unwrap();
    let first = c.response().await.unwrap();
    assert_eq!(first.status(), 200, "{}", first.head_text());
    let second = c.response().await.unwrap();
    assert_eq!(second.status(), 400, "{}", second.head_text());
    assert!(c.closed().await, "connection left open after the 400");
    barrier(d.daemon.public_addr).await;
    let targets: Vec<String> = up
        .requests()
        .iter()
        .map(|m| m.target().to_string())
        .collect();
    assert_eq!(targets, [first_target]);
    d
}

/// Requests before a refused one are answered in order; then the 400, then the connection closes,
/// and the upstream never sees the refused request or anything after it.
#[tokio::test]
async fn refused_head_after_a_pipelined_good_request() {
    let d = good_then_refused(
        b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\nPOST /b HTTP/1.1\r\nHost: example.test\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n",
        "/a",
    )
    .await;
    let refused = d
        .daemon
        .metrics
        .requests_refused
        .get_or_create(&[(
            "reason",
            zerodown::telemetry::metrics::Lv::S("both Content-Length and Transfer-Encoding"),
        )])
        .get();
    assert_eq!(refused, 1);
}

/// zerodown is no tunnel: CONNECT is refused before routing, and nothing reaches an upstream.
#[tokio::test]
async fn connect_is_refused_with_405() {
    refused(
        "CONNECT",
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
        405,
        false,
        Upstream::Nothing,
        |_| {},
    )
    .await;
}

/// An `Upgrade` request does not switch the strict check off for the rest of the connection.
#[tokio::test]
async fn bare_lf_after_an_upgrade_request_is_still_refused() {
    good_then_refused(
        b"GET /ws HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /next HTTP/1.1\nHost: example.test\n\n",
        "/ws",
    )
    .await;
}
