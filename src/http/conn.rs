//! One accepted client connection: the TLS handshake, then HTTP/1.1 (parked between requests, see
//! [`park`](crate::http::park)) or HTTP/2 (h2c by prior knowledge or ALPN `h2`), the request and
//! age limits, and the graceful drain.
//!
//! One timer per connection bounds an HTTP/1 connection: the wait for a head (idle keep-alive
//! included, as hyper's header-read timeout did), the idle time before parking, the age limit and
//! the drain grace. It is reset when the connection changes phase and at most every
//! [`PARK_AFTER`] while serving, never per request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::http::listener::{Builders, ListenerSettings};
use crate::http::park::{self, Activity, Parkable, Sniff, Tracked};
use crate::http::proxy::headers::Peer;
use crate::http::proxy::{Proxy, ProxyBody};
use crate::http::strict::Strict;

/// A client connection's byte stream (TCP, TLS, parked or not).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What serves a connection's requests: the proxy, as hyper's cloneable `Service`.
trait Handler:
    Service<
        Request<Incoming>,
        Response = Response<RespBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}
impl<S> Handler for S where
    S: Service<
            Request<Incoming>,
            Response = Response<RespBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// While draining, an HTTP/1 connection gets this long to send one more request (answered with
/// `Connection: close`) before it is closed as idle: a client writing just as the connection
/// closed would otherwise see its request fail.
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// An HTTP/1 connection with nothing in flight for this long (one to two periods) gives back
/// hyper's buffers. Short, because an idle connection costs 16 KB until then; not zero, because
/// a busy keep-alive client would otherwise rebuild hyper's connection for every request.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Bytes read while parked before hyper takes over: the h2 preface fits.
const WAKE_READ: usize = 64;

/// The protocol a connection is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Cleartext: HTTP/1.1 or h2c by prior knowledge, told apart by the first bytes.
    Either,
    Http1,
    Http2,
}

/// One accepted client connection.
pub struct Conn {
    pub proxy: Arc<Proxy>,
    pub builders: Arc<Builders>,
    pub settings: Arc<ListenerSettings>,
    pub shutdown: watch::Receiver<bool>,
    pub peer: std::net::SocketAddr,
    pub proto: &'static str,
}

/// What every request of one connection shares (one `Arc` clone per request).
struct State {
    act: Activity,
    proxy: Arc<Proxy>,
    /// Forwarding header values, built once per connection.
    peer: Peer,
    max_requests: u64,
    /// HTTP/2 has no `Connection: close`: at the request cap the connection sends a graceful
    /// GOAWAY (streams already open finish), as nginx does after `keepalive_requests`.
    at_cap: Notify,
}

impl AsRef<Activity> for State {
    fn as_ref(&self) -> &Activity {
        &self.act
    }
}

type RespBody = Tracked<ProxyBody, State>;

/// `now + d`, or far in the future when that overflows (an unlimited setting).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30))
}

/// The earliest of the connection's limits: the wait for a head, the age limit, the drain grace.
fn limit(
    idle_since: Instant,
    header_timeout: Duration,
    age_at: Instant,
    grace_at: Option<Instant>,
) -> Instant {
    let t = after(idle_since, header_timeout).min(age_at);
    grace_at.map_or(t, |g| t.min(g))
}

