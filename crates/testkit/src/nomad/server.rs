//! Listener and connections: HTTP/1.1 with keep-alive; dropping the double closes them all.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::shared::Shared;

/// Spawns the accept loop; aborting the task drops the listener.
pub(crate) fn spawn_accept(shared: Arc<Shared>, listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(shared.clone(), stream));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "nomad double: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

/// Serves one connection until it ends or every connection is killed.
async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let generation = *shared.conn_kill.borrow();
    let mut kill = shared.conn_kill.subscribe();
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| super::http::handle(svc_shared.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::trace!(error = %e, "nomad double: connection ended");
            }
        }
        _ = kill.wait_for(|g| *g != generation) => {}
    }
}
