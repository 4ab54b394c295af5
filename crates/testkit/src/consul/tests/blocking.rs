//! Blocking-query semantics: wake on change, timeout, indexes, 400s.

use std::time::Duration;

use tokio::time::Instant;

use super::super::{random_order, CheckStatus, ConsulDouble, ServiceSpec};
use super::{get, ids, req, two_web};

const PARK: Duration = Duration::from_secs(2);

#[tokio::test]
async fn blocks_until_the_service_changes() {
    let c = two_web().await;
    let first = get(c.addr(), "/v1/health/service/web?passing").await;
    let idx = first.index();
    let addr = c.addr();
    let target = format!("/v1/health/service/web?passing&index={idx}&wait=5s");
    let parked = tokio::spawn(async move { get(addr, &target).await });
    assert!(c.wait_for_parked(1, PARK).await);
    let started = Instant::now();
    assert!(c.set_tags("web-2", ["active"]));
    let r = parked.await.expect("task");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(r.index(), idx + 1, "one in-place write is one bump");
    assert_eq!(
        r.json()[1]["Service"]["Tags"],
        serde_json::json!(["active"])
    );
    assert_eq!(c.parked(), 0);
}

#[tokio::test]
async fn timeout_returns_same_index_and_data() {
    let c = two_web().await;
    let first = get(c.addr(), "/v1/health/service/web").await;
    c.register(ServiceSpec::new("api-1", "api")); // unrelated: must not wake web
    let started = Instant::now();
    let target = format!("/v1/health/service/web?index={}&wait=200ms", first.index());
    let r = get(c.addr(), &target).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(
        took < Duration::from_millis(200 + 13 + 500),
        "jitter ≤ wait/16: {took:?}"
    );
    assert_eq!(r.index(), first.index());
    assert_eq!(r.body, first.body);
}

