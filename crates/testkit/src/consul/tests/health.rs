//! Response shapes, `?passing`, `?tag`, ACLs and the request log.

use serde_json::json;

use super::super::{CheckStatus, ConsulDouble, ServiceSpec, TokenPolicy};
use super::{get, get_with, ids, two_web};

#[tokio::test]
async fn health_shape_follows_consul() {
    let c = ConsulDouble::start().await.expect("start");
    c.register(ServiceSpec::new("bare", "web").node("n1", "10.0.0.5"));
    let nomad = ServiceSpec::new("full", "web")
        .address("10.0.0.6")
        .port(24831)
        .tags(["active", "blue"])
        .meta([("external-source", "nomad")])
        .tagged_address("lan_ipv4", "10.0.0.6", 24831)
        .check(CheckStatus::Passing);
    c.register(nomad.node("n2", "10.0.0.6"));
    let r = get(c.addr(), "/v1/health/service/web").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let bare = &v[0];
    assert_eq!(bare["Node"]["Node"], "n1");
    assert_eq!(bare["Node"]["Address"], "10.0.0.5");
    assert_eq!(bare["Node"]["Datacenter"], "dc1");
    assert_eq!(bare["Service"]["Address"], "");
    assert_eq!(bare["Service"]["Tags"], json!([]));
    assert_eq!(bare["Service"]["Meta"], json!(null));
    assert!(bare["Service"].get("Port").is_none(), "Port omitted when 0");
    assert!(bare["Service"].get("TaggedAddresses").is_none());
    assert!(bare["Service"].get("Kind").is_none());
    assert_eq!(
        bare["Service"]["Weights"],
        json!({"Passing": 1, "Warning": 1})
    );
    let serf = &bare["Checks"][0];
    assert_eq!(
        (serf["CheckID"].as_str(), serf["Status"].as_str()),
        (Some("serfHealth"), Some("passing"))
    );
    assert_eq!(
        (serf["ServiceID"].as_str(), serf["ServiceTags"].clone()),
        (Some(""), json!([]))
    );
    assert_eq!(
        bare["Checks"].as_array().map(Vec::len),
        Some(1),
        "no service checks"
    );
    let full = &v[1];
    assert_eq!(full["Service"]["Port"], 24831);
    assert_eq!(full["Service"]["Meta"], json!({"external-source": "nomad"}));
    let lan = json!({"Address": "10.0.0.6", "Port": 24831});
    assert_eq!(full["Service"]["TaggedAddresses"]["lan_ipv4"], lan);
    let check = &full["Checks"][1];
    assert_eq!(check["CheckID"], "service:full");
    assert_eq!(check["ServiceName"], "web");
    assert_eq!(check["ServiceTags"], json!(["active", "blue"]));
    c.set_lowercase_tagged_addresses(true);
    let r = get(c.addr(), "/v1/health/service/web").await;
    let lan = json!({"address": "10.0.0.6", "port": 24831});
    assert_eq!(r.json()[1]["Service"]["TaggedAddresses"]["lan_ipv4"], lan);
}

#[tokio::test]
async fn catalog_shape_is_flat() {
    let c = two_web().await;
    c.register(ServiceSpec::new("noport", "web"));
    let r = get(c.addr(), "/v1/catalog/service/web").await;
    let v = r.json();
    assert_eq!(v[0]["ServiceID"], "noport");
    assert_eq!(v[0]["ServicePort"], 0);
    assert_eq!(v[0]["ServiceTags"], json!([]));
    assert_eq!(v[0]["ServiceMeta"], json!(null));
    assert!(v[0].get("Checks").is_none());
    assert_eq!(v[1]["ServiceTags"], json!(["active"]));
    assert_eq!(r.index(), c.service_index("web"));
}

