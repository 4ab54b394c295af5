//! The live-swap proof for the file source: continuous requests over 32+ keep-alive connections
//! while active and standby swap 20 times. Every request must get 200, and once a response from the
//! new version has been seen, no request started afterwards may get the old version.

mod common;

use std::time::Duration;

use common::load::{check_no_old_after_new, until_version, Load};
use common::*;
use tokio::time::Instant;

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
    let active_load = Load::start(addr, "/hello", 32);
    let standby_load = Load::start(addr, "/standby", 4);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut switches = vec![Instant::now()];
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
        // Let the load run on the new pools for a moment.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let active = active_load.finish().await;
    let standby = standby_load.finish().await;
    let checked_a = check_no_old_after_new(&active, &switches, &active_versions, "active").checked;
    let checked_s =
        check_no_old_after_new(&standby, &switches, &standby_versions, "standby").checked;
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
