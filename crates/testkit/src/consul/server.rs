//! Listener and connections on the kit's accept loop. An outage drops the listener (clients
//! then get ECONNREFUSED) and a later bind on the same port ends it. Connections wrap the
//! socket so a `ResetConnection` fault can close it with an RST.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::shared::Shared;
use crate::kit::server;

/// Service error that makes hyper drop the connection without answering.
#[derive(Debug)]
pub(crate) struct ResetRequested;

impl std::fmt::Display for ResetRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injected: reset connection")
    }
}

impl std::error::Error for ResetRequested {}

/// Binds `addr`, retrying briefly: the port was ours a moment ago, so `AddrInUse` is transient.
pub(crate) async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.unwrap_or_else(|| io::Error::other("rebind failed")))
}

/// Spawns the accept loop; aborting the task drops the listener.
pub(crate) fn spawn_accept(shared: Arc<Shared>, listener: TcpListener) -> JoinHandle<()> {
    // Connections of this listener die once the kill generation moves past this one, even
    // if their task only starts after the kill.
    let generation = *shared.core.conn_kill.borrow();
    server::spawn_accept(listener, "consul", move |stream| {
        serve(shared.clone(), stream, generation)
    })
}

/// Serves one connection until it ends or every connection is killed.
async fn serve(shared: Arc<Shared>, stream: TcpStream, generation: u64) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ConnIo {
        stream,
        reset: reset.clone(),
    });
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let (shared, reset) = (svc_shared.clone(), reset.clone());
        async move { super::http::handle(shared, req, reset).await }
    });
    server::serve_http1(io, svc, &shared.core.conn_kill, generation, "consul").await;
}

/// The socket, plus a flag that turns the close into a TCP reset.
struct ConnIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // SO_LINGER 0 makes close() send RST instead of FIN, without blocking.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
