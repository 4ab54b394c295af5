//! Propagation delay: from the Consul change to the first response of the new version on `/hello`,
//! over many switches, for tag flips and for the KV selector, with background load counting every
//! error. Runs against the in-process Consul double; rerun with
//! `cargo bench --bench propagation` (`SWITCHES=N` to change the count, default 100).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use zerodown::config::{ActiveSelector, Config, ConsulAddress, ConsulSourceConfig, SourceConfig};
use zerodown::daemon::Daemon;
use zerodown::demo::{spawn_backend, Backend};
use zerodown_testkit::{random_order, CheckStatus, ConsulDouble, ServiceSpec};

const SERVICE: &str = "hello-service";

struct Client(http1::SendRequest<Full<Bytes>>);

impl Client {
    async fn open(addr: SocketAddr) -> Client {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to proxy");
        let (tx, conn) = http1::handshake(TokioIo::new(s)).await.expect("handshake");
        tokio::spawn(conn);
        Client(tx)
    }

    async fn get(&mut self, path: &str) -> Result<(u16, String), hyper::Error> {
        self.0.ready().await?;
        let req = http::Request::get(path)
            .header("host", "bench")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = self.0.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(selector: ActiveSelector, switches: usize) {
    let consul = ConsulDouble::start().await.expect("double");
    let mut ids = Vec::new();
    for (id, version, color) in [
        ("v1-a", "v1", "blue"),
        ("v1-b", "v1", "blue"),
        ("v2-a", "v2", "green"),
        ("v2-b", "v2", "green"),
    ] {
        let addr = spawn_backend(
            "127.0.0.1:0".parse().expect("addr"),
            Backend {
                version: version.into(),
                message: format!("msg-{version}"),
            },
        )
        .await
        .expect("backend");
        let tag = if version == "v1" { "active" } else { "standby" };
        consul.register(
            ServiceSpec::new(id, SERVICE)
                .address("127.0.0.1")
                .port(addr.port())
                .tags([tag, color])
                .meta([("version", version)])
                .check(CheckStatus::Passing),
        );
        ids.push((id, version, color));
    }
    let key = format!("zerodown/{SERVICE}/active");
    consul.kv_put(&key, "blue");

    let mut src = ConsulSourceConfig::from_env(SERVICE, &|_| None).expect("config");
    src.address = ConsulAddress::parse(&consul.url(), false).expect("url");
    src.active_selector = selector;
    let mut cfg = Config::default();
    cfg.log.access_log = false;
    cfg.source = SourceConfig::Consul(src);
    let public = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let daemon = Daemon::start(cfg, public, None).expect("daemon");
    let addr = daemon.public_addr;
    let mut rx = daemon.publisher().subscribe();
    rx.wait_for(|g| *g >= 1).await.expect("first pool");

    // Background load: counts requests and every non-200 or connection error.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, served, errors) = (stop.clone(), served.clone(), errors.clone());
        load.push(tokio::spawn(async move {
            let mut c = Client::open(addr).await;
            while !stop.load(Ordering::Relaxed) {
                match c.get("/hello").await {
                    Ok((200, _)) => served.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => errors.fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        c = Client::open(addr).await;
                        0
                    }
                };
            }
        }));
    }

    let mut probe = Client::open(addr).await;
    let mut delays = Vec::with_capacity(switches);
    for k in 1..=switches {
        let (version, color) = if k % 2 == 1 {
            ("v2", "green")
        } else {
            ("v1", "blue")
        };
        // Space switches so each starts with a full token bucket, as real switches do.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let t0 = Instant::now();
        match selector {
            ActiveSelector::Kv => {
                let cas = consul.kv_get(&key).expect("key").modify_index;
                assert!(consul.kv_cas(&key, color, cas), "cas refused");
            }
            ActiveSelector::Tags => {
                let changes: Vec<(String, Vec<String>)> = ids
                    .iter()
                    .map(|(id, v, c)| {
                        let tag = if *v == version { "active" } else { "standby" };
                        (id.to_string(), vec![tag.to_string(), c.to_string()])
                    })
                    .collect();
                consul
                    .flip_tags(random_order(changes, k as u64), Duration::ZERO)
                    .await;
            }
        }
        loop {
            let (status, body) = probe.get("/hello").await.expect("probe");
            assert_eq!(status, 200, "probe got {status}: {body}");
            if body.contains(&format!("(version {version})")) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "switch {k} never landed"
            );
        }
        delays.push(t0.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<5} switches={} median={:.2}ms p99={:.2}ms min={:.2}ms max={:.2}ms  background requests={} errors={}",
        match selector { ActiveSelector::Tags => "tags", ActiveSelector::Kv => "kv" },
        delays.len(),
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        ms(delays[0]),
        ms(*delays.last().expect("delays")),
        served.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    daemon.shutdown().await;
}

fn main() {
    // `cargo bench` passes harness flags such as `--bench`; they are not ours.
    let switches = std::env::var("SWITCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        run(ActiveSelector::Tags, switches).await;
        run(ActiveSelector::Kv, switches).await;
    });
}
