//! HTTP load on `/hello` of each zerodown: HTTP/1.1 keep-alive connections, HTTP/1.1 with a new
//! connection per request, and h2c (prior knowledge) connections with several streams each. Every
//! request (connect included) has a 5 s deadline; every attempt is one record, whatever happens.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::setup::World;

pub const DEADLINE: Duration = Duration::from_secs(5);
/// A worker stops after this many records even if never told to (bounds every loop by count).
const MAX_RECS: usize = 2_000_000;

/// (connections or sessions, pace between a worker's requests) per kind of load, per zerodown.
pub const KEEPALIVE: (usize, Duration) = (8, Duration::from_millis(10));
pub const NEWCONN: (usize, Duration) = (2, Duration::from_millis(20));
/// h2c: connections, streams per connection, pace per stream.
pub const H2: (usize, usize, Duration) = (2, 4, Duration::from_millis(20));

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    KeepAlive,
    NewConn,
    H2,
    Hsms,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "h1 keep-alive",
            Mode::NewConn => "h1 new conn",
            Mode::H2 => "h2c",
            Mode::Hsms => "HSMS S1F1",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// An answer other than 200 (its body is in the failure list).
    Status(u16),
    /// No (complete) answer within the deadline (HSMS: the primary's T3 deadline).
    Timeout,
    Refused,
    Reset,
    /// The connection closed before a full answer (HSMS: a disconnect with the primary open).
    Closed,
    /// A malformed answer (HSMS: an unexpected message).
    Protocol,
    /// A 200 whose body names no version.
    NoVersion,
    Other,
}

/// One request (or W-bit primary) and what came of it.
#[derive(Clone, Copy, Debug)]
pub struct Rec {
    pub start_us: u64,
    pub end_us: u64,
    pub target: u8,
    pub mode: Mode,
    pub outcome: Outcome,
    /// The version the answer names (0: none).
    pub version: u8,
    pub conn: u32,
}

/// A failed request's details, for the report.
#[derive(Clone, Debug)]
pub struct Failure {
    pub rec: Rec,
    pub detail: String,
}

#[derive(Default)]
pub struct Shared {
    pub failures: Mutex<Vec<Failure>>,
    /// h2 requests sent again on a new connection because the first was certainly never
    /// processed: refused by a graceful GOAWAY (REFUSED_STREAM, GOAWAY NO_ERROR), or handed back
    /// unsent by hyper because the connection had closed.
    pub h2_resent: AtomicU64,
    /// Of those, the ones hyper handed back unsent (the connection had closed under them).
    pub h2_unsent: AtomicU64,
    /// HTTP/1.1 keep-alive connections the server ended with `Connection: close`.
    pub h1_closed_by_server: AtomicU64,
    /// HSMS sessions that had to be opened again (after any error).
    pub hsms_reconnects: AtomicU64,
}

impl Shared {
    pub fn fail(&self, rec: Rec, detail: String) {
        let mut f = self.failures.lock().expect("failures");
        if f.len() < 20_000 {
            f.push(Failure { rec, detail });
        }
    }
}

static CONN_IDS: AtomicU32 = AtomicU32::new(1);

pub fn next_conn() -> u32 {
    CONN_IDS.fetch_add(1, Ordering::Relaxed)
}

pub struct Load {
    tasks: Vec<JoinHandle<Vec<Rec>>>,
    shared: Arc<Shared>,
}

pub struct Out {
    pub recs: Vec<Rec>,
    pub shared: Arc<Shared>,
    /// Workers that did not finish within 15 s of the stop (a stalled connection).
    pub stuck: usize,
}

pub fn start(world: &World, stop: Arc<AtomicBool>) -> Load {
    let shared = Arc::new(Shared::default());
    let mut tasks = Vec::new();
    for (t, target) in world.targets.iter().enumerate() {
        let t = t as u8;
        for _ in 0..KEEPALIVE.0 {
            let w = H1Worker::new(t, target.http, true, KEEPALIVE.1, &stop, &shared);
            tasks.push(tokio::spawn(w.run()));
        }
        for _ in 0..NEWCONN.0 {
            let w = H1Worker::new(t, target.http, false, NEWCONN.1, &stop, &shared);
            tasks.push(tokio::spawn(w.run()));
        }
        for _ in 0..H2.0 {
            let conn = Arc::new(tokio::sync::Mutex::new(None));
            for _ in 0..H2.1 {
                let w = H2Worker {
                    target: t,
                    addr: target.http,
                    conn: conn.clone(),
                    stop: stop.clone(),
                    shared: shared.clone(),
                };
                tasks.push(tokio::spawn(w.run()));
            }
        }
    }
    Load { tasks, shared }
}

pub async fn join(load: Load) -> Out {
    let mut recs = Vec::new();
    let mut stuck = 0;
    for task in load.tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Ok(Ok(r)) => recs.extend(r),
            Ok(Err(_)) => stuck += 1,
            Err(_) => {
                abort.abort();
                stuck += 1;
            }
        }
    }
    Out {
        recs,
        shared: load.shared,
        stuck,
    }
}

