//! A public listener (HTTP, or HTTPS when given a TLS acceptor): accept under a connection cap,
//! serve each connection (HTTP/1.1, h2c by prior knowledge, or ALPN over TLS) through the proxy
//! with hyper's limits and timers set, close connections that reach their request or age limit,
//! and drain gracefully on shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::{Config, Http2Config, LimitsConfig};
use crate::http::proxy::headers::Peer;
use crate::http::proxy::Proxy;
use crate::http::strict::Strict;

/// Client-side connection settings, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub limits: LimitsConfig,
    pub http2: Http2Config,
}

impl ListenerSettings {
    pub fn from_config(c: &Config) -> ListenerSettings {
        ListenerSettings {
            header_timeout: c.server.header_timeout,
            keepalive_timeout: c.server.keepalive_timeout,
            limits: c.limits.clone(),
            http2: c.http2.clone(),
        }
    }
}

/// The connection builders of one settings generation: the cleartext port serves HTTP/1.1 and h2c
/// (prior knowledge, told apart by the preface); a TLS connection serves exactly the protocol ALPN
/// negotiated (`h2`, else HTTP/1.1), so a broken preface on one is never read as the other.
pub struct Builders {
    any: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub fn new(s: &ListenerSettings) -> Builders {
        let any = builder(s);
        Builders {
            h1: any.clone().http1_only(),
            h2: any.clone().http2_only(),
            any,
        }
    }
}

/// The protocol a connection is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// Cleartext: HTTP/1.1 or h2c by prior knowledge.
    Either,
    Http1,
    Http2,
}

pub fn builder(s: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, idle keep-alive included.
        .header_read_timeout(s.header_timeout)
        .keep_alive(true)
        .max_headers(s.limits.max_headers)
        // The read buffer must hold the whole head; past it hyper answers 431.
        .max_buf_size(s.limits.max_header_bytes.max(8192));
    let h2 = &s.http2;
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(s.keepalive_timeout / 3))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams)
        .max_header_list_size(h2.max_header_list_size)
        .initial_stream_window_size(h2.initial_stream_window_size)
        .initial_connection_window_size(h2.initial_connection_window_size);
    b
}

/// What every listener of a daemon shares.
#[derive(Clone)]
pub struct Shared {
    pub proxy: Arc<Proxy>,
    pub settings: watch::Receiver<Arc<ListenerSettings>>,
    /// One permit per open client connection, across all listeners.
    pub permits: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub drain: watch::Receiver<Duration>,
}

/// While draining, an HTTP/1 connection gets this long to send one more request (answered with
/// `Connection: close`) before it is closed as idle: a client writing just as the connection
/// closed would otherwise see its request fail.
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Refusals beyond the connection cap are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts and serves until shutdown, then waits up to the drain timeout for open connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    mut shared: Shared,
) {
    let proto = if tls.is_some() { "https" } else { "http" };
    let mut settings = Arc::clone(&shared.settings.borrow_and_update());
    let mut builder = Arc::new(Builders::new(&settings));
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut backoff = Duration::from_millis(5);
    let mut last_refusal_log: Option<Instant> = None;
    let metrics = Arc::clone(&shared.proxy.metrics);
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Usually EMFILE: wait for connections to close instead of spinning.
                tracing::warn!(target: "zerodown::server", error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if shared.settings.has_changed().unwrap_or(false) {
            settings = Arc::clone(&shared.settings.borrow_and_update());
            builder = Arc::new(Builders::new(&settings));
        }
        let permit = match Arc::clone(&shared.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let wait = settings.limits.connection_wait;
                match tokio::time::timeout(wait, Arc::clone(&shared.permits).acquire_owned()).await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        metrics.connections_refused.inc();
                        if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                            last_refusal_log = Some(Instant::now());
                            tracing::warn!(target: "zerodown::server", peer = %peer, max_connections = settings.limits.max_connections, "connection limit reached: closing new connections");
                        }
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            proxy: Arc::clone(&shared.proxy),
            builder: Arc::clone(&builder),
            settings: Arc::clone(&settings),
            shutdown: shared.shutdown.clone(),
            peer,
            proto,
        };
        let alive = alive.clone();
        let open = metrics.connections_open.clone();
        let tls = tls.as_ref().map(|t| t.load_full());
        tokio::spawn(
            async move {
                let _permit = permit;
                let _alive = alive;
                open.inc();
                match tls {
                    None => conn.run(stream, Serve::Either).await,
                    Some(acceptor) => conn.run_tls(stream, acceptor).await,
                }
                open.dec();
            }
            .instrument(tracing::debug_span!("conn", peer = %peer)),
        );
    }
    drop(listener);
    drop(alive);
    let drain = *shared.drain.borrow_and_update();
    tracing::info!(target: "zerodown::server", proto, open_connections = metrics.connections_open.get(), drain_ms = drain.as_millis() as u64, "stopped accepting; draining");
    match tokio::time::timeout(drain, all_closed.recv()).await {
        Ok(_) => tracing::info!(target: "zerodown::server", proto, "drained"),
        Err(_) => {
            tracing::warn!(target: "zerodown::server", proto, "drain timeout reached; closing remaining connections")
        }
    }
}

