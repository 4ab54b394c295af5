//! The real binary under real signals: SIGHUP reloads (a bad file is rejected and the running config
//! keeps serving, without dropping a connection), SIGTERM drains in-flight requests and exits 0.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::proc::Proc;
use common::*;

fn write_config(dir: &std::path::Path, extra_routes: &str) -> std::path::PathBuf {
    let path = dir.join("zerodown.toml");
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"upstreams.toml\"\npoll_interval = \"50ms\"\n\n[server]\ndrain_timeout = \"5s\"\n\n{extra_routes}[[routes]]\nprefix = \"/standby\"\npool = \"standby\"\nrewrite = \"/hello\"\n\n[[routes]]\nprefix = \"/\"\npool = \"active\"\n"
    );
    let tmp = dir.join("zerodown.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, &path).unwrap();
    path
}

fn listen_addr(started: &serde_json::Value) -> SocketAddr {
    started["listen"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_config_and_rejects_a_bad_one() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let dir = tempfile::tempdir().unwrap();
    write_upstreams(
        &dir.path().join("upstreams.toml"),
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("s", v2.to_string(), "v2", "standby"),
        ],
    );
    let config = write_config(dir.path(), "");
    let mut p = Proc::spawn(&config);
    let addr = listen_addr(&p.wait_for("zerodown started"));
    p.wait_for("pool swap");
    let mut kept = Conn::open(addr).await.unwrap();
    assert_eq!(
        kept.get("/next").await.unwrap().0,
        404,
        "/next goes to the active pool, which has no /next"
    );

    // A good reload adds a route; the open keep-alive connection keeps working and sees it.
    write_config(
        dir.path(),
        "[[routes]]\nprefix = \"/next\"\npool = \"standby\"\nrewrite = \"/hello\"\n\n",
    );
    p.signal("HUP");
    p.wait_for("configuration reloaded");
    assert_eq!(
        kept.get("/next").await.unwrap(),
        (200, "msg-v2 (version v2)\n".into())
    );

    // A bad reload is rejected with the reason; the running config keeps serving.
    std::fs::write(&config, "[server]\nlisten = \"nope\"\n").unwrap();
    p.signal("HUP");
    let rejected = p.wait_for("config reload rejected: the running config keeps serving");
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("server.listen"),
        "{rejected}"
    );
    assert_eq!(kept.get("/next").await.unwrap().0, 200);
    assert_eq!(
        kept.get("/hello").await.unwrap(),
        (200, "msg-v1 (version v1)\n".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let slow = slow_upstream(Duration::from_millis(700), arrived_tx).await;
    let dir = tempfile::tempdir().unwrap();
    write_upstreams(
        &dir.path().join("upstreams.toml"),
        &[("slow", slow.to_string(), "v1", "active")],
    );
    let config = write_config(dir.path(), "");
    let mut p = Proc::spawn_with(&config, &["--threads", "2"]);
    let addr = listen_addr(&p.wait_for("zerodown started"));
    p.wait_for("pool swap");

    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    // Signal only once the request is really in flight: the upstream has it.
    tokio::time::timeout(DEADLINE, arrived.recv())
        .await
        .unwrap()
        .unwrap();
    p.signal("TERM");
    // Each worker closes its descriptor of the listening socket.
    for _ in 0..2 {
        p.wait_for("stopped accepting; draining");
    }
    // New connections are refused while the slow request finishes.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "slow done"));
    for _ in 0..2 {
        p.wait_for("drained");
    }
    let status = tokio::task::spawn_blocking(move || {
        let mut p = p;
        let s = p.child.wait().unwrap();
        s.code()
    })
    .await
    .unwrap();
    assert_eq!(status, Some(0));
}
