//! Upgrading zerodown under load (the real binary, as separate processes): ten successive
//! `serve --upgrade` hand-overs while keep-alive and new-connection clients request /hello. Every
//! request has a deadline and is counted by class; a request a client provably never sent (its
//! idle keep-alive connection was closed by the draining process) is retried on a new
//! connection, as every HTTP client does, and counted apart. Also: a successor with a bad config,
//! one that never becomes ready, and a second upgrade while one runs all leave the running process
//! serving.

mod common;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::proc::Proc;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Outcomes by class.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    /// Requests never sent because the connection had been closed while idle: retried.
    not_sent: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, e: String) {
        self.errors.lock().unwrap().push(e);
    }
}

/// One request on `sender`: Ok(true) answered 200, Ok(false) not sent (connection gone), Err the rest.
async fn request(sender: &mut http1::SendRequest<Empty<Bytes>>) -> Result<bool, String> {
    if sender.ready().await.is_err() {
        return Ok(false);
    }
    let req = http::Request::get("/hello")
        .header("host", "zerodown.test")
        .body(Empty::new())
        .unwrap();
    let resp = match sender.try_send_request(req).await {
        Ok(r) => r,
        Err(mut e) => {
            if e.take_message().is_some() {
                return Ok(false);
            }
            return Err(format!("reset or closed mid-request: {}", e.into_error()));
        }
    };
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body cut: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}: {:?}", body.to_bytes()));
    }
    Ok(true)
}

async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect refused or failed: {e}"))?;
    let (sender, conn) = http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A client that keeps its connection (`keep_alive`) or opens one per request, until `stop`.
async fn client(addr: SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    let mut sender = None;
    while !stop.load(Ordering::Relaxed) {
        if sender.is_none() {
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    t.error(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().unwrap();
        match tokio::time::timeout(Duration::from_secs(5), request(s)).await {
            Err(_) => t.error("no answer within 5 s".into()),
            Ok(Ok(true)) => {
                t.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(false)) => {
                t.not_sent.fetch_add(1, Ordering::Relaxed);
                sender = None;
                continue;
            }
            Ok(Err(e)) => {
                t.error(e);
                sender = None;
            }
        }
        if !keep_alive {
            sender = None;
        }
    }
}

fn write_config(dir: &std::path::Path, upstreams: &str, timeout: &str) -> std::path::PathBuf {
    let path = dir.join(format!("zerodown-{}.toml", upstreams.replace('.', "-")));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndrain_timeout = \"{timeout}\"\nupgrade_socket = \"upgrade.sock\"\n\n[log]\naccess_log = false\n\n[source]\nkind = \"file\"\npath = \"{upstreams}\"\npoll_interval = \"50ms\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn upgrade_args(config: &std::path::Path, timeout: &str) -> Vec<OsString> {
    vec![
        "serve".into(),
        "--config".into(),
        config.into(),
        "--upgrade".into(),
        "--upgrade-timeout".into(),
        timeout.into(),
    ]
}

/// Waits for `p` to exit within `wait`; returns its exit code.
async fn exit_code(p: &mut Proc, wait: Duration) -> Option<i32> {
    let end = tokio::time::Instant::now() + wait;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            tokio::time::Instant::now() < end,
            "process still running after {wait:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_upgrades_under_load_refuse_nothing_and_keep_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    write_upstreams(
        &dir.path().join("upstreams.toml"),
        &[("v1", backend("v1").await.to_string(), "v1", "active")],
    );
    let config = write_config(dir.path(), "upstreams.toml", "5s");
    let mut current = Proc::run(&["serve".into(), "--config".into(), config.clone().into()]);
    let started = current.wait_for("zerodown started");
    let mut admin = admin_of(&started);
    let addr: SocketAddr = started["listen"].as_str().unwrap().parse().unwrap();
    let inode = started["listen_inode"].as_u64().unwrap();
    assert_eq!(started["generation"], 1);
    current.wait_for("upgrade socket ready");
    // A fresh start answers 503 until its first pools are loaded; load starts after that.
    current.wait_for("pool swap");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..8)
        .map(|i| tokio::spawn(client(addr, i % 2 == 0, stop.clone(), tally.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut took = Vec::new();
    for generation in 2..=11u64 {
        let began = std::time::Instant::now();
        let mut next = Proc::run(&upgrade_args(&config, "10s"));
        let s = next.wait_for("zerodown started");
        admin = admin_of(&s);
        assert_eq!(s["generation"], generation);
        assert_eq!(s["listen"], started["listen"], "the same address");
        assert_eq!(s["listen_inode"].as_u64(), Some(inode), "the same socket");
        next.wait_for("serving; the previous generation drains");
        assert_eq!(
            exit_code(&mut current, Duration::from_secs(10)).await,
            Some(0),
            "generation {} did not exit 0 after handing over",
            generation - 1
        );
        took.push(began.elapsed());
        next.wait_for("upgrade socket ready");
        current = next;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // A successor that cannot start leaves the running process serving.
    std::fs::write(dir.path().join("bad.toml"), "[server]\nlisten = 8080\n").unwrap();
    let mut bad = Proc::run(&upgrade_args(&dir.path().join("bad.toml"), "10s"));
    assert_eq!(exit_code(&mut bad, Duration::from_secs(10)).await, Some(64));
    // One that never becomes ready (its upstreams file does not exist) gives up; a second
    // upgrade while it waits is refused.
    let never = write_config(dir.path(), "missing.toml", "5s");
    let mut slow = Proc::run(&upgrade_args(&never, "2s"));
    slow.wait_for("took the listening sockets");
    let mut second = Proc::run(&upgrade_args(&config, "10s"));
    assert_eq!(
        exit_code(&mut second, Duration::from_secs(10)).await,
        Some(1)
    );
    current.wait_for("second upgrade refused: one is already running");
    assert_eq!(exit_code(&mut slow, Duration::from_secs(10)).await, Some(1));
    current.wait_for("upgrade aborted: the new process went away before it was ready; this process keeps serving");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(DEADLINE, c)
            .await
            .expect("a client stalled")
            .unwrap();
    }
    let errors = tally.errors.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    let not_sent = tally.not_sent.load(Ordering::Relaxed);
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 500, "too little load to prove anything: {ok} requests");
    let (code, body) = get(admin, "/status").await;
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["process_generation"], 11);
    took.sort();
    eprintln!(
        "10 upgrades: {ok} requests answered 200, {not_sent} retried after an idle close, 0 errors; \
         start of the new process to exit of the old: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    current.signal("TERM");
    assert_eq!(
        exit_code(&mut current, Duration::from_secs(10)).await,
        Some(0)
    );
}

/// The admin address a process logged at start (a plain address, or `Some(address)`).
fn admin_of(started: &serde_json::Value) -> SocketAddr {
    let text = started["admin"]
        .as_str()
        .expect("admin address in the start log");
    text.trim_start_matches("Some(")
        .trim_end_matches(')')
        .parse()
        .unwrap()
}
