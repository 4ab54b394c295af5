//! Thread-per-core under the real binary (`--threads 3`): every worker accepts from the one
//! listening socket and takes its share of the connections, and SIGTERM drains the requests in
//! flight on every worker before the process exits 0, with every access line written.

mod common;

use std::net::SocketAddr;

use tokio::sync::{mpsc, watch};

use common::proc::Proc;
use common::*;

const WORKERS: usize = 3;
const CONNECTIONS: usize = 12;

/// An upstream that reports each request on `arrived` and answers it once `release` is true.
async fn held_upstream(
    arrived: mpsc::UnboundedSender<()>,
    release: watch::Receiver<bool>,
) -> SocketAddr {
    upstream_after(arrived, "released", move || {
        let mut release = release.clone();
        async move {
            let _ = release.wait_for(|r| *r).await;
        }
    })
    .await
}

/// `zerodown_client_connections_accepted_total` by worker.
fn accepted_by_worker(metrics: &str) -> Vec<u64> {
    let mut out = vec![0; WORKERS];
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("zerodown_client_connections_accepted_total{worker=\"")
        else {
            continue;
        };
        let (worker, value) = rest.split_once("\"} ").unwrap();
        out[worker.parse::<usize>().unwrap()] = value.parse().unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_takes_connections_and_drains_its_own() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let upstream = held_upstream(arrived_tx, release_rx).await;
    let dir = tempfile::tempdir().unwrap();
    write_upstreams(
        &dir.path().join("upstreams.toml"),
        &[("held", upstream.to_string(), "v1", "active")],
    );
    let config = dir.path().join("zerodown.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"file\"\npath = \"upstreams.toml\"\npoll_interval = \"50ms\"\n\n[server]\ndrain_timeout = \"20s\"\n",
    )
    .unwrap();
    let threads = WORKERS.to_string();
    let mut p = Proc::spawn_with(&config, &["--threads", &threads]);
    let started = p.wait_for("zerodown started");
    let addr: SocketAddr = started["listen"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = started["admin"].as_str().unwrap().parse().unwrap();
    p.wait_for("pool swap");

    // A burst of connections, each holding a request in flight at the upstream. Without the
    // hand-off to the least loaded worker, the worker awake first takes most of a burst.
    let requests: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(async move { get(addr, "/held").await }))
        .collect();
    for _ in 0..CONNECTIONS {
        tokio::time::timeout(DEADLINE, arrived.recv())
            .await
            .expect("every request reaches the upstream")
            .unwrap();
    }
    let accepted = accepted_by_worker(&get(admin, "/metrics").await.1);
    assert_eq!(accepted.iter().sum::<u64>(), CONNECTIONS as u64);
    assert!(
        accepted.iter().all(|&n| n >= 2),
        "each worker should take about a third of {CONNECTIONS} connections: {accepted:?}"
    );

    p.signal("TERM");
    for _ in 0..WORKERS {
        p.wait_for("stopped accepting; draining");
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after every worker stopped"
    );
    release.send_replace(true);
    for r in requests {
        assert_eq!(r.await.unwrap(), (200, "released".to_string()));
    }
    for _ in 0..WORKERS {
        p.wait_for("drained");
    }
    // Access lines gather in memory (telemetry::writer): none is lost at exit, and every one comes
    // before the last line.
    p.wait_for("stopped");
    let log = p.log();
    let stopped = log.find("\"message\":\"stopped\"").unwrap();
    let logged = log[..stopped]
        .lines()
        .filter(|l| l.contains("zerodown::access") && l.contains("\"path\":\"/held\""))
        .count();
    assert_eq!(
        logged, CONNECTIONS,
        "access lines before \"stopped\":\n{log}"
    );
    let status = tokio::task::spawn_blocking(move || {
        let mut p = p;
        p.child.wait().unwrap().code()
    })
    .await
    .unwrap();
    assert_eq!(status, Some(0));
}
