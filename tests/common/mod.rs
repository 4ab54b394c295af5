//! Shared test harness: demo upstreams, an upstreams file, an in-process daemon on 127.0.0.1:0,
//! keep-alive HTTP clients, and deadline-bounded waiting.
#![allow(dead_code)]

pub mod consul;
pub mod hsms;
pub mod load;
pub mod proc;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use zerodown::config::{Config, FileSourceConfig, SourceConfig};
use zerodown::daemon::Daemon;
use zerodown::demo::{spawn_backend, Backend};

pub const DEADLINE: Duration = Duration::from_secs(10);

/// Starts a demo instance answering `/hello` with `msg-<version>`.
pub async fn backend(version: &str) -> SocketAddr {
    spawn_backend(
        "127.0.0.1:0".parse().unwrap(),
        Backend {
            version: version.into(),
            message: format!("msg-{version}"),
        },
    )
    .await
    .unwrap()
}

/// An address nothing listens on (bound, then released).
pub fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// (id, address, version, tag)
pub type Entry<'a> = (&'a str, String, &'a str, &'a str);

/// Writes the upstreams file atomically (temp file + rename), as tools should.
pub fn write_upstreams(path: &Path, entries: &[Entry]) {
    let mut text = String::new();
    for (id, addr, version, tag) in entries {
        text.push_str(&format!(
            "[[instances]]\nid = \"{id}\"\naddress = \"{addr}\"\nversion = \"{version}\"\ntags = [\"{tag}\"]\n\n"
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A daemon on loopback with a fast-polling file source in a temp dir.
pub struct TestDaemon {
    pub daemon: Daemon,
    pub upstreams: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TestDaemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.daemon.public_addr, path)
    }
}

pub fn test_config(upstreams: &Path) -> Config {
    let mut cfg = Config {
        source: SourceConfig::File(FileSourceConfig {
            path: upstreams.to_path_buf(),
            poll_interval: Duration::from_millis(20),
        }),
        ..Config::default()
    };
    cfg.log.access_log = false;
    cfg.upstream.connect_timeout = Duration::from_secs(1);
    cfg
}

pub async fn start(entries: &[Entry<'_>], tweak: impl FnOnce(&mut Config)) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = dir.path().join("upstreams.toml");
    write_upstreams(&upstreams, entries);
    let mut cfg = test_config(&upstreams);
    tweak(&mut cfg);
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Daemon::start(cfg, public, Some(admin)).unwrap();
    if !entries.is_empty() {
        let mut rx = daemon.publisher().subscribe();
        tokio::time::timeout(DEADLINE, rx.wait_for(|g| *g >= 1))
            .await
            .expect("first pool never loaded")
            .unwrap();
    }
    TestDaemon {
        daemon,
        upstreams,
        dir,
    }
}

/// One keep-alive HTTP/1.1 client connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    pub addr: SocketAddr,
    /// The Host header sent: the address, unless opened with [`Conn::open_host`].
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        Conn::open_host(addr, None).await
    }

    /// A connection whose requests carry `host` (when given) as their Host.
    pub async fn open_host(addr: SocketAddr, host: Option<&str>) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let host = host.map_or_else(|| addr.to_string(), str::to_string);
        Ok(Conn { sender, addr, host })
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, String), hyper::Error> {
        self.send(http::Request::get(path), Bytes::new()).await
    }

    pub async fn send(
        &mut self,
        builder: http::request::Builder,
        body: Bytes,
    ) -> Result<(u16, String), hyper::Error> {
        let (status, _, body) = self.exchange(builder, body).await?;
        Ok((status, body))
    }

    /// [`Conn::send`], with the response headers.
    pub async fn exchange(
        &mut self,
        builder: http::request::Builder,
        body: Bytes,
    ) -> Result<(u16, http::HeaderMap, String), hyper::Error> {
        self.sender.ready().await?;
        let req = builder
            .header("host", self.host.as_str())
            .body(Full::new(body))
            .unwrap();
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((
            parts.status.as_u16(),
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

/// One-shot GET on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = Conn::open(addr).await.expect("connect to proxy");
    c.get(path).await.expect("request failed")
}

/// Polls `check` until it returns true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// An upstream that reports each request on `arrived`, then answers after `delay`.
pub async fn slow_upstream(
    delay: Duration,
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
) -> SocketAddr {
    upstream_after(arrived, "slow done", move || tokio::time::sleep(delay)).await
}

/// An upstream that reports each request on `arrived`, then answers `body` once `wait()` is done.
pub async fn upstream_after<F, W>(
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
    body: &'static str,
    wait: F,
) -> SocketAddr
where
    F: Fn() -> W + Clone + Send + Sync + 'static,
    W: Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (arrived, wait) = (arrived.clone(), wait.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let _ = arrived.send(());
                    let waited = wait();
                    async move {
                        waited.await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// An upstream that answers with the request head it received (method, target, headers).
pub async fn headers_echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let mut out = format!("{} {}\n", req.method(), req.uri());
                        for (k, v) in req.headers() {
                            out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(out),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}
