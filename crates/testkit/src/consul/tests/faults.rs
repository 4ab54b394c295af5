//! Every fault, observed on the wire.

use std::io::ErrorKind;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::super::{Fault, Times, TRICKLE_CHUNK};
use super::{get, parse, send, two_web, End};

const HEALTH: &str = "/v1/health/service/web";

#[tokio::test]
async fn status_faults_apply_to_the_next_n_matching_requests() {
    let c = two_web().await;
    c.inject_on("/v1/health/", Fault::NO_LEADER, Times::Next(2));
    c.inject_on("/v1/health/", Fault::RATE_LIMITED, Times::Next(1));
    assert_eq!(
        get(c.addr(), "/v1/kv/x").await.status,
        404,
        "prefix does not match"
    );
    let r = get(c.addr(), HEALTH).await;
    assert_eq!((r.status, r.text().as_str()), (500, "No cluster leader"));
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    assert_eq!(r.header("x-consul-index"), None);
    assert_eq!(get(c.addr(), HEALTH).await.status, 500);
    assert_eq!(get(c.addr(), HEALTH).await.status, 200);
    for f in [
        Fault::NO_SERVERS,
        Fault::ACL_NOT_FOUND,
        Fault::PERMISSION_DENIED,
    ] {
        let Fault::Status(code, body) = f.clone() else {
            unreachable!()
        };
        c.inject(f, Times::Always);
        let r = get(c.addr(), HEALTH).await;
        assert_eq!((r.status, r.text()), (code, body.to_string()));
        c.clear_faults();
    }
    assert_eq!(get(c.addr(), HEALTH).await.status, 200);
}

