//! Pooled HTTP/1.1 connections to one endpoint (health and in-flight counts live on the core's
//! [`Endpoint`]).
//!
//! Connections are checked out *before* a request is handed over, so a failed connect never
//! consumes the request and can always be retried elsewhere. The pool lives as long as its
//! endpoint; when the endpoint is retired, its idle connections close while in-flight ones finish
//! on their own tasks.

mod body;

use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use body::{BodyLimits, BodyVerdict, Cutoff, Guarded, UpstreamBody};

use crate::core::{Endpoint, EndpointState};
use crate::runtime::PerWorker;

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

/// The idle HTTP/1.1 connections to one endpoint, kept in the endpoint's front-end state so every
/// snapshot listing the address shares them. One list per worker thread (see [`crate::runtime`]):
/// a connection is driven by the runtime that opened it, so a request takes one of its own
/// worker's, and the lock is never contended on the request path.
#[derive(Default)]
pub struct ConnPool {
    idle: PerWorker<Vec<Idle>>,
}

impl EndpointState for ConnPool {
    /// The address left every pool: close idle connections now; in-flight ones finish on their
    /// own tasks and are not returned (see [`ConnPool::put_idle`]).
    fn retire(&self) {
        for mut list in self.idle.each() {
            let idle = std::mem::take(&mut *list);
            drop(idle);
        }
    }
}

impl ConnPool {
    /// The pool of `endpoint`, created on first use.
    pub fn of(endpoint: &Endpoint) -> &ConnPool {
        endpoint.state::<ConnPool>()
    }

    pub fn idle_connections(&self) -> usize {
        self.idle.each().map(|l| l.len()).sum()
    }

    /// A ready connection: a pooled idle one if any is fresh, else a new one.
    pub async fn checkout(
        &self,
        address: &str,
        limits: ConnLimits,
    ) -> Result<(Sender, bool), ConnectError> {
        loop {
            let candidate = self.idle.mine().pop();
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
        connect(address, limits).await.map(|s| (s, false))
    }

    /// Closes idle connections older than `idle_timeout` or closed by the upstream; returns how
    /// many. Checkout skips them too, but an endpoint nobody sends to would keep their sockets.
    pub fn evict(&self, idle_timeout: Duration) -> usize {
        let mut evicted = 0;
        for mut idle in self.idle.each() {
            let before = idle.len();
            idle.retain(|i| i.since.elapsed() < idle_timeout && !i.sender.is_closed());
            evicted += before - idle.len();
        }
        evicted
    }

    /// Returns a connection whose response has been read to the end to the idle pool (called
    /// from the response body, so no task is spawned per request). Retired upstreams keep none.
    /// `max_idle` is the endpoint's, shared out between the workers.
    pub fn put_idle(&self, endpoint: &Endpoint, sender: Sender, max_idle: usize) {
        if endpoint.is_retired() || sender.is_closed() {
            return;
        }
        let mut idle = self.idle.mine();
        if idle.len() < max_idle.div_ceil(self.idle.workers()) {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

async fn connect(addr: &str, limits: ConnLimits) -> Result<Sender, ConnectError> {
    let timeout = limits.connect_timeout;
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(ConnectError::Timeout {
                addr: addr.to_string(),
                after: timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(ConnectError::Io {
                addr: addr.to_string(),
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
            addr: addr.to_string(),
            source,
        })?;
    let peer = addr.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(upstream = %peer, error = %e, "upstream connection closed with error");
        }
    });
    Ok(sender)
}
