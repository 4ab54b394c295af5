//! The live-swap proof for the file source: continuous requests over 32 + 8 keep-alive connections
//! while active and standby swap 20 times. Every request must get a 200 within its deadline, no
//! connection may stall, every response must carry a version allowed in its window, and once a
//! response from the new version has been seen, no request started afterwards may get the old one.

mod common;

use common::load::{both, check_no_old_after_new, until_version, Load};
use common::*;
use tokio::time::Instant;

const ACTIVE_CONNS: usize = 32;
const STANDBY_CONNS: usize = 8;
/// Requests each connection finishes on the new version before the next switch.
const PER_CONN: usize = 3;

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
    let t0 = Instant::now();
    let active_load = Load::start(addr, "/hello", ACTIVE_CONNS);
    let standby_load = Load::start(addr, "/standby", STANDBY_CONNS);
    // The steady state, on every connection, before the first switch.
    active_load.until_each_conn("v1", PER_CONN).await;
    standby_load.until_each_conn("v2", PER_CONN).await;

    let mut switches = vec![t0];
    let mut active_versions = vec!["v1"];
    let mut standby_versions = vec!["v2"];
    for k in 1..=20 {
        let (active, standby) = if k % 2 == 1 {
            ("v2", "v1")
        } else {
            ("v1", "v2")
        };
        switches.push(Instant::now());
        active_versions.push(active);
        standby_versions.push(standby);
        write_upstreams(&d.upstreams, &layout(active));
        until_version(addr, "/hello", active).await;
        // Every connection runs on the new pools before the next switch.
        active_load.until_each_conn(active, PER_CONN).await;
        standby_load.until_each_conn(standby, PER_CONN).await;
    }
    let active = active_load.finish().await;
    let standby = standby_load.finish().await;
    let a = check_no_old_after_new(&active, &switches, &active_versions, "active");
    let s = check_no_old_after_new(&standby, &switches, &standby_versions, "standby");
    assert!(
        active.len() > 2000 && standby.len() > 400,
        "too little load to prove anything: {} + {} requests",
        active.len(),
        standby.len()
    );
    a.assert_enough("active", ACTIVE_CONNS, PER_CONN);
    s.assert_enough("standby", STANDBY_CONNS, PER_CONN);
    eprintln!(
        "served {} active + {} standby requests over 20 swaps; {} against the window rule",
        active.len(),
        standby.len(),
        both(&a, &s, "switch")
    );
}
