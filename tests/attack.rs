//! The attack suite: hostile and ambiguous requests against the proxy. Every case goes through the
//! proxy as raw bytes to a recording upstream (`common/raw.rs`); each test asserts what the upstream
//! received — or that it received nothing — and what the client got back, including whether its
//! connection was closed.
//!
//! - `attack/framing.rs`: request re-framing and the ambiguous requests refused with 400.
//! - `attack/headers.rs`: hop-by-hop stripping both ways, forwarding headers, underscores, Host.
//! - `attack/limits.rs`: header/body limits (431/413), malformed upstream answers (502), the
//!   connection cap.
//! - `attack/slow.rs`: slowloris, slow bodies, keep-alive, requests per connection, connection age.
//! - `attack/h2.rs`: HTTP/2 settings and flood defences, with a hand-rolled frame client.
//! - `attack/park.rs`: idle keep-alive connections parked without hyper's buffers, then woken.
//!
//! Timers are shortened through the config so each slow-client test finishes in about a second.

mod common;
#[path = "common/h2raw.rs"]
mod h2raw;
#[path = "common/raw.rs"]
mod raw;

#[path = "attack/framing.rs"]
mod framing;
#[path = "attack/h2.rs"]
mod h2;
#[path = "attack/headers.rs"]
mod headers;
#[path = "attack/limits.rs"]
mod limits;
#[path = "attack/park.rs"]
mod park;
#[path = "attack/slow.rs"]
mod slow;

use common::{start, TestDaemon};
use raw::{barrier, exchange, Message, Recorder};
use zerodown::config::Config;

pub const HOST: &str = "example.test";

/// A daemon whose active pool is the one upstream `up`.
pub async fn proxy_to(up: &Recorder, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
    start(&[("up", up.addr.to_string(), "v1", "active")], tweak).await
}

/// What the upstream may have seen of a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Not one byte: the request was refused before an upstream was chosen.
    Nothing,
    /// No complete request: the head may have been streamed before the body turned out bad, but
    /// the upstream never saw a message it could act on.
    NoCompleteRequest,
}

/// Sends `bytes` on a fresh connection and checks the refusal: status `status`, connection closed
/// when `must_close`, and the upstream saw what `upstream` allows. All problems are reported at once.
pub async fn refused(
    case: &str,
    bytes: &[u8],
    status: u16,
    must_close: bool,
    upstream: Upstream,
    tweak: impl FnOnce(&mut Config),
) {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, tweak).await;
    let addr = d.daemon.public_addr;
    let (resp, closed) = exchange(addr, bytes).await;
    barrier(addr).await;
    let mut problems = Vec::new();
    match &resp {
        Ok(m) if m.status() == status => {}
        Ok(m) => problems.push(format!(
            "client got {} instead of {status}:\n{}",
            m.status(),
            m.head_text()
        )),
        Err(e) => problems.push(format!("client got no {status} response: {e}")),
    }
    if must_close && !closed {
        problems.push("the connection was left open".into());
    }
    match upstream {
        Upstream::Nothing if up.bytes_received() != 0 => {
            problems.push(format!("upstream received {}", up.summary()))
        }
        Upstream::NoCompleteRequest if !up.requests().is_empty() => {
            problems.push(format!("upstream received {}", up.summary()))
        }
        _ => {}
    }
    assert!(
        problems.is_empty(),
        "{case}: {}\n--- sent ---\n{}",
        problems.join("\n"),
        shorten(bytes)
    );
}

/// Sends `bytes` on a fresh connection to a proxy in front of an echo upstream; expects one 200
/// and exactly one request upstream, and returns both for the test's own assertions.
pub async fn forwarded(bytes: &[u8], tweak: impl FnOnce(&mut Config)) -> (Message, Message) {
    let up = Recorder::echo().await;
    let d = proxy_to(&up, tweak).await;
    let (resp, _) = exchange(d.daemon.public_addr, bytes).await;
    let resp =
        resp.unwrap_or_else(|e| panic!("no response: {e}\n--- sent ---\n{}", shorten(bytes)));
    assert_eq!(
        resp.status(),
        200,
        "client got {} for a valid request:\n{}\n--- sent ---\n{}",
        resp.status(),
        resp.head_text(),
        shorten(bytes)
    );
    (resp, up.only())
}

/// The request as printable text, cut for long attack payloads.
pub fn shorten(bytes: &[u8]) -> String {
    let s = format!("{:?}", String::from_utf8_lossy(bytes));
    if s.len() > 600 {
        format!("{}… ({} bytes)", &s[..600], bytes.len())
    } else {
        s
    }
}

/// Framing of a message that carries `body`: exactly one of Content-Length / Transfer-Encoding,
/// never both; Content-Length matching the body, Transfer-Encoding exactly `chunked`.
pub fn assert_one_framing(m: &Message, body: &[u8], who: &str) {
    let cl = m.all("content-length");
    let te = m.all("transfer-encoding");
    assert_eq!(
        cl.len() + te.len(),
        1,
        "{who}: expected exactly one framing header, got content-length {cl:?} and transfer-encoding {te:?}:\n{}",
        m.head_text()
    );
    if let Some(cl) = cl.first() {
        assert_eq!(
            *cl,
            body.len().to_string(),
            "{who}: content-length not re-framed to the body length:\n{}",
            m.head_text()
        );
    }
    if let Some(te) = te.first() {
        assert_eq!(
            *te, "chunked",
            "{who}: transfer-encoding must be exactly chunked"
        );
    }
    assert_eq!(m.body, body, "{who}: body changed in transit");
}

/// Framing of a bodiless request: no Transfer-Encoding, and Content-Length (if any) is 0.
pub fn assert_bodiless_framing(m: &Message, who: &str) {
    let cl = m.all("content-length");
    let te = m.all("transfer-encoding");
    assert!(
        te.is_empty() && (cl.is_empty() || cl == ["0"]),
        "{who}: a bodiless request went out with content-length {cl:?} / transfer-encoding {te:?}:\n{}",
        m.head_text()
    );
}
