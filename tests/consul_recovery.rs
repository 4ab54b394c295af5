//! Recovery after Consul trouble: whatever the backoff has grown to, the watch probes
//! `/v1/status/leader` every 0.4-0.8 s and reads again as soon as a leader answers, so a flip made
//! one second after recovery is served within a second. Meanwhile the proxy keeps serving, and the
//! rate it calls a troubled Consul at stays within the documented bound.

mod common;

use std::time::Duration;

use common::consul::{register, start};
use common::*;
use tokio::time::Instant;
use zerodown_testkit::{ConsulDouble, Fault, Times};

/// The README's bound for one proxy calling a Consul that answers errors: probes at most every
/// 0.4 s, plus the backoff's reads (about ten in the first minute).
const MAX_CALLS_PER_SECOND: f64 = 4.0;

async fn rig() -> (ConsulDouble, zerodown::daemon::Daemon) {
    let consul = ConsulDouble::start().await.unwrap();
    register(&consul, "v1-a", backend("v1").await, "v1", &["active"]);
    register(&consul, "v2-a", backend("v2").await, "v2", &["standby"]);
    // The product's default backoff cap (30 s), not the tests' short one.
    let d = start(&consul, |s, _| s.retry_max = Duration::from_secs(30)).await;
    (consul, d)
}

/// Serves /hello continuously during `trouble` and asserts every answer was v1 and 200.
async fn serve_through(d: &zerodown::daemon::Daemon, trouble: Duration) -> usize {
    let end = Instant::now() + trouble;
    let mut conn = Conn::open(d.public_addr).await.unwrap();
    let mut n = 0;
    while Instant::now() < end {
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), conn.get("/hello"))
            .await
            .expect("a request stalled during the Consul trouble")
            .unwrap();
        assert_eq!(
            (status, common::load::version_of(&body).as_str()),
            (200, "v1")
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

/// How long after `recovered` the watch read Consul successfully again.
async fn resumed_after(d: &zerodown::daemon::Daemon, recovered: Instant) -> Duration {
    loop {
        if d.status().state().consecutive_errors == 0 {
            return recovered.elapsed();
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(40),
            "the watch never recovered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts the watch resumed within a second of `recovered`, flips the tags one second after
/// it, and returns how long /hello took to answer v2.
async fn flip_after_recovery(
    consul: &ConsulDouble,
    d: &zerodown::daemon::Daemon,
    recovered: Instant,
) -> Duration {
    let resumed = resumed_after(d, recovered).await;
    assert!(
        resumed < Duration::from_secs(1),
        "the watch resumed {resumed:?} after Consul returned"
    );
    tokio::time::sleep_until(recovered + Duration::from_secs(1)).await;
    consul.set_tags("v1-a", ["standby"]);
    consul.set_tags("v2-a", ["active"]);
    let flipped = Instant::now();
    let mut conn = Conn::open(d.public_addr).await.unwrap();
    loop {
        let (status, body) = conn.get("/hello").await.unwrap();
        assert_eq!(status, 200);
        if common::load::version_of(&body) == "v2" {
            return flipped.elapsed();
        }
        assert!(
            flipped.elapsed() < Duration::from_secs(10),
            "the flip was never served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn after_an_outage_a_flip_is_served_within_a_second_of_consul_returning() {
    let (consul, d) = rig().await;
    consul.outage(true).await.unwrap();
    // 10 s of connection refused: the backoff (250 ms, doubling, 30 s cap) reaches 8-16 s, so
    // without probing the first read after recovery would usually come seconds late.
    let served = serve_through(&d, Duration::from_secs(10)).await;
    assert!(served > 100, "too few requests during the outage: {served}");
    assert!(
        d.status().state().consecutive_errors >= 5,
        "{:?}",
        d.status().state()
    );
    consul.outage(false).await.unwrap();
    let recovered = Instant::now();
    let took = flip_after_recovery(&consul, &d, recovered).await;
    assert!(
        took < Duration::from_secs(1),
        "flip served {took:?} after it was made"
    );
    eprintln!("outage 10 s: flip served {took:?} after it was made, 1 s after recovery");
}

#[tokio::test]
async fn after_a_leader_loss_and_rate_limiting_the_watch_recovers_fast_and_calls_sparingly() {
    for (fault, what) in [
        (Fault::NO_LEADER, "no leader"),
        (Fault::RATE_LIMITED, "429"),
    ] {
        let (consul, d) = rig().await;
        consul.clear_requests();
        // Every call fails, probes included (a leaderless Consul answers the leader probe too).
        consul.inject_on("/v1/", fault, Times::Always);
        let started = Instant::now();
        let served = serve_through(&d, Duration::from_secs(5)).await;
        let calls = consul.requests().len();
        let rate = calls as f64 / started.elapsed().as_secs_f64();
        assert!(served > 50, "{what}: too few requests: {served}");
        assert!(
            rate <= MAX_CALLS_PER_SECOND,
            "{what}: {calls} calls in 5 s ({rate:.1}/s) is above the documented bound"
        );
        consul.clear_faults();
        let recovered = Instant::now();
        let took = flip_after_recovery(&consul, &d, recovered).await;
        assert!(
            took < Duration::from_secs(1),
            "{what}: flip served {took:?} after it was made"
        );
        eprintln!("{what} 5 s: {calls} calls to Consul ({rate:.1}/s); flip served {took:?} after it was made");
    }
}

/// A minute without a leader: the backoff reaches its 30 s cap, the regime a 10-minute outage
/// stays in (nothing in the watch depends on the outage's length past the cap), so this is the
/// long outage, time-compressed to its stationary state. The proxy serves throughout, calls
/// Consul within the documented bound (its leader probes, about 1.7/s, plus the capped reads),
/// and a flip one second after recovery is served within a second.
#[tokio::test]
async fn after_a_minute_without_a_leader_the_rate_stays_bounded_and_a_flip_is_served_fast() {
    let (consul, d) = rig().await;
    consul.clear_requests();
    consul.inject_on("/v1/", Fault::NO_LEADER, Times::Always);
    let started = Instant::now();
    let served = serve_through(&d, Duration::from_secs(60)).await;
    let requests = consul.requests();
    let elapsed = started.elapsed().as_secs_f64();
    let rate = requests.len() as f64 / elapsed;
    let reads = requests
        .iter()
        .filter(|r| r.path.starts_with("/v1/health/service/"))
        .count();
    assert!(
        served > 1000,
        "too few requests during the minute: {served}"
    );
    assert!(
        rate <= MAX_CALLS_PER_SECOND,
        "{} calls in {elapsed:.0} s ({rate:.1}/s) is above the documented bound",
        requests.len()
    );
    // Doubling from 250 ms to the 30 s cap: at most about a dozen reads in the first minute.
    assert!(
        reads <= 15,
        "{reads} health reads in a minute: the backoff does not back off"
    );
    consul.clear_faults();
    let recovered = Instant::now();
    let took = flip_after_recovery(&consul, &d, recovered).await;
    assert!(
        took < Duration::from_secs(1),
        "flip served {took:?} after it was made"
    );
    eprintln!(
        "no leader 60 s: {} calls ({rate:.2}/s, {reads} health reads); flip served {took:?} after it was made",
        requests.len()
    );
}
