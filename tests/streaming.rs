//! Bodies stream both ways: the proxy never waits for a whole body before passing it on.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::channel::Channel;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

/// An upstream that reports each request-body chunk as it arrives on `seen`, and answers with a
/// body whose second chunk is only sent when `release` fires.
async fn streaming_upstream(
    seen: mpsc::UnboundedSender<Bytes>,
    release: oneshot::Receiver<()>,
) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let release = std::sync::Arc::new(tokio::sync::Mutex::new(Some(release)));
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            let release = release.clone();
            async move {
                let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
                tokio::spawn(async move {
                    let mut body = req.into_body();
                    while let Some(Ok(f)) = body.frame().await {
                        if let Ok(d) = f.into_data() {
                            let _ = seen.send(d);
                        }
                    }
                    let _ = tx.send_data(Bytes::from_static(b"first;")).await;
                    if let Some(r) = release.lock().await.take() {
                        let _ = r.await;
                    }
                    let _ = tx.send_data(Bytes::from_static(b"second")).await;
                });
                Ok::<_, Infallible>(http::Response::new(body))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .await;
    });
    addr
}

#[tokio::test]
async fn request_and_response_bodies_stream() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (release_tx, release_rx) = oneshot::channel();
    let up = streaming_upstream(seen_tx, release_rx).await;
    let d = start(&[("s", up.to_string(), "v1", "active")], |_| {}).await;

    // Client side: a request body fed chunk by chunk.
    let stream = tokio::net::TcpStream::connect(d.daemon.public_addr)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (mut body_tx, body_rx) = Channel::<Bytes, Infallible>::new(4);
    let req = http::Request::post("/upload")
        .header("host", "test")
        .body(body_rx)
        .unwrap();
    let resp_fut = tokio::spawn(async move { sender.send_request(req).await });

    body_tx
        .send_data(Bytes::from_static(b"part1"))
        .await
        .unwrap();
    // The upstream sees part 1 while the client has not finished its body.
    let got = tokio::time::timeout(DEADLINE, seen_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "part1");
    body_tx
        .send_data(Bytes::from_static(b"part2"))
        .await
        .unwrap();
    let got = tokio::time::timeout(DEADLINE, seen_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "part2");
    drop(body_tx);

    // Response side: the first chunk reaches the client while the upstream still holds the second.
    let resp = tokio::time::timeout(DEADLINE, resp_fut)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    // Nothing else can arrive before the release.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), body.frame())
            .await
            .is_err()
    );
    release_tx.send(()).unwrap();
    let second = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().unwrap(), "second");
}
