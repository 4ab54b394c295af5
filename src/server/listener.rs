//! The public listener: accept with backoff, serve each connection (HTTP/1.1, or h2c by prior
//! knowledge) through the proxy, and drain gracefully on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Proxy;

/// Client-side connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
}

pub fn builder(limits: ClientLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, idle keep-alive included.
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.keepalive_timeout / 3))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accepts and serves until `shutdown` turns true, then waits up to `drain` for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut limits: watch::Receiver<ClientLimits>,
    mut shutdown: watch::Receiver<bool>,
    drain: watch::Receiver<Duration>,
) {
    let mut builder = builder(*limits.borrow_and_update());
    let graceful = GracefulShutdown::new();
    let proxy_metrics = std::sync::Arc::clone(&proxy.publisher.metrics);
    let mut backoff = Duration::from_millis(5);
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
        let _ = stream.set_nodelay(true);
        if limits.has_changed().unwrap_or(false) {
            builder = self::builder(*limits.borrow_and_update());
        }
        let proxy = Arc::clone(&proxy);
        let service = service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer, "http").await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let open = proxy_metrics.connections_open.clone();
        open.inc();
        tokio::spawn(async move {
            let result = conn.await;
            open.dec();
            if let Err(e) = result {
                tracing::debug!(target: "zerodown::server", peer = %peer, error = %e, "client connection ended with error");
            }
        });
    }
    drop(listener);
    let drain = *drain.borrow();
    let open = graceful.count();
    tracing::info!(target: "zerodown::server", open_connections = open, drain_ms = drain.as_millis() as u64, "stopped accepting; draining");
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => tracing::info!(target: "zerodown::server", "drained"),
        Err(_) => {
            tracing::warn!(target: "zerodown::server", "drain timeout reached; closing remaining connections")
        }
    }
}
