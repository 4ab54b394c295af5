//! Upgrading zerodown under load (the real binary and a copy of it taking turns, as separate
//! processes): ten successive `serve --upgrade` hand-overs while keep-alive and new-connection
//! clients request /hello. Every request has a deadline and is counted by class; a request a
//! client provably never sent (its idle keep-alive connection was closed by the draining process)
//! is retried on a new connection, as every HTTP client does, and counted apart. HSMS equipment
//! sessions ride through the same ten upgrades on one connection each, sending W-bit primaries
//! throughout: every primary gets exactly one reply, no session sees a disconnect, a Deselect or a
//! Separate, and each ends up in the last process having lived through all ten upgrades. Also: a
//! successor with a bad config, one that never becomes ready, and a second upgrade while one runs
//! all leave the running process serving.

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

/// Outcomes of the equipment sessions.
#[derive(Debug, Default)]
struct Equip {
    replies: AtomicU64,
    /// The longest wait for the replies to a pair of primaries, in microseconds.
    slowest_us: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// One equipment session for the whole test: Select once, then two S1F1 W primaries in flight
/// at a time until `stop`. Any missing reply, disconnect, or message it did not ask for (a
/// duplicated reply, a Deselect, a Separate) is an error.
async fn equipment(addr: SocketAddr, stop: Arc<AtomicBool>, t: Arc<Equip>) {
    use common::hsms::{s1f1, Equipment};
    use zerodown::hsms::codec::SType;
    let mut e = Equipment::connect(addr).await;
    if e.select().await != 0 {
        return t.errors.lock().unwrap().push("Select refused".into());
    }
    while !stop.load(Ordering::Relaxed) {
        // The host may answer the two in either order.
        let mut open = vec![e.system(), e.system()];
        let sent = std::time::Instant::now();
        for s in &open {
            e.send(&s1f1(*s)).await;
        }
        while !open.is_empty() {
            let Some(m) = e.recv(Duration::from_secs(10)).await else {
                return t.errors.lock().unwrap().push(format!(
                    "no reply to primaries {open:?} within 10 s (or the connection closed)"
                ));
            };
            match open.iter().position(|s| *s == m.header.system) {
                Some(i) if m.header.stype == SType::Data => {
                    open.swap_remove(i);
                    t.replies.fetch_add(1, Ordering::Relaxed);
                }
                _ => e.unsolicited.push(m),
            }
        }
        t.slowest_us
            .fetch_max(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    // Anything still arriving would be a duplicate or a control message nobody asked for.
    let late = e.recv(Duration::from_millis(200)).await;
    let mut errors = t.errors.lock().unwrap();
    errors.extend(late.map(|m| format!("unexpected message after the last reply: {:?}", m.header)));
    errors.extend(
        e.unsolicited
            .iter()
            .map(|m| format!("unexpected message: {:?}", m.header)),
    );
}

fn write_config(dir: &std::path::Path, upstreams: &str, timeout: &str) -> std::path::PathBuf {
    let path = dir.join(format!("zerodown-{}.toml", upstreams.replace('.', "-")));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndrain_timeout = \"{timeout}\"\nupgrade_socket = \"upgrade.sock\"\n\n[log]\naccess_log = false\n\n[source]\nkind = \"file\"\npath = \"{upstreams}\"\npoll_interval = \"50ms\"\n\n[hsms]\nlisten = \"127.0.0.1:0\"\n"
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
    // The HSMS host answers after 5 ms, so transactions are open when an upgrade begins.
    common::hsms::write(
        &dir.path().join("upstreams.toml"),
        &[(
            "v1",
            backend("v1").await,
            common::hsms::host("v1", Duration::from_millis(5)).await,
            "v1",
            "active",
        )],
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
    let hsms_addr = addr_of(&started, "hsms");
    let equip = Arc::new(Equip::default());
    let sessions: Vec<_> = (0..4)
        .map(|_| tokio::spawn(equipment(hsms_addr, stop.clone(), equip.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two binaries take turns, as an upgrade to a new build would: the built one and a copy.
    let copy = dir.path().join("zerodown-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_zerodown"), &copy).unwrap();
    let binaries = [
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_zerodown")),
        copy,
    ];
    let mut took = Vec::new();
    for generation in 2..=11u64 {
        let began = std::time::Instant::now();
        let binary = &binaries[generation as usize % 2];
        let mut next = Proc::run_binary(binary, &upgrade_args(&config, "10s"));
        let s = next.wait_for("zerodown started");
        admin = admin_of(&s);
        assert_eq!(s["pid"], next.child.id(), "the new process logs itself");
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
    // So does one whose admin port is taken by another program.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "admin_listen = \"127.0.0.1:0\"",
        &format!("admin_listen = \"{}\"", taken.local_addr().unwrap()),
    );
    let busy = dir.path().join("admin-taken.toml");
    std::fs::write(&busy, text).unwrap();
    let mut blocked = Proc::run(&upgrade_args(&busy, "10s"));
    assert_eq!(
        exit_code(&mut blocked, Duration::from_secs(10)).await,
        Some(1)
    );
    current.wait_for("upgrade aborted: the new process went away before it was ready; this process keeps serving");
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

    // Before the equipment leaves: each session is in the last process, after all ten upgrades.
    let (_, body) = get(admin, "/status").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let upgrades: Vec<_> = doc["hsms"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["upgrades"].as_u64().unwrap())
        .collect();
    assert_eq!(
        upgrades,
        [10; 4],
        "every equipment session lived through every upgrade; equipment errors: {:?}; HSMS status: {}",
        equip.errors.lock().unwrap(),
        doc["hsms"]
    );

    stop.store(true, Ordering::Relaxed);
    for c in sessions.into_iter().chain(clients) {
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
    let equip_errors = equip.errors.lock().unwrap().clone();
    let replies = equip.replies.load(Ordering::Relaxed);
    if !equip_errors.is_empty() {
        let hsms_log: Vec<_> = current
            .log()
            .lines()
            .filter(|l| l.contains("hsms") || l.contains("upgrade"))
            .map(String::from)
            .collect();
        panic!(
            "HSMS: {equip_errors:?}\nthe last process's HSMS log:\n{}",
            hsms_log.join("\n")
        );
    }
    assert!(
        replies > 100,
        "too few HSMS replies to prove anything: {replies}"
    );
    let (code, body) = get(admin, "/status").await;
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["process_generation"], 11);
    took.sort();
    eprintln!(
        "10 upgrades: {ok} requests answered 200, {not_sent} retried after an idle close, 0 errors; \
         {replies} HSMS replies on 4 sessions, none lost or duplicated, no disconnect, slowest pair {:?}; \
         start of the new process to exit of the old: median {:?}, max {:?}",
        Duration::from_micros(equip.slowest_us.load(Ordering::Relaxed)),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    current.signal("TERM");
    assert_eq!(
        exit_code(&mut current, Duration::from_secs(10)).await,
        Some(0)
    );
}

/// The admin address a process logged at start.
fn admin_of(started: &serde_json::Value) -> SocketAddr {
    addr_of(started, "admin")
}

/// An address a process logged at start (a plain address, or `Some(address)`).
fn addr_of(started: &serde_json::Value, key: &str) -> SocketAddr {
    let text = started[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} address in the start log"));
    text.trim_start_matches("Some(")
        .trim_end_matches(')')
        .parse()
        .unwrap()
}
