//! Built-in demo instances: a tiny HTTP server answering `GET /hello` with a fixed message, so the
//! proxy can be tried, tested and benchmarked without the real service.

pub mod equipment;
pub mod hsms;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a demo instance answers.
#[derive(Debug, Clone)]
pub struct Backend {
    pub version: String,
    pub message: String,
}

pub const MESSI: &str = "Lionel Messi is the best player in the world!";
pub const RONALDO: &str = "Cristiano Ronaldo is the best player in the world!";

/// Serves `backend` on `listener` until the task is dropped. `/hello` (and anything under it)
/// answers the message; `/health` answers `ok`; other paths 404.
pub async fn serve_backend(listener: TcpListener, backend: Backend) {
    let backend = Arc::new(backend);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let backend = Arc::clone(&backend);
                async move { Ok::<_, Infallible>(answer(&backend, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(b: &Backend, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let (status, body) = if path == "/hello" || path.starts_with("/hello/") {
        (
            StatusCode::OK,
            format!("{} (version {})\n", b.message, b.version),
        )
    } else if path == "/health" {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (StatusCode::NOT_FOUND, "not found\n".to_string())
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&b.version) {
        r.headers_mut().insert("x-version", v);
    }
    r
}

/// Binds and spawns one demo instance; returns its address.
pub async fn spawn_backend(addr: SocketAddr, backend: Backend) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve_backend(listener, backend));
    Ok(local)
}
