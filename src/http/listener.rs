//! A public listener (HTTP, or HTTPS when given a TLS acceptor): accept under a connection cap,
//! hand each connection to [`conn`](crate::http::conn) with the connection builders of the
//! current settings, and wait for open connections to drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::{Config, Http2Config, LimitsConfig};
use crate::http::conn::{Conn, Serve};
use crate::http::proxy::Proxy;
use crate::runtime;
use crate::telemetry::metrics::Lv;

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

/// The connection builders of one settings generation. HTTP/1.1 uses hyper's own builder, whose
/// connection can be ended without closing the socket (parking, see [`crate::http::park`]); a
/// TLS connection serves exactly the protocol ALPN negotiated, so a broken preface on one is never
/// read as the other.
pub struct Builders {
    pub http1: hyper::server::conn::http1::Builder,
    pub h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub fn new(s: &ListenerSettings) -> Builders {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            // The connection loop times the wait for a head with its one timer per connection
            // (hyper's allocates a timer per request).
            .header_read_timeout(None)
            .keep_alive(true)
            .max_headers(s.limits.max_headers)
            // The read buffer must hold the whole head; past it hyper answers 431.
            .max_buf_size(s.limits.max_header_bytes.max(8192));
        Builders {
            http1,
            h2: builder(s).http2_only(),
        }
    }
}

/// The HTTP/2 side of the connection builders.
fn builder(s: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
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
    /// Open connections per worker, across all listeners (see [`runtime::Shares`]).
    pub shares: Arc<runtime::Shares>,
}

/// A connection one worker accepted for another (see [`runtime::Shares`]).
pub struct Handed {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    held: runtime::Held,
}

/// One listener's side of the hand-off between workers: the worker's own inbox, and every
/// worker's sender (indexed by worker id).
pub struct Inbox {
    pub own: mpsc::UnboundedReceiver<Handed>,
    pub all: Arc<[mpsc::UnboundedSender<Handed>]>,
}

/// The inboxes of `workers` workers for one listener, in worker order.
pub fn inboxes(workers: usize) -> Vec<Inbox> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let all: Arc<[_]> = senders.into();
    receivers
        .into_iter()
        .map(|own| Inbox {
            own,
            all: Arc::clone(&all),
        })
        .collect()
}

/// Refusals beyond the connection cap are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts and serves until shutdown, then waits up to the drain timeout for open connections.
/// A worker holding more than its share hands what it accepts to the least loaded one (every
/// worker is woken for a new connection; without this the one awake first takes a whole burst).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    mut shared: Shared,
    mut inbox: Inbox,
) {
    let proto = if tls.is_some() { "https" } else { "http" };
    let metrics = Arc::clone(&shared.proxy.metrics);
    let worker = runtime::id();
    let settings = Arc::clone(&shared.settings.borrow_and_update());
    let mut local = Local {
        builder: Arc::new(Builders::new(&settings)),
        settings,
        alive: mpsc::channel::<()>(1),
        tls,
        proto,
        accepts: metrics
            .connections_accepted
            .get_or_create(&[("worker", Lv::A(worker.to_string().into()))])
            .clone(),
    };
    let mut backoff = Duration::from_millis(5);
    let mut last_refusal_log: Option<Instant> = None;
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            Some(h) = inbox.own.recv() => {
                local.start_handed(h, &mut shared);
                continue;
            }
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
        local.refresh(&mut shared);
        let permit = match Arc::clone(&shared.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let wait = local.settings.limits.connection_wait;
                match tokio::time::timeout(wait, Arc::clone(&shared.permits).acquire_owned()).await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        metrics.connections_refused.inc();
                        if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                            last_refusal_log = Some(Instant::now());
                            tracing::warn!(target: "zerodown::server", peer = %peer, max_connections = local.settings.limits.max_connections, "connection limit reached: closing new connections");
                        }
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        if let Some(to) = shared.shares.better_than(worker) {
            match stream.into_std() {
                Ok(stream) => {
                    let h = Handed {
                        stream,
                        peer,
                        permit,
                        held: shared.shares.open(to),
                    };
                    // A worker whose inbox is closed has stopped: then this one serves it.
                    if let Err(back) = inbox.all[to].send(h) {
                        let mut h = back.0;
                        h.held = shared.shares.open(worker);
                        local.start_handed(h, &mut shared);
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "zerodown::server", peer = %peer, error = %e, "a connection could not be handed to another worker")
                }
            }
            continue;
        }
        let held = shared.shares.open(worker);
        local.start(stream, peer, permit, held, &shared);
    }
    // Connections handed to this worker before it stopped are served; later ones are refused
    // to their sender, which serves them itself.
    inbox.own.close();
    while let Ok(h) = inbox.own.try_recv() {
        local.start_handed(h, &mut shared);
    }
    drop(listener);
    let Local {
        alive: (alive, mut all_closed),
        ..
    } = local;
    drop(alive);
    let drain = *shared.drain.borrow_and_update();
    tracing::info!(target: "zerodown::server", proto, worker, open_connections = metrics.connections_open.get(), drain_ms = drain.as_millis() as u64, "stopped accepting; draining");
    match tokio::time::timeout(drain, all_closed.recv()).await {
        Ok(_) => tracing::info!(target: "zerodown::server", proto, worker, "drained"),
        Err(_) => {
            tracing::warn!(target: "zerodown::server", proto, worker, "drain timeout reached; closing remaining connections")
        }
    }
}

/// What one worker's accept loop starts its connections with.
struct Local {
    settings: Arc<ListenerSettings>,
    builder: Arc<Builders>,
    /// A sender per open connection; the receiver returns once all are dropped (the drain).
    alive: (mpsc::Sender<()>, mpsc::Receiver<()>),
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    proto: &'static str,
    accepts: Counter,
}

impl Local {
    /// The settings of the last reload, for the connections started from now on.
    fn refresh(&mut self, shared: &mut Shared) {
        if shared.settings.has_changed().unwrap_or(false) {
            self.settings = Arc::clone(&shared.settings.borrow_and_update());
            self.builder = Arc::new(Builders::new(&self.settings));
        }
    }

    /// A connection another worker accepted: taken into this worker's reactor, then served.
    fn start_handed(&mut self, h: Handed, shared: &mut Shared) {
        self.refresh(shared);
        match TcpStream::from_std(h.stream) {
            Ok(stream) => self.start(stream, h.peer, h.permit, h.held, shared),
            Err(e) => {
                tracing::warn!(target: "zerodown::server", peer = %h.peer, error = %e, "a connection from another worker could not be taken over")
            }
        }
    }

    fn start(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        held: runtime::Held,
        shared: &Shared,
    ) {
        self.accepts.inc();
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            proxy: Arc::clone(&shared.proxy),
            builders: Arc::clone(&self.builder),
            settings: Arc::clone(&self.settings),
            shutdown: shared.shutdown.clone(),
            peer,
            proto: self.proto,
        };
        let alive = self.alive.0.clone();
        let open = shared.proxy.metrics.connections_open.clone();
        let tls = self.tls.as_ref().map(|t| t.load_full());
        tokio::spawn(
            async move {
                let _permit = permit;
                let _alive = alive;
                let _held = held;
                open.inc();
                match tls {
                    None => conn.run(stream, Serve::Either).await,
                    // Boxed: a plaintext connection's task need not be as large as a TLS one's.
                    Some(acceptor) => Box::pin(conn.run_tls(stream, acceptor)).await,
                }
                open.dec();
            }
            .instrument(tracing::debug_span!("conn", peer = %peer)),
        );
    }
}