#[tokio::test]
async fn delay_holds_the_answer() {
    let c = two_web().await;
    c.inject(Fault::Delay(Duration::from_millis(150)), Times::Next(1));
    let started = Instant::now();
    assert_eq!(get(c.addr(), HEALTH).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn stall_after_headers_sends_no_body() {
    let c = two_web().await;
    c.inject(Fault::StallAfterHeaders, Times::Next(1));
    let (raw, end) = send(
        c.addr(),
        "GET",
        HEALTH,
        &[],
        b"",
        Duration::from_millis(300),
    )
    .await
    .expect("send");
    let r = parse(&raw, end);
    assert_eq!((r.status, r.end), (200, End::Timeout));
    assert!(r.index() >= 1);
    assert!(r.body.is_empty() && r.content_length().is_some_and(|n| n > 0));
}

#[tokio::test]
async fn trickle_delivers_slowly_but_completely() {
    let c = two_web().await;
    let full = get(c.addr(), HEALTH).await;
    c.inject(Fault::TrickleBody(Duration::from_millis(2)), Times::Next(1));
    let started = Instant::now();
    let r = get(c.addr(), HEALTH).await;
    let chunks = full.body.len().div_ceil(TRICKLE_CHUNK) as u32;
    assert!(started.elapsed() >= Duration::from_millis(2) * chunks);
    assert_eq!(r.body, full.body);
}

#[tokio::test]
async fn close_mid_body_truncates_the_transfer() {
    let c = two_web().await;
    c.inject(Fault::CloseMidBody, Times::Next(1));
    let r = get(c.addr(), HEALTH).await;
    let announced = r.content_length().expect("content-length");
    assert_eq!(r.body.len(), announced / 2);
    assert_ne!(r.end, End::Timeout);
}

#[tokio::test]
async fn truncated_and_invalid_json() {
    let c = two_web().await;
    let full = get(c.addr(), HEALTH).await;
    c.inject(Fault::TruncatedJson, Times::Next(1));
    let r = get(c.addr(), HEALTH).await;
    assert_eq!((r.status, r.body.len()), (200, full.body.len() / 2));
    assert_eq!(r.content_length(), Some(r.body.len()));
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
    c.inject(Fault::InvalidJson, Times::Next(1));
    let r = get(c.addr(), HEALTH).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
}

#[tokio::test]
async fn reset_connection_sends_nothing() {
    let c = two_web().await;
    c.inject(Fault::ResetConnection, Times::Next(1));
    let (raw, end) = send(c.addr(), "GET", HEALTH, &[], b"", Duration::from_secs(2))
        .await
        .expect("send");
    assert!(raw.is_empty());
    assert_eq!(
        end,
        End::Error(ErrorKind::ConnectionReset),
        "an RST, not a FIN"
    );
    assert_eq!(get(c.addr(), HEALTH).await.status, 200);
}

#[tokio::test]
async fn index_zero_once() {
    let c = two_web().await;
    let idx = get(c.addr(), HEALTH).await.index();
    c.inject(Fault::IndexZero, Times::Next(1));
    let r = get(c.addr(), &format!("{HEALTH}?index={idx}&wait=5s")).await;
    assert_eq!(r.index(), 0, "answered at once with index 0");
    assert_eq!(get(c.addr(), HEALTH).await.index(), idx);
}

#[tokio::test]
async fn index_backwards_releases_parked_queries() {
    let c = two_web().await;
    for _ in 0..5 {
        c.set_tags("web-1", ["x"]);
        c.set_tags("web-1", ["active"]);
    }
    let idx = get(c.addr(), HEALTH).await.index();
    let addr = c.addr();
    let parked =
        tokio::spawn(async move { get(addr, &format!("{HEALTH}?index={idx}&wait=5s")).await });
    assert!(c.wait_for_parked(1, Duration::from_secs(2)).await);
    c.inject(Fault::IndexBackwards(3), Times::Next(1));
    let r = parked.await.expect("task");
    assert_eq!(r.index(), 3);
    c.set_tags("web-2", ["active"]);
    assert_eq!(
        get(c.addr(), HEALTH).await.index(),
        4,
        "later writes continue from there"
    );
}

#[tokio::test]
async fn churn_returns_at_once_with_new_index_and_same_data() {
    let c = two_web().await;
    let first = get(c.addr(), HEALTH).await;
    c.inject_on("/v1/health/", Fault::Churn, Times::Always);
    let mut idx = first.index();
    for _ in 0..3 {
        let r = get(c.addr(), &format!("{HEALTH}?index={idx}&wait=5s")).await;
        assert!(r.index() > idx);
        assert_eq!(r.body, first.body);
        idx = r.index();
    }
}

#[tokio::test]
async fn spurious_wakeup_has_identical_data() {
    let c = two_web().await;
    let first = get(c.addr(), HEALTH).await;
    let addr = c.addr();
    let target = format!("{HEALTH}?index={}&wait=5s", first.index());
    let parked = tokio::spawn(async move { get(addr, &target).await });
    assert!(c.wait_for_parked(1, Duration::from_secs(2)).await);
    c.inject(Fault::SpuriousWakeup, Times::Next(1));
    let r = parked.await.expect("task");
    assert!(r.index() > first.index());
    assert_eq!(r.body, first.body);
}

#[tokio::test]
async fn header_variants() {
    let c = two_web().await;
    c.inject(Fault::NoLeaderHeaders, Times::Next(1));
    let r = get(c.addr(), HEALTH).await;
    assert_eq!(
        (
            r.header("x-consul-knownleader"),
            r.header("x-consul-lastcontact")
        ),
        (None, None)
    );
    assert_eq!(r.header("x-consul-query-backend"), Some("streaming"));
    c.inject(Fault::KnownLeaderFalse, Times::Next(1));
    c.inject(Fault::LastContact(120_000), Times::Next(1));
    c.inject(Fault::StaleConsistency, Times::Next(1));
    let r = get(c.addr(), HEALTH).await;
    assert_eq!(r.header("x-consul-knownleader"), Some("false"));
    assert_eq!(r.header("x-consul-lastcontact"), Some("120000"));
    assert_eq!(r.header("x-consul-effective-consistency"), Some("stale"));
    let r = get(c.addr(), HEALTH).await;
    assert_eq!(r.header("x-consul-knownleader"), Some("true"));
}

#[tokio::test]
async fn outage_refuses_connections_then_recovers_on_the_same_port() {
    let c = two_web().await;
    let idx = get(c.addr(), HEALTH).await.index();
    let addr = c.addr();
    let parked =
        tokio::spawn(async move { get(addr, &format!("{HEALTH}?index={idx}&wait=5s")).await });
    assert!(c.wait_for_parked(1, Duration::from_secs(2)).await);
    c.outage(true).await.expect("outage on");
    let r = parked.await.expect("task");
    assert_eq!((r.status, r.body.len()), (0, 0), "parked query cut off");
    let err = TcpStream::connect(addr).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    c.outage(false).await.expect("outage off");
    assert_eq!(c.addr(), addr);
    assert_eq!(get(c.addr(), HEALTH).await.status, 200);
}

#[tokio::test]
async fn a_client_that_gives_up_is_unparked() {
    let c = two_web().await;
    let idx = get(c.addr(), HEALTH).await.index();
    let target = format!("{HEALTH}?index={idx}&wait=5s");
    let quick = Duration::from_millis(100);
    let (_, end) = send(c.addr(), "GET", &target, &[], b"", quick)
        .await
        .expect("send");
    assert_eq!(end, End::Timeout);
    let deadline = Instant::now() + Duration::from_secs(2);
    while c.parked() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(c.parked(), 0);
}
