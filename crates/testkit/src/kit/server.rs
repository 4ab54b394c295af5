//! Listener and connections: an accept loop that owns the listener (aborting it drops the
//! listener, so clients get ECONNREFUSED), HTTP/1.1 connections with keep-alive that end
//! when the double's kill switch moves, and the handle of the accept loop.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lock;

/// Spawns the accept loop of the `who` double; each connection (`TCP_NODELAY` set) goes
/// to `serve` on a task of its own. Aborting the loop drops the listener.
pub(crate) fn spawn_accept<F, Fut>(
    listener: TcpListener,
    who: &'static str,
    serve: F,
) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "{who} double: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

/// Serves one HTTP/1.1 connection until it ends or `conn_kill` moves past `generation`.
pub(crate) async fn serve_http1<I, S>(
    io: I,
    svc: S,
    conn_kill: &watch::Sender<u64>,
    generation: u64,
    who: &'static str,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut kill = conn_kill.subscribe();
    // No header-read timeout: Go's server has none by default, and idle keep-alive
    // connections of a client must not be cut under it.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(io, svc);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::trace!(error = %e, "{who} double: connection ended");
            }
        }
        _ = kill.wait_for(|g| *g != generation) => {}
    }
}

/// The accept loop of a running double: `None` while it is stopped (an outage).
pub(crate) struct AcceptTask(Mutex<Option<JoinHandle<()>>>);

impl AcceptTask {
    pub fn new(task: JoinHandle<()>) -> Self {
        AcceptTask(Mutex::new(Some(task)))
    }

    /// Aborts the loop, which drops the listener once the task ends; returns the task so
    /// the caller can wait for that (`None`: already stopped).
    pub fn stop(&self) -> Option<JoinHandle<()>> {
        let task = lock(&self.0).take();
        if let Some(task) = &task {
            task.abort();
        }
        task
    }

    pub fn is_running(&self) -> bool {
        lock(&self.0).is_some()
    }

    /// Installs a new loop (after an outage), aborting any other.
    pub fn restart(&self, task: JoinHandle<()>) {
        if let Some(old) = lock(&self.0).replace(task) {
            old.abort();
        }
    }
}
