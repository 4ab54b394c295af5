//! The live-swap proof for the file source: continuous requests over 32+ keep-alive connections
//! while active and standby swap 20 times. Every request must get 200, and once a response from the
//! new version has been seen, no request started afterwards may get the old version.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::time::Instant;

#[derive(Debug, Clone)]
struct Record {
    start: Instant,
    end: Instant,
    status: u16,
    version: String,
}

fn version_of(body: &str) -> String {
    body.rsplit("(version ")
        .next()
        .and_then(|v| v.split(')').next())
        .unwrap_or("?")
        .to_string()
}

type Log = Arc<Mutex<Vec<Record>>>;

fn load(
    addr: std::net::SocketAddr,
    path: &'static str,
    stop: Arc<AtomicBool>,
    log: Log,
    errors: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut conn = match Conn::open(addr).await {
            Ok(c) => c,
            Err(e) => return errors.lock().unwrap().push(format!("connect: {e}")),
        };
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            match conn.get(path).await {
                Ok((status, body)) => log.lock().unwrap().push(Record {
                    start,
                    end: Instant::now(),
                    status,
                    version: version_of(&body),
                }),
                Err(e) => {
                    errors.lock().unwrap().push(format!("{path}: {e}"));
                    return;
                }
            }
        }
    });
}

/// Checks the epoch rule for one pool: `swaps[k]` is when the file was written for epoch k (whose
/// version is `versions[k]`). A request that starts after the first response of that version and
/// ends before the next write can only have loaded epoch k's snapshot, so it must get that version.
/// (Requests overlapping the next write may legitimately see either.)
fn check_no_old_after_new(
    records: &[Record],
    swaps: &[Instant],
    versions: &[&str],
    pool: &str,
) -> usize {
    let mut checked = 0;
    for k in 1..swaps.len() {
        let next = swaps
            .get(k + 1)
            .copied()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let first_new = records
            .iter()
            .filter(|r| r.start >= swaps[k] && r.version == versions[k])
            .map(|r| r.end)
            .min()
            .unwrap_or_else(|| panic!("{pool}: no response from {} after swap {k}", versions[k]));
        for r in records
            .iter()
            .filter(|r| r.start > first_new && r.end < next)
        {
            assert_eq!(
                r.version, versions[k],
                "{pool}: swap {k}: a request started after the first {} response got {}",
                versions[k], r.version
            );
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_drop_nothing_and_never_go_back() {
    let a1 = backend("v1").await;
    let b1 = backend("v1").await;
    let a2 = backend("v2").await;
    let b2 = backend("v2").await;
    let layout = |active: &'static str| -> Vec<Entry<'static>> {
        let (t1, t2) = if active == "v1" {
            ("active", "standby")
        } else {
            ("standby", "active")
        };
        vec![
            ("v1-a", a1.to_string(), "v1", t1),
            ("v1-b", b1.to_string(), "v1", t1),
            ("v2-a", a2.to_string(), "v2", t2),
            ("v2-b", b2.to_string(), "v2", t2),
        ]
    };
    let d = start(&layout("v1"), |_| {}).await;
    let addr = d.daemon.public_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let active_log: Log = Arc::default();
    let standby_log: Log = Arc::default();
    for _ in 0..32 {
        load(
            addr,
            "/hello",
            stop.clone(),
            active_log.clone(),
            errors.clone(),
        );
    }
    for _ in 0..4 {
        load(
            addr,
            "/standby",
            stop.clone(),
            standby_log.clone(),
            errors.clone(),
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut swaps = vec![Instant::now()];
    let mut active_versions = vec!["v1"];
    let mut standby_versions = vec!["v2"];
    let mut probe = Conn::open(addr).await.unwrap();
    for k in 1..=20 {
        let (active, standby) = if k % 2 == 1 {
            ("v2", "v1")
        } else {
            ("v1", "v2")
        };
        swaps.push(Instant::now());
        active_versions.push(active);
        standby_versions.push(standby);
        write_upstreams(&d.upstreams, &layout(active));
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, body) = probe.get("/hello").await.unwrap();
            assert_eq!(status, 200);
            if version_of(&body) == active {
                break;
            }
            assert!(Instant::now() < deadline, "swap {k} never took effect");
        }
        // Let the load run on the new pools for a moment.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "connection errors: {errors:?}");
    let active = active_log.lock().unwrap().clone();
    let standby = standby_log.lock().unwrap().clone();
    let bad: Vec<_> = active
        .iter()
        .chain(&standby)
        .filter(|r| r.status != 200)
        .collect();
    assert!(bad.is_empty(), "non-200 responses: {bad:?}");
    let checked_a = check_no_old_after_new(&active, &swaps, &active_versions, "active");
    let checked_s = check_no_old_after_new(&standby, &swaps, &standby_versions, "standby");
    assert!(
        active.len() > 1000,
        "too little load to prove anything: {} requests",
        active.len()
    );
    assert!(
        checked_a > 500 && checked_s > 20,
        "too few requests checked: {checked_a}, {checked_s}"
    );
    eprintln!(
        "served {} active + {} standby requests over 20 swaps; {checked_a} + {checked_s} checked against the epoch rule",
        active.len(),
        standby.len()
    );
}
