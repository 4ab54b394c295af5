//! One instance address: its pooled HTTP/1.1 connections and its passive health.
//!
//! Connections are checked out *before* a request is handed over, so a failed connect never
//! consumes the request and can always be retried elsewhere. An `Upstream` lives as long as a
//! snapshot or an in-flight request refers to it; when the last reference goes, its idle
//! connections are dropped (closed) while in-flight ones finish on their own tasks.

mod body;
mod health;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use body::{BodyVerdict, Cutoff, Guarded, UpstreamBody};
pub use health::Health;

/// The sending half of one upstream connection.
pub type Sender = http1::SendRequest<UpstreamBody>;

/// Why no connection could be had; the request was not sent, so retrying is safe.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("HTTP/1.1 handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: hyper::Error,
    },
}

/// Connection limits, taken from the live config at each checkout so a reload applies at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// Largest upstream response head accepted (a larger one fails the request: 502).
    pub max_response_head: usize,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// One address to dial, shared by every snapshot that lists it.
pub struct Upstream {
    pub address: String,
    pub health: Health,
    in_flight: AtomicUsize,
    /// Set when the address left every pool: idle connections are closed, none are kept.
    retired: AtomicBool,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("address", &self.address)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Upstream {
    pub fn new(address: String) -> Upstream {
        Upstream {
            address,
            health: Health::default(),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn idle_connections(&self) -> usize {
        self.idle_list().len()
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list holds whole entries only; a poisoned lock still holds a valid list.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called when the address leaves every pool: closes its idle connections now, while requests
    /// in flight (which may still hold it) finish on their own connections.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        let idle = std::mem::take(&mut *self.idle_list());
        drop(idle);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Marks a request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// A ready connection: a pooled idle one if any is fresh, else a new one.
    pub async fn checkout(&self, limits: ConnLimits) -> Result<(Sender, bool), ConnectError> {
        loop {
            let candidate = self.idle_list().pop();
            let Some(mut idle) = candidate else { break };
            if idle.since.elapsed() >= limits.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            if idle.sender.is_ready() {
                return Ok((idle.sender, true));
            }
            // Returned at the end of its body: hyper is finishing that response; it is ready
            // at once unless the connection died, which `ready` reports.
            if idle.sender.ready().await.is_ok() {
                return Ok((idle.sender, true));
            }
        }
        self.connect(limits).await.map(|s| (s, false))
    }

    async fn connect(&self, limits: ConnLimits) -> Result<Sender, ConnectError> {
        let timeout = limits.connect_timeout;
        let addr = &self.address;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
            Err(_) => {
                return Err(ConnectError::Timeout {
                    addr: addr.clone(),
                    after: timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(ConnectError::Io {
                    addr: addr.clone(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(limits.max_response_head.max(8192))
            .max_header_size(limits.max_response_head.max(8192))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake {
                addr: addr.clone(),
                source,
            })?;
        let peer = addr.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %peer, error = %e, "upstream connection closed with error");
            }
        });
        Ok(sender)
    }

    /// Returns a connection whose response has been read to the end to the idle pool (called
    /// from the response body, so no task is spawned per request). Retired upstreams keep none.
    pub fn put_idle(&self, sender: Sender, max_idle: usize) {
        if self.is_retired() || sender.is_closed() {
            return;
        }
        let mut idle = self.idle_list();
        if idle.len() < max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// Counts one request against an upstream's in-flight gauge while it lives.
#[derive(Debug)]
pub struct InFlight(Arc<Upstream>);

impl InFlight {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
