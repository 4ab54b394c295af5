//! HTTPS termination with certificates made in the test: HTTP/1.1 and h2 by ALPN, the certificate
//! swapped on reload without dropping an open connection, and clear errors for bad files.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use zerodown::config::{Config, TlsConfig};
use zerodown::daemon::Daemon;

struct Pem {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> Pem {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pem {
        cert: c.cert.pem(),
        key: c.signing_key.serialize_pem(),
        der: c.cert.der().clone(),
    }
}

fn write_pem(dir: &Path, p: &Pem) -> TlsConfig {
    std::fs::write(dir.join("cert.pem"), &p.cert).unwrap();
    std::fs::write(dir.join("key.pem"), &p.key).unwrap();
    TlsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

async fn start_tls(cfg: Config) -> Daemon {
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let d = Daemon::start_with_tls(cfg, public, None, Some(tls)).unwrap();
    let mut rx = d.publisher().subscribe();
    tokio::time::timeout(DEADLINE, rx.wait_for(|g| *g >= 1))
        .await
        .unwrap()
        .unwrap();
    d
}

/// A TLS client that trusts exactly `trust`; returns the stream and the certificate the server sent.
async fn connect(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    CertificateDer<'static>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let presented = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    (s, presented)
}

fn config(dir: &Path, tls: TlsConfig, upstreams: &[Entry]) -> Config {
    let path = dir.join("upstreams.toml");
    write_upstreams(&path, upstreams);
    let mut cfg = test_config(&path);
    cfg.tls = Some(tls);
    cfg
}

#[tokio::test]
async fn https_serves_http1_and_h2_by_alpn_and_tells_the_upstream() {
    let echo = headers_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let pem = self_signed();
    let d = start_tls(config(
        dir.path(),
        write_pem(dir.path(), &pem),
        &[("e", echo.to_string(), "v1", "active")],
    ))
    .await;
    let addr = d.tls_addr.unwrap();

    let (s, _) = connect(addr, &pem.der, &[b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            http::Request::get("/x")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    assert!(
        body.contains("forwarded: for=127.0.0.1;proto=https"),
        "{body}"
    );

    let (s, _) = connect(addr, &pem.der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            http::Request::get("https://localhost/x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn reload_swaps_the_certificate_without_dropping_open_connections() {
    let v1 = backend("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed();
    let tls = write_pem(dir.path(), &first);
    let cfg = config(
        dir.path(),
        tls.clone(),
        &[("a", v1.to_string(), "v1", "active")],
    );
    let d = start_tls(cfg.clone()).await;
    let addr = d.tls_addr.unwrap();
    let (s, seen) = connect(addr, &first.der, &[b"http/1.1"]).await;
    assert_eq!(seen, first.der);
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);

    let second = self_signed();
    write_pem(dir.path(), &second);
    d.reload(cfg).unwrap();
    // New connections get the new certificate...
    let (_, seen) = connect(addr, &second.der, &[b"http/1.1"]).await;
    assert_eq!(seen, second.der);
    // ...and the connection opened before the reload keeps working.
    let resp = open
        .send_request(
            http::Request::get("/hello")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let a = self_signed();
    let b = self_signed();
    let mut tls = write_pem(dir.path(), &a);
    std::fs::write(dir.path().join("other-key.pem"), &b.key).unwrap();
    tls.key = dir.path().join("other-key.pem");
    let err = zerodown::http::tls::acceptor(&tls)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot be used together"), "{err}");
    tls.key = dir.path().join("missing.pem");
    let err = zerodown::http::tls::acceptor(&tls)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("tls.key: cannot read") && err.contains("missing.pem"),
        "{err}"
    );
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    tls.cert = dir.path().join("empty.pem");
    let err = zerodown::http::tls::acceptor(&tls)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
}

/// Everything the server sends on `s` after `bytes`, until it closes (or 5 s pass).
async fn answer_to(
    mut s: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    bytes: &[u8],
) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn alpn_decides_the_protocol_on_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pem = self_signed();
    let d = start_tls(config(
        dir.path(),
        write_pem(dir.path(), &pem),
        &[("v1", backend("v1").await.to_string(), "v1", "active")],
    ))
    .await;
    let addr = d.tls_addr.unwrap();
    // Negotiated h2, then HTTP/1.1 bytes: an invalid h2 preface, never an HTTP/1.1 answer.
    let (s, _) = connect(addr, &pem.der, &[b"h2"]).await;
    let got = answer_to(s, b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(
        !got.starts_with(b"HTTP/1.1"),
        "h2 was negotiated but HTTP/1.1 answered: {}",
        String::from_utf8_lossy(&got)
    );
    // Negotiated http/1.1, then the h2 preface: never an h2 SETTINGS frame.
    let (s, _) = connect(addr, &pem.der, &[b"http/1.1"]).await;
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let got = answer_to(s, &preface).await;
    let settings_frame = got.len() >= 9 && got[3] == 4 && got[5..9] == [0, 0, 0, 0];
    assert!(
        !settings_frame,
        "http/1.1 was negotiated but h2 answered: {got:?}"
    );
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // And each protocol still works as negotiated.
    let (s, _) = connect(addr, &pem.der, &[b"http/1.1"]).await;
    let got = answer_to(
        s,
        b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}