#[tokio::test]
async fn passing_drops_entries_with_any_non_passing_check() {
    let c = ConsulDouble::start().await.expect("start");
    let web = |id: &str| ServiceSpec::new(id, "web");
    c.register(web("ok").check(CheckStatus::Passing));
    c.register(
        web("warn")
            .check(CheckStatus::Passing)
            .check(CheckStatus::Warning),
    );
    c.register(web("crit").check(CheckStatus::Critical));
    c.register(web("nocheck"));
    c.register(
        web("sick-node")
            .node("n2", "10.0.0.2")
            .check(CheckStatus::Passing),
    );
    assert!(c.set_node_health("n2", CheckStatus::Critical));
    let all = get(c.addr(), "/v1/health/service/web").await;
    assert_eq!(ids(&all).len(), 5);
    let passing = get(c.addr(), "/v1/health/service/web?passing").await;
    assert_eq!(ids(&passing), ["nocheck", "ok"]);
    assert_eq!(
        passing.index(),
        all.index(),
        "the index tracks unfiltered data"
    );
    assert!(c.set_check("crit", CheckStatus::Passing));
    assert!(c.set_node_health("n2", CheckStatus::Passing));
    let passing = get(c.addr(), "/v1/health/service/web?passing=1").await;
    assert_eq!(
        ids(&passing),
        ["sick-node", "crit", "nocheck", "ok"],
        "n2 sorts first"
    );
    assert!(!c.set_node_health("nope", CheckStatus::Passing));
}

#[tokio::test]
async fn tag_filter_is_and_and_case_insensitive() {
    let c = ConsulDouble::start().await.expect("start");
    c.register(ServiceSpec::new("a", "web").tags(["Active", "blue"]));
    c.register(ServiceSpec::new("b", "web").tags(["active", "green", "active"]));
    let r = get(c.addr(), "/v1/health/service/web?tag=active&tag=BLUE").await;
    assert_eq!(ids(&r), ["a"]);
    let r = get(c.addr(), "/v1/health/service/web?tag=ACTIVE").await;
    assert_eq!(ids(&r), ["a", "b"]);
    let r = get(c.addr(), "/v1/catalog/service/web?tag=active&tag=red").await;
    assert_eq!(r.text(), "[]");
}

#[tokio::test]
async fn acl_tokens() {
    let c = two_web().await;
    c.set_required_token(Some("secret"));
    let reader = TokenPolicy {
        service_read: true,
        ..TokenPolicy::NONE
    };
    c.add_token(
        "no-svc",
        TokenPolicy {
            service_read: false,
            ..TokenPolicy::ALL
        },
    );
    c.add_token("reader", reader);
    let path = "/v1/health/service/web";
    let r = get(c.addr(), path).await;
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    let r = get_with(c.addr(), path, &[("X-Consul-Token", "wrong")]).await;
    assert_eq!(r.status, 403);
    for (hdr, val) in [
        ("X-Consul-Token", "secret"),
        ("Authorization", "Bearer secret"),
    ] {
        let r = get_with(c.addr(), path, &[(hdr, val)]).await;
        assert_eq!((r.status, ids(&r).len()), (200, 2), "{hdr}");
        assert_eq!(r.header("x-consul-results-filtered-by-acls"), None);
    }
    assert_eq!(
        get(c.addr(), &format!("{path}?token=secret")).await.status,
        200
    );
    let r = get_with(c.addr(), path, &[("X-Consul-Token", "no-svc")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    assert!(r.index() >= 1);
    let kv = get_with(c.addr(), "/v1/kv/k", &[("X-Consul-Token", "reader")]).await;
    assert_eq!((kv.status, kv.text().as_str()), (403, "Permission denied"));
    let log = c.requests();
    assert_eq!(log.len(), 7);
    assert_eq!(log[0].token, None);
    assert_eq!(
        log[3].token.as_deref(),
        Some("secret"),
        "Bearer is accepted"
    );
    assert_eq!(log[4].param("token").as_deref(), Some("secret"));
    c.clear_requests();
    assert!(c.requests().is_empty());
    c.set_required_token(None);
    assert_eq!(get(c.addr(), path).await.status, 200);
    assert_eq!(c.health_queries(), 7);
}

#[tokio::test]
async fn cached_reads_say_hit_or_miss_and_refuse_consistent() {
    let c = two_web().await;
    let first = get(c.addr(), "/v1/health/service/web?cached").await;
    assert_eq!(
        (first.header("x-cache"), first.header("age")),
        (Some("MISS"), Some("0"))
    );
    // The agent's cache type always reads stale from the servers.
    assert_eq!(
        first.header("x-consul-effective-consistency"),
        Some("stale")
    );
    let index = first.header("x-consul-index").unwrap().to_string();
    let path = format!("/v1/health/service/web?cached&index={index}&wait=10ms");
    assert_eq!(get(c.addr(), &path).await.header("x-cache"), Some("HIT"));
    assert_eq!(
        get(c.addr(), "/v1/health/service/web")
            .await
            .header("x-cache"),
        None
    );
    let refused = get(c.addr(), "/v1/health/service/web?cached&consistent").await;
    assert_eq!(refused.status, 400);
}