/// The version an answer names: `... (version v2)`.
pub fn version_of(body: &[u8]) -> u8 {
    let pat = b"(version v";
    body.windows(pat.len())
        .position(|w| w == pat)
        .and_then(|i| {
            let digits: Vec<u8> = body[i + pat.len()..]
                .iter()
                .copied()
                .take_while(u8::is_ascii_digit)
                .collect();
            std::str::from_utf8(&digits).ok()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Every message of an error's source chain.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn classify_io(e: &std::io::Error) -> Outcome {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Outcome::Refused,
        ConnectionReset | ConnectionAborted | BrokenPipe => Outcome::Reset,
        UnexpectedEof => Outcome::Closed,
        TimedOut => Outcome::Timeout,
        _ => Outcome::Other,
    }
}

/// A request error's class, and whether the request was certainly never processed (an h2
/// stream refused by a graceful GOAWAY), so that resending it is what any client does.
fn classify(e: &hyper::Error) -> (Outcome, bool) {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return (classify_io(io), false);
        }
        if let Some(h2e) = c.downcast_ref::<h2::Error>() {
            let refused = h2e.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2e.is_go_away() && h2e.reason() == Some(h2::Reason::NO_ERROR));
            return (Outcome::Reset, refused);
        }
        cur = c.source();
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        (Outcome::Closed, false)
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        (Outcome::Protocol, false)
    } else {
        (Outcome::Other, false)
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, (Outcome, String)> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| (classify_io(&e), format!("connect: {e}")))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn get(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(uri)
        .header("host", "soak")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// What one exchange gave: status, body, whether the server closes the connection.
type Answer = (u16, Bytes, bool);
type Failed = (Outcome, String);

async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Result<Answer, Failed> {
    let status = resp.status().as_u16();
    let close = resp
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = resp.into_body().collect().await.map_err(|e| {
        let (o, _) = classify(&e);
        (o, format!("body: {}", chain(&e)))
    })?;
    Ok((status, body.to_bytes(), close))
}

/// Turns an exchange's result into a record (and a failure entry when it is not a 200).
fn record(
    shared: &Shared,
    target: u8,
    mode: Mode,
    conn: u32,
    start_us: u64,
    r: Result<Result<Answer, Failed>, tokio::time::error::Elapsed>,
) -> Rec {
    let mut rec = Rec {
        start_us,
        end_us: crate::now_us(),
        target,
        mode,
        outcome: Outcome::Ok,
        version: 0,
        conn,
    };
    let detail = match r {
        Err(_) => {
            rec.outcome = Outcome::Timeout;
            format!("no answer within {DEADLINE:?}")
        }
        Ok(Err((o, d))) => {
            rec.outcome = o;
            d
        }
        Ok(Ok((status, body, _))) => {
            rec.version = version_of(&body);
            if status != 200 {
                rec.outcome = Outcome::Status(status);
            } else if rec.version == 0 {
                rec.outcome = Outcome::NoVersion;
            }
            String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string()
        }
    };
    if rec.outcome != Outcome::Ok {
        shared.fail(rec, detail);
    }
    rec
}

struct H1Worker {
    target: u8,
    addr: SocketAddr,
    keepalive: bool,
    pace: Duration,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    conn: Option<(http1::SendRequest<Full<Bytes>>, u32)>,
}

impl H1Worker {
    fn new(
        target: u8,
        addr: SocketAddr,
        keepalive: bool,
        pace: Duration,
        stop: &Arc<AtomicBool>,
        shared: &Arc<Shared>,
    ) -> Self {
        H1Worker {
            target,
            addr,
            keepalive,
            pace,
            stop: stop.clone(),
            shared: shared.clone(),
            conn: None,
        }
    }

    async fn run(mut self) -> Vec<Rec> {
        let mode = if self.keepalive {
            Mode::KeepAlive
        } else {
            Mode::NewConn
        };
        let mut recs = Vec::new();
        // Spread the workers' phases.
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..20_000))).await;
        let mut next = tokio::time::Instant::now();
        while !self.stop.load(Ordering::Relaxed) && recs.len() < MAX_RECS {
            next = (next + self.pace).max(tokio::time::Instant::now());
            tokio::time::sleep_until(next).await;
            let start = crate::now_us();
            let r = tokio::time::timeout(DEADLINE, self.exchange()).await;
            let conn = self.conn.as_ref().map_or(0, |c| c.1);
            let ok = matches!(r, Ok(Ok((_, _, false))));
            if !ok || !self.keepalive {
                if matches!(r, Ok(Ok((_, _, true)))) && self.keepalive {
                    self.shared
                        .h1_closed_by_server
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.conn = None;
            }
            recs.push(record(&self.shared, self.target, mode, conn, start, r));
        }
        recs
    }

    async fn exchange(&mut self) -> Result<Answer, Failed> {
        if self.conn.as_ref().is_none_or(|(s, _)| s.is_closed()) {
            self.conn = None;
            let s = connect(self.addr).await?;
            let (tx, conn) = http1::handshake(TokioIo::new(s))
                .await
                .map_err(|e| (classify(&e).0, format!("handshake: {}", chain(&e))))?;
            tokio::spawn(conn);
            self.conn = Some((tx, next_conn()));
        }
        let (tx, _) = self.conn.as_mut().expect("connection");
        tx.ready().await.map_err(|e| {
            (
                classify(&e).0,
                format!("connection not ready: {}", chain(&e)),
            )
        })?;
        let resp = tx
            .send_request(get("/hello"))
            .await
            .map_err(|e| (classify(&e).0, format!("request: {}", chain(&e))))?;
        read(resp).await
    }
}