/// One accepted client connection.
struct Conn {
    proxy: Arc<Proxy>,
    builder: Arc<Builders>,
    settings: Arc<ListenerSettings>,
    shutdown: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
    proto: &'static str,
}

impl Conn {
    /// The TLS handshake (bounded by the header timeout), then the protocol ALPN chose.
    async fn run_tls(self, stream: tokio::net::TcpStream, acceptor: Arc<TlsAcceptor>) {
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

    async fn run<IO>(mut self, io: IO, serve: Serve)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = Arc::clone(&self.proxy);
        // Forwarding header values are built once per connection, not per request.
        let peer = Arc::new(Peer::new(self.peer, self.proto));
        let peer_addr = self.peer;
        let served = Arc::new(AtomicU64::new(0));
        let max_requests = self.settings.limits.max_requests_per_connection;
        // HTTP/2 has no `Connection: close`: at the cap the connection sends a graceful GOAWAY
        // (streams already open finish), as nginx does after `keepalive_requests`.
        let at_cap = Arc::new(tokio::sync::Notify::new());
        let cap = Arc::clone(&at_cap);
        // Set while draining: HTTP/1 answers say `Connection: close`, so a client that sends on
        // a keep-alive connection is answered and told, rather than racing an idle close.
        let draining = Arc::new(AtomicBool::new(false));
        let saw_h2 = Arc::new(AtomicBool::new(false));
        let (drain_flag, h2_flag) = (Arc::clone(&draining), Arc::clone(&saw_h2));
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let proxy = Arc::clone(&proxy);
            let peer = Arc::clone(&peer);
            let n = served.fetch_add(1, Ordering::Relaxed) + 1;
            let http1 = req.version() < Version::HTTP_2;
            if !http1 {
                h2_flag.store(true, Ordering::Relaxed);
                if n == max_requests {
                    cap.notify_one();
                }
            }
            let close = http1 && (n >= max_requests || drain_flag.load(Ordering::Relaxed));
            async move {
                let mut resp = proxy.handle(req, &peer).await;
                if close {
                    // hyper closes the connection after a response that says so.
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let io = Strict::new(
            io,
            self.settings.limits.max_header_bytes,
            peer_addr,
            &self.proxy.metrics,
        );
        let builder = match serve {
            Serve::Either => &self.builder.any,
            Serve::Http1 => &self.builder.h1,
            Serve::Http2 => &self.builder.h2,
        };
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let age = tokio::time::sleep(self.settings.limits.max_connection_age);
        tokio::pin!(age);
        let mut closing = false;
        let idle_close = tokio::time::sleep(Duration::MAX);
        tokio::pin!(idle_close);
        let mut idle_armed = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(target: "zerodown::server", peer = %peer_addr, error = %e, "client connection ended with error");
                    }
                    return;
                }
                _ = self.shutdown.wait_for(|s| *s), if !closing && !idle_armed => {
                    draining.store(true, Ordering::Relaxed);
                    if saw_h2.load(Ordering::Relaxed) {
                        // GOAWAY names the last stream: no race with a client's next request.
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    } else {
                        idle_close.as_mut().reset(tokio::time::Instant::now() + DRAIN_IDLE_GRACE);
                        idle_armed = true;
                    }
                }
                _ = &mut idle_close, if idle_armed && !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = &mut age, if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = at_cap.notified(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