#[tokio::test]
async fn bad_parameters_are_rejected() {
    let c = two_web().await;
    let cases = [
        ("wait=60", 400, "Invalid wait time"),
        ("wait=abc", 400, "Invalid wait time"),
        ("index=abc", 400, "Invalid index"),
        ("index=-3", 400, "Invalid index"),
        ("passing=maybe", 400, "Invalid value for ?passing"),
        (
            "stale&consistent",
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
        ("dc=dc9", 500, "No path to datacenter"),
    ];
    for (q, status, body) in cases {
        let r = get(c.addr(), &format!("/v1/health/service/web?{q}")).await;
        assert_eq!((r.status, r.text().as_str()), (status, body), "{q}");
        assert!(r
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")));
    }
    let ok = get(
        c.addr(),
        "/v1/health/service/web?passing=true&wait=1m30s&stale",
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-consul-effective-consistency"), Some("stale"));
    let r = req(c.addr(), "POST", "/v1/health/service/web", b"").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn unknown_service_is_empty_with_an_index() {
    let c = ConsulDouble::start().await.expect("start");
    let r = get(c.addr(), "/v1/health/service/ghost").await;
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    assert!(r.index() >= 1);
    assert_eq!(r.header("x-consul-knownleader"), Some("true"));
    assert_eq!(r.header("x-consul-lastcontact"), Some("0"));
    assert_eq!(r.header("x-consul-effective-consistency"), Some("leader"));
}

#[tokio::test]
async fn empty_service_wakes_on_any_extinction_only() {
    let c = two_web().await;
    c.register(ServiceSpec::new("db-1", "db"));
    c.register(ServiceSpec::new("db-2", "db"));
    c.register(ServiceSpec::new("api-1", "api"));
    c.register(ServiceSpec::new("tmp-1", "tmp"));
    c.deregister("tmp-1"); // before any extinction, an empty service tracks every write
    let idx = get(c.addr(), "/v1/health/service/ghost").await.index();
    assert_eq!(idx, c.index());
    // Removing one of two db instances is not an extinction: ghost stays parked.
    c.deregister("db-1");
    let r = get(
        c.addr(),
        &format!("/v1/health/service/ghost?index={idx}&wait=100ms"),
    )
    .await;
    assert_eq!(r.index(), idx);
    let addr = c.addr();
    let target = format!("/v1/health/service/ghost?index={idx}&wait=5s");
    let parked = tokio::spawn(async move { get(addr, &target).await });
    assert!(c.wait_for_parked(1, PARK).await);
    assert!(c.deregister("api-1"));
    let r = parked.await.expect("task");
    assert_eq!(r.index(), c.index());
    assert_eq!(r.text(), "[]", "a wakeup with no change");
    assert!(!c.deregister("api-1"), "unknown id is a no-op");
}

#[tokio::test]
async fn all_instances_disappear_then_reappear() {
    let c = two_web().await;
    let idx = get(c.addr(), "/v1/health/service/web").await.index();
    c.deregister("web-1");
    c.deregister("web-2");
    let gone = get(c.addr(), &format!("/v1/health/service/web?index={idx}")).await;
    assert_eq!(gone.text(), "[]");
    assert_eq!(gone.index(), c.index(), "extinction index");
    c.register(ServiceSpec::new("web-3", "web"));
    let back = get(
        c.addr(),
        &format!("/v1/health/service/web?index={}", gone.index()),
    )
    .await;
    assert_eq!(ids(&back), ["web-3"]);
}

#[tokio::test]
async fn reregister_in_place_is_one_bump_and_keeps_check_status() {
    let c = ConsulDouble::start().await.expect("start");
    let body = br#"{"Name":"web","ID":"w1","Tags":["blue"],"Port":80,"Check":{"CheckID":"c1","TTL":"10s"}}"#;
    assert_eq!(
        req(c.addr(), "PUT", "/v1/agent/service/register", body)
            .await
            .status,
        200
    );
    let r = get(c.addr(), "/v1/health/service/web").await;
    assert_eq!(
        r.json()[0]["Checks"][1]["Status"],
        "critical",
        "default initial status"
    );
    assert!(c.set_check("w1", CheckStatus::Passing));
    let before = (c.index(), c.service_index("web"));
    let body = br#"{"name":"web","id":"w1","tags":["green"],"port":80,"check":{"check_id":"c1","ttl":"10s"}}"#;
    let put = req(
        c.addr(),
        "PUT",
        "/v1/agent/service/register?replace-existing-checks",
        body,
    );
    assert_eq!(put.await.status, 200);
    assert_eq!(
        (c.index(), c.service_index("web")),
        (before.0 + 1, before.0 + 1)
    );
    let r = get(c.addr(), "/v1/health/service/web?passing").await;
    assert_eq!(r.json()[0]["Service"]["Tags"], serde_json::json!(["green"]));
    assert_eq!(
        r.json()[0]["Checks"][1]["ServiceTags"],
        serde_json::json!(["green"])
    );
    // Deregistration through the agent endpoint; unknown IDs are a 200 no-op.
    let dereg = req(c.addr(), "PUT", "/v1/agent/service/deregister/w1", b"").await;
    assert_eq!(dereg.status, 200);
    let again = req(c.addr(), "PUT", "/v1/agent/service/deregister/w1", b"").await;
    assert_eq!(again.status, 200);
    let bad = req(
        c.addr(),
        "PUT",
        "/v1/agent/service/register",
        b"{\"Port\":1}",
    )
    .await;
    assert_eq!(
        (bad.status, bad.text().as_str()),
        (400, "Missing service name")
    );
}

#[tokio::test]
async fn flip_tags_applies_one_instance_at_a_time() {
    let c = ConsulDouble::start().await.expect("start");
    for n in 1..=4 {
        c.register(ServiceSpec::new(format!("w{n}"), "web").tags(["standby"]));
    }
    let order = random_order(c.service_ids("web"), 7);
    assert_eq!(
        order,
        random_order(c.service_ids("web"), 7),
        "seeded order is stable"
    );
    let start = c.index();
    let changes = order.into_iter().map(|id| (id, vec!["active".to_string()]));
    let began = Instant::now();
    assert_eq!(c.flip_tags(changes, Duration::from_millis(20)).await, 4);
    assert!(began.elapsed() >= Duration::from_millis(60));
    assert_eq!(c.index(), start + 4);
    let r = get(c.addr(), "/v1/health/service/web?tag=active").await;
    assert_eq!(ids(&r).len(), 4);
}
