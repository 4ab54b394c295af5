//! A demo HSMS equipment load: one session that selects, then keeps `window` S1F1 W-bit primaries
//! in flight until stopped, recording each reply's timing and the version its S1F2 names. Every
//! primary has a deadline; a late reply, a disconnect or any message other than its replies is
//! recorded as an error (the session stops at the first). Used by the load tests and benches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::hsms::s1f2_version;
use crate::hsms::codec::{self, Decoder, Message, SType};

/// One answered primary.
#[derive(Debug, Clone)]
pub struct Reply {
    pub start: Instant,
    pub end: Instant,
    pub version: String,
}

/// What one session saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub replies: Vec<Reply>,
    /// By class: `timeout: …`, `disconnect`, `unexpected message: …`, `duplicate or unknown
    /// reply …`, `bad frame …`, `S1F2 without a version`.
    pub errors: Vec<String>,
}

/// An S1F1 (Are You There) with the W-bit.
pub fn s1f1(system: u32) -> Message {
    Message::data(0, 1, 1, true, system, Bytes::new())
}

/// Runs one session against `addr` until `stop` is set and its last replies are in.
pub async fn run(
    addr: SocketAddr,
    window: usize,
    deadline: Duration,
    stop: Arc<AtomicBool>,
) -> Tally {
    run_watched(addr, window, deadline, stop, None).await
}

/// [`run`], also publishing each reply on `latest` as it arrives, so a caller can wait for a
/// session's progress instead of sleeping.
pub async fn run_watched(
    addr: SocketAddr,
    window: usize,
    deadline: Duration,
    stop: Arc<AtomicBool>,
    latest: Option<watch::Sender<Option<Reply>>>,
) -> Tally {
    let mut tally = Tally::default();
    let to = Watched {
        tally: &mut tally,
        latest: latest.as_ref(),
    };
    if let Err(e) = session(addr, window, deadline, &stop, to).await {
        tally.errors.push(e);
    }
    tally
}

/// Where a session's replies go.
struct Watched<'a> {
    tally: &'a mut Tally,
    latest: Option<&'a watch::Sender<Option<Reply>>>,
}

async fn session(
    addr: SocketAddr,
    window: usize,
    deadline: Duration,
    stop: &AtomicBool,
    to: Watched<'_>,
) -> Result<(), String> {
    let Watched { tally, latest } = to;
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut dec = Decoder::new(1 << 20);
    let (mut buf, mut out) = (BytesMut::new(), BytesMut::new());
    let _ = codec::encode(&codec::select_req(1), &mut out);
    stream
        .write_all(&out)
        .await
        .map_err(|_| "disconnect".to_string())?;
    let mut selected = false;
    let mut next = 100u32;
    let mut pending: HashMap<u32, Instant> = HashMap::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && pending.is_empty() {
            return Ok(());
        }
        if selected && !stopping {
            out.clear();
            while pending.len() < window {
                next = next.wrapping_add(1);
                let _ = codec::encode(&s1f1(next), &mut out);
                pending.insert(next, Instant::now());
            }
            if !out.is_empty() {
                stream
                    .write_all(&out)
                    .await
                    .map_err(|_| "disconnect".to_string())?;
            }
        }
        let oldest = pending.values().min().copied().unwrap_or_else(Instant::now);
        let msg = loop {
            if let Some(m) = dec
                .decode(&mut buf)
                .map_err(|e| format!("bad frame from the peer: {e}"))?
            {
                break m;
            }
            match tokio::time::timeout_at(oldest + deadline, stream.read_buf(&mut buf)).await {
                Err(_) => {
                    return Err(format!(
                        "timeout: {} primaries without a reply for {deadline:?}",
                        pending.len()
                    ))
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Err("disconnect".into()),
                Ok(Ok(_)) => {}
            }
        };
        let h = &msg.header;
        match h.stype {
            SType::SelectRsp if !selected && h.status() == codec::SELECT_OK => selected = true,
            SType::Data if (h.stream, h.function) == (1, 2) => {
                let Some(start) = pending.remove(&h.system) else {
                    tally
                        .errors
                        .push(format!("duplicate or unknown reply (system {})", h.system));
                    continue;
                };
                let version = s1f2_version(&msg.body).ok_or("S1F2 without a version")?;
                let reply = Reply {
                    start,
                    end: Instant::now(),
                    version,
                };
                if let Some(l) = latest {
                    l.send_replace(Some(reply.clone()));
                }
                tally.replies.push(reply);
            }
            other => {
                return Err(format!(
                    "unexpected message: {other:?} S{}F{}",
                    h.stream, h.function
                ))
            }
        }
    }
}
