//! Listener and connections on the kit's accept loop: HTTP/1.1 with keep-alive; dropping the
//! double closes them all.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::shared::Shared;
use crate::kit::server;

/// Spawns the accept loop; aborting the task drops the listener.
pub(crate) fn spawn_accept(shared: Arc<Shared>, listener: TcpListener) -> JoinHandle<()> {
    server::spawn_accept(listener, "nomad", move |stream| {
        serve(shared.clone(), stream)
    })
}

/// Serves one connection until it ends or every connection is killed.
async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let generation = *shared.core.conn_kill.borrow();
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| super::http::handle(svc_shared.clone(), req));
    let io = TokioIo::new(stream);
    server::serve_http1(io, svc, &shared.core.conn_kill, generation, "nomad").await;
}