impl Conn {
    /// The TLS handshake (bounded by the header timeout), then the protocol ALPN chose.
    pub async fn run_tls(self, stream: tokio::net::TcpStream, acceptor: Arc<TlsAcceptor>) {
        let peer = self.peer;
        let timeout = self.settings.header_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => {
                let alpn = match s.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Serve::Http2,
                    _ => Serve::Http1,
                };
                self.run(s, alpn).await
            }
            Ok(Err(e)) => {
                tracing::debug!(target: "zerodown::server", peer = %peer, error = %e, "TLS handshake failed")
            }
            Err(_) => {
                tracing::debug!(target: "zerodown::server", peer = %peer, "TLS handshake timed out")
            }
        }
    }

    pub async fn run<IO>(self, io: IO, serve: Serve)
    where
        IO: Io,
    {
        let state = Arc::new(State {
            act: Activity::default(),
            proxy: Arc::clone(&self.proxy),
            peer: Peer::new(self.peer, self.proto),
            max_requests: self.settings.limits.max_requests_per_connection,
            at_cap: Notify::new(),
        });
        let st = Arc::clone(&state);
        let svc = service_fn(move |req: Request<Incoming>| {
            let st = Arc::clone(&st);
            let n = st.act.started.fetch_add(1, Ordering::Relaxed) + 1;
            let http1 = req.version() < Version::HTTP_2;
            if !http1 && n == st.max_requests {
                st.at_cap.notify_one();
            }
            let last = http1 && n >= st.max_requests;
            async move {
                let mut resp = st.proxy.handle(req, &st.peer).await;
                // Decided when the answer is ready, so a request in flight when the drain or the
                // age limit starts is still told (hyper closes after a response that says so).
                if last || (http1 && st.act.closing.load(Ordering::Relaxed)) {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, st)))
            }
        });
        let io = Strict::new(
            io,
            self.settings.limits.max_header_bytes,
            self.peer,
            &self.proxy.metrics,
        );
        match serve {
            Serve::Http2 => {
                let io = Parkable::new(Bytes::new(), io, Arc::clone(&state));
                // Boxed, as below: HTTP/2's connection state is not part of every HTTP/1 task.
                Box::pin(self.serve_h2(io, svc, &state)).await
            }
            Serve::Http1 => self.serve_h1(io, svc, state, false).await,
            Serve::Either => self.serve_h1(io, svc, state, true).await,
        }
    }

    /// HTTP/1.1: hyper while requests come, the bare socket (parked) while they do not.
    async fn serve_h1<IO, S>(
        mut self,
        mut io: Strict<IO>,
        mut svc: S,
        state: Arc<State>,
        mut sniffing: bool,
    ) where
        IO: Io,
        S: Handler,
    {
        let act = &state.act;
        let header_timeout = self.settings.header_timeout;
        let start = Instant::now();
        let age_at = after(start, self.settings.limits.max_connection_age);
        let mut grace_at: Option<Instant> = None;
        // The start of the current wait for a head: a head must be complete within
        // `header_timeout` of it, across parking and waking.
        let mut idle_since = start;
        let timer = tokio::time::sleep_until(after(idle_since, header_timeout));
        tokio::pin!(timer);
        let mut carried = Bytes::new();
        let mut fresh = true;
        loop {
            // Parked: nothing of hyper's is held. A fresh connection starts here too.
            if carried.is_empty() {
                // Counted once hyper's connection was ended for it, not while a fresh connection
                // waits for its first bytes.
                let _parked =
                    (!fresh).then(|| Parked::new(&state.proxy.metrics.connections_parked));
                let mut first = [0u8; WAKE_READ];
                let mut got = 0;
                let mut expired = false;
                while !expired {
                    timer
                        .as_mut()
                        .reset(limit(idle_since, header_timeout, age_at, grace_at));
                    tokio::select! {
                        r = io.read(&mut first[got..]) => match r {
                            // The client closed (or failed) while idle.
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                got += n;
                                if sniffing && park::sniff(&first[..got]) == Sniff::More {
                                    continue;
                                }
                                break;
                            }
                        },
                        // Idle or header timeout, age limit or drain grace: close.
                        _ = &mut timer => expired = true,
                        _ = self.shutdown.wait_for(|s| *s), if grace_at.is_none() => {
                            act.closing.store(true, Ordering::Relaxed);
                            grace_at = Some(Instant::now() + DRAIN_IDLE_GRACE);
                        }
                    }
                }
                if expired {
                    return close(io, timer.as_mut(), header_timeout).await;
                }
                carried = Bytes::copy_from_slice(&first[..got]);
                if sniffing && park::sniff(&carried) == Sniff::Http2 {
                    let io = Parkable::new(carried, io, Arc::clone(&state));
                    // Boxed: HTTP/2's connection state is not part of every HTTP/1 task.
                    return Box::pin(self.serve_h2(io, svc, &state)).await;
                }
                sniffing = false;
            }

            // Serving: hyper reads `carried` first, then the socket.
            fresh = false;
            let awake = self.awake(
                &state,
                io,
                svc,
                carried,
                timer.as_mut(),
                &mut idle_since,
                &mut grace_at,
                age_at,
            );
            match Box::pin(awake).await {
                Awake::Park {
                    io: i,
                    svc: s,
                    carried: c,
                } => (io, svc, carried) = (i, s, c),
                Awake::Close(io) => return close(io, timer.as_mut(), header_timeout).await,
                Awake::Gone => return,
            }
        }
    }

    /// One serving phase of an HTTP/1 connection: hyper over the socket (fed `carried` first)
    /// until it is ended at a boundary to park, ends by itself, or fails. Boxed by the caller,
    /// so a parked connection's task does not carry this state.
    #[allow(clippy::too_many_arguments)]
    async fn awake<IO, S>(
        &mut self,
        state: &Arc<State>,
        io: Strict<IO>,
        svc: S,
        carried: Bytes,
        mut timer: Pin<&mut Sleep>,
        idle_since: &mut Instant,
        grace_at: &mut Option<Instant>,
        age_at: Instant,
    ) -> Awake<IO, S>
    where
        IO: Io,
        S: Handler,
    {
        let act = &state.act;
        let header_timeout = self.settings.header_timeout;
        // Serving: hyper reads `carried` first, then the socket.
        act.stop.store(false, Ordering::Relaxed);
        let parkable = Parkable::new(carried, io, Arc::clone(state));
        let conn = self
            .builders
            .http1
            .serve_connection(TokioIo::new(parkable), svc)
            .without_shutdown();
        // Pinned for polling: the future of `without_shutdown` is not `Unpin`.
        let mut conn = Box::pin(conn);
        let mut last = act.counts();
        let mut closing = false;
        let next_tick = |now: Instant, idle_since: Instant, grace_at: Option<Instant>| {
            (now + PARK_AFTER).min(limit(idle_since, header_timeout, age_at, grace_at))
        };
        timer
            .as_mut()
            .reset(next_tick(Instant::now(), *idle_since, *grace_at));
        let parts = loop {
            tokio::select! {
                r = conn.as_mut() => match r {
                    Ok(parts) => break parts,
                    Err(e) => {
                        tracing::debug!(target: "zerodown::server", peer = %self.peer, error = %e, "client connection ended with error");
                        return Awake::Gone;
                    }
                },
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= age_at || grace_at.is_some_and(|g| now >= g) {
                        // Answers from now on say close; an idle connection ends at once.
                        act.closing.store(true, Ordering::Relaxed);
                        act.stop.store(true, Ordering::Relaxed);
                        closing = true;
                    }
                    let counts = act.counts();
                    if counts != last || act.in_flight() > 0 {
                        last = counts;
                        *idle_since = now;
                    } else if !act.in_body.load(Ordering::Relaxed)
                        && now >= after(*idle_since, header_timeout)
                    {
                        // No complete head within the header timeout (hyper's own timer
                        // would have closed it the same way).
                        return Awake::Gone;
                    } else {
                        // Quiet for a whole period: end hyper's connection at the boundary.
                        act.stop.store(true, Ordering::Relaxed);
                    }
                    let t = if closing { after(now, header_timeout) } else { next_tick(now, *idle_since, *grace_at) };
                    timer.as_mut().reset(t);
                }
                _ = self.shutdown.wait_for(|s| *s), if grace_at.is_none() => {
                    act.closing.store(true, Ordering::Relaxed);
                    let g = Instant::now() + DRAIN_IDLE_GRACE;
                    *grace_at = Some(g);
                    if !closing && g < timer.deadline() {
                        timer.as_mut().reset(g);
                    }
                }
            }
        };
        let hyper::server::conn::http1::Parts {
            io: parkable,
            read_buf,
            service,
            ..
        } = parts;
        let (rest, io, stopped) = parkable.into_inner().into_inner();
        if !stopped || closing {
            // hyper ended by itself (the client's `Connection: close`, the request cap, a
            // close answered while draining) or we are closing: shut the socket as hyper
            // would have.
            return Awake::Close(io);
        }
        // Bytes hyper had read ahead come before what it had not yet taken. Copied: even
        // empty, `read_buf` shares (and would keep alive) hyper's whole read buffer.
        let carried = if read_buf.is_empty() && rest.is_empty() {
            Bytes::new()
        } else {
            let mut b = BytesMut::with_capacity(read_buf.len() + rest.len());
            b.extend_from_slice(&read_buf);
            b.extend_from_slice(&rest);
            b.freeze()
        };
        drop(read_buf);
        // A request answered since the last tick: the idle period starts now.
        if act.counts() != last {
            *idle_since = Instant::now();
        }
        Awake::Park {
            io,
            svc: service,
            carried,
        }
    }

    /// HTTP/2 (h2c or ALPN `h2`): hyper's connection for the connection's whole life.
    async fn serve_h2<IO, S>(mut self, io: Parkable<IO, State>, svc: S, state: &State)
    where
        IO: Io,
        S: Handler,
    {
        let conn = self.builders.h2.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let age = tokio::time::sleep(self.settings.limits.max_connection_age);
        tokio::pin!(age);
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(target: "zerodown::server", peer = %self.peer, error = %e, "client connection ended with error");
                    }
                    return;
                }
                // GOAWAY names the last stream: no race with a client's next request.
                _ = self.shutdown.wait_for(|s| *s), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = &mut age, if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = state.at_cap.notified(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// How a serving phase ended.
enum Awake<IO, S> {
    /// At a boundary, to park: the socket, the service and any bytes hyper had not used.
    Park {
        io: Strict<IO>,
        svc: S,
        carried: Bytes,
    },
    /// hyper ended by itself or the connection is closing: shut the socket.
    Close(Strict<IO>),
    /// Failed or timed out: drop it.
    Gone,
}

/// Counts a parked connection for as long as it lives.
struct Parked<'a>(&'a Gauge);

impl<'a> Parked<'a> {
    fn new(g: &'a Gauge) -> Parked<'a> {
        g.inc();
        Parked(g)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Ends an HTTP/1 connection as hyper does (FIN, or TLS close_notify), bounded in time by the
/// connection's timer.
async fn close<IO: AsyncWrite + Unpin>(mut io: IO, mut timer: Pin<&mut Sleep>, within: Duration) {
    timer.as_mut().reset(Instant::now() + within);
    tokio::select! {
        _ = io.shutdown() => {}
        _ = timer => {}
    }
}
