//! The watcher's rules against the Consul double: timeouts, index 0, index going backwards, rate
//! limiting under churn, error messages naming the cause.

mod common;

use std::time::Duration;

use common::consul::{register, source, start, SERVICE};
use common::*;
use zerodown::config::ConsulAddress;
use zerodown::core::discovery::consul::watch::Watch;
use zerodown::core::discovery::consul::{ConsulClient, ConsulError};
use zerodown_testkit::{ConsulDouble, Fault, Times};

fn client(consul: &ConsulDouble, token: Option<&str>) -> ConsulClient {
    ConsulClient::new(
        ConsulAddress::parse(&consul.url(), false).unwrap(),
        token.map(str::to_string),
        None,
    )
    .unwrap()
}

fn watch(timeout: Duration) -> Watch {
    Watch::new(
        format!("/v1/health/service/{SERVICE}?passing"),
        format!("service {SERVICE}"),
        Duration::from_secs(1),
        timeout,
        Duration::from_millis(1),
        Duration::from_millis(50),
        false,
    )
}

#[tokio::test]
async fn a_stalled_answer_times_out() {
    let consul = ConsulDouble::start().await.unwrap();
    let c = client(&consul, None);
    let mut w = watch(Duration::from_millis(300));
    consul.inject_on("/v1/health/", Fault::StallAfterHeaders, Times::Next(1));
    match w.poll(&c).await {
        Err(ConsulError::Timeout(d)) => assert_eq!(d, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(w.index, 0);
    let delay = w.failed();
    assert!(delay > Duration::ZERO && delay <= Duration::from_millis(50));
    // The next call works and reads without blocking (no index after an error).
    let (reply, _) = w.poll(&c).await.unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn index_zero_and_backwards_both_restart_from_one() {
    let consul = ConsulDouble::start().await.unwrap();
    // Unrelated writes first, so the service's own index starts well above 2.
    for _ in 0..20 {
        consul.kv_put("unrelated", "x");
    }
    register(
        &consul,
        "a",
        "127.0.0.1:9".parse().unwrap(),
        "v1",
        &["active"],
    );
    let c = client(&consul, None);
    let mut w = watch(Duration::from_secs(5));
    w.poll(&c).await.unwrap();
    let first = w.index;
    assert!(first >= 1);

    consul.inject_on("/v1/health/", Fault::IndexZero, Times::Next(1));
    w.poll(&c).await.unwrap();
    assert_eq!(w.index, 1, "index 0 must become 1, never 0");

    w.poll(&c).await.unwrap();
    let high = w.index;
    consul.snapshot_restore(2);
    w.poll(&c).await.unwrap();
    assert!(high > 2);
    assert_eq!(w.index, 1, "an index going backwards resets");
    w.poll(&c).await.unwrap();
    assert!(
        w.index >= 1 && w.index <= 2,
        "then follows the restored index: {}",
        w.index
    );
    let sent: Vec<Option<u64>> = consul.requests().iter().map(|r| r.index()).collect();
    assert!(
        sent.iter().skip(1).all(|i| i.is_some_and(|i| i >= 1)),
        "{sent:?}"
    );
}

#[tokio::test]
async fn churn_is_rate_limited_by_the_token_bucket() {
    let consul = ConsulDouble::start().await.unwrap();
    let v1 = backend("v1").await;
    register(&consul, "a", v1, "v1", &["active"]);
    let d = start(&consul, |s, _| s.min_interval = Duration::from_millis(100)).await;
    consul.inject_on("/v1/health/", Fault::Churn, Times::Always);
    consul.spurious_wakeup();
    consul.clear_requests();
    let window = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = consul.requests().len();
    let elapsed = window.elapsed();
    // Burst 2, then one per 100 ms: an upper bound that a slow machine can only undercut.
    let bound = 2 + (elapsed.as_millis() / 100) as usize + 1;
    assert!(n <= bound, "{n} requests in {elapsed:?} (bound {bound})");
    assert!(n >= 3, "the watch stopped polling under churn: {n}");
    consul.clear_faults();
    assert_eq!(get(d.public_addr, "/hello").await.0, 200);
}

#[tokio::test]
async fn token_problems_are_named() {
    let consul = ConsulDouble::start().await.unwrap();
    consul.set_required_token(Some("right"));
    let mut w = watch(Duration::from_secs(5));
    let err = w
        .poll(&client(&consul, Some("wrong")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ACL token") && err.contains("CONSUL_HTTP_TOKEN"),
        "{err}"
    );
    let (reply, _) = w.poll(&client(&consul, Some("right"))).await.unwrap();
    assert_eq!(reply.status, 200);
    let sent = consul
        .requests()
        .last()
        .unwrap()
        .headers
        .get("x-consul-token")
        .cloned();
    assert_eq!(sent.unwrap(), "right");
}

#[tokio::test]
async fn refused_connections_name_the_address() {
    let consul = ConsulDouble::start().await.unwrap();
    consul.outage(true).await.unwrap();
    let mut w = watch(Duration::from_secs(5));
    let err = w
        .poll(&client(&consul, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect to Consul at http://127.0.0.1:"),
        "{err}"
    );
    let _ = source(&consul);
}