type H2Conn = Arc<tokio::sync::Mutex<Option<(http2::SendRequest<Full<Bytes>>, u32)>>>;

struct H2Worker {
    target: u8,
    addr: SocketAddr,
    conn: H2Conn,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl H2Worker {
    async fn run(self) -> Vec<Rec> {
        let mut recs = Vec::new();
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..20_000))).await;
        let mut next = tokio::time::Instant::now();
        while !self.stop.load(Ordering::Relaxed) && recs.len() < MAX_RECS {
            next = (next + H2.2).max(tokio::time::Instant::now());
            tokio::time::sleep_until(next).await;
            let start = crate::now_us();
            let mut used = 0;
            let r = tokio::time::timeout(DEADLINE, async {
                // Up to two tries: the second only when a graceful GOAWAY refused the first.
                let mut last = None;
                for _ in 0..2 {
                    let (tx, id) = self.sender().await?;
                    used = id;
                    match self.exchange(tx).await {
                        Ok(a) => return Ok(a),
                        Err((o, d, refused)) => {
                            self.drop_conn(id).await;
                            if !refused {
                                return Err((o, d));
                            }
                            self.shared.h2_resent.fetch_add(1, Ordering::Relaxed);
                            last = Some((o, d));
                        }
                    }
                }
                Err(last.expect("two tries"))
            })
            .await;
            recs.push(record(&self.shared, self.target, Mode::H2, used, start, r));
        }
        recs
    }

    async fn sender(&self) -> Result<(http2::SendRequest<Full<Bytes>>, u32), Failed> {
        let mut g = self.conn.lock().await;
        if let Some((tx, id)) = g.as_ref() {
            if !tx.is_closed() {
                return Ok((tx.clone(), *id));
            }
        }
        *g = None;
        let s = connect(self.addr).await?;
        let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .map_err(|e| (classify(&e).0, format!("h2 handshake: {}", chain(&e))))?;
        tokio::spawn(conn);
        let id = next_conn();
        *g = Some((tx.clone(), id));
        Ok((tx, id))
    }

    async fn drop_conn(&self, id: u32) {
        let mut g = self.conn.lock().await;
        if g.as_ref().is_some_and(|(_, i)| *i == id) {
            *g = None;
        }
    }

    async fn exchange(
        &self,
        mut tx: http2::SendRequest<Full<Bytes>>,
    ) -> Result<Answer, (Outcome, String, bool)> {
        let fail = |what: &str, e: hyper::Error| {
            let (o, refused) = classify(&e);
            (o, format!("{what}: {}", chain(&e)), refused)
        };
        tx.ready().await.map_err(|e| {
            // A connection that can take no new stream (GOAWAY received): nothing was sent.
            let (o, _) = classify(&e);
            (o, format!("h2 not ready: {}", chain(&e)), true)
        })?;
        let uri = format!("http://{}/hello", self.addr);
        let resp = tx.try_send_request(get(&uri)).await.map_err(|e| {
            // hyper hands the request back when it was never written to the connection (the
            // connection closed first, e.g. after a GOAWAY): certainly unprocessed, so resent.
            let unsent = e.message().is_some();
            if unsent {
                self.shared.h2_unsent.fetch_add(1, Ordering::Relaxed);
            }
            let (o, d, refused) = fail("h2 request", e.into_error());
            let d = if unsent {
                format!("{d} (never sent)")
            } else {
                d
            };
            (o, d, refused || unsent)
        })?;
        read(resp).await.map_err(|(o, d)| (o, d, false))
    }
}

/// `GET path` on the admin listener: (status, body), or `None` on any error within 2 s.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let fut = async {
        let s = TcpStream::connect(addr).await.ok()?;
        let (mut tx, conn) = http1::handshake(TokioIo::new(s)).await.ok()?;
        tokio::spawn(conn);
        let resp = tx.send_request(get(path)).await.ok()?;
        let (status, body, _) = read(resp).await.ok()?;
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}
