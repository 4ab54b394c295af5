//! Several services behind one proxy, each watched in the Consul double: routes by prefix and by
//! Host reach their own service's pools; switching one service (a tag flip) moves only that
//! service's routes, under load on all of them, with zero errors; a service Consul does not know
//! is answered 503 and said so in `/status`, while the others serve.

mod common;

use common::consul::source;
use common::load::{check_no_old_after_new, version_of, Load, REQUEST_DEADLINE};
use common::*;
use tokio::time::{timeout, Instant};
use zerodown::config::{Config, PoolName, Route, ServiceConfig, SourceConfig};
use zerodown::daemon::Daemon;
use zerodown_testkit::{CheckStatus, ConsulDouble, ServiceSpec};

const CONNS: usize = 4;
const PER_CONN: usize = 3;

/// A service, its two versions (active first) and the route its active load uses.
struct Svc {
    name: &'static str,
    versions: [&'static str; 2],
    host: Option<&'static str>,
    path: &'static str,
}

const SERVICES: [Svc; 3] = [
    Svc {
        name: "hello-service",
        versions: ["v1", "v2"],
        host: None,
        path: "/hello",
    },
    Svc {
        name: "user-service",
        versions: ["u1", "u2"],
        host: None,
        path: "/users",
    },
    Svc {
        name: "api-gateway",
        versions: ["a1", "a2"],
        host: Some("api.example.com"),
        path: "/hello",
    },
];

fn id(service: &str, version: &str, n: usize) -> String {
    format!("{service}-{version}-{n}")
}

/// Two instances of each version of `s`, the first version active.
async fn register(consul: &ConsulDouble, s: &Svc) {
    for (k, version) in s.versions.iter().enumerate() {
        for n in 0..2 {
            let addr = backend(version).await;
            let tag = if k == 0 { "active" } else { "standby" };
            consul.register(
                ServiceSpec::new(id(s.name, version, n), s.name)
                    .address(addr.ip().to_string())
                    .port(addr.port())
                    .tags([tag])
                    .meta([("version", *version)])
                    .node(format!("node-{}", id(s.name, version, n)), "127.0.0.1")
                    .check(CheckStatus::Passing),
            );
        }
    }
}

/// hello-service is the primary (today's routes); user-service by prefix; api-gateway by Host;
/// `extra` services are added without instances in Consul.
fn config(consul: &ConsulDouble, extra: &[&str]) -> Config {
    let mut cfg = Config::default();
    cfg.log.access_log = false;
    let primary = source(consul);
    cfg.source = SourceConfig::Consul(primary.clone());
    let names = SERVICES[1..]
        .iter()
        .map(|s| s.name)
        .chain(extra.iter().copied());
    for name in names {
        let mut c = primary.clone();
        c.service = name.to_string();
        c.kv_key = format!("zerodown/{name}/active");
        cfg.services.push(ServiceConfig {
            name: name.to_string(),
            source: SourceConfig::Consul(c),
            pools: cfg.pools.clone(),
        });
    }
    let on = |service: &str, host: Option<&str>, prefix: &str, pool| Route {
        service: Some(service.to_string()),
        host: host.map(str::to_string),
        ..Route::new(prefix, pool)
    };
    cfg.routes.extend([
        Route {
            rewrite: Some("/hello".into()),
            ..on("user-service", None, "/users", PoolName::Active)
        },
        Route {
            rewrite: Some("/hello".into()),
            ..on("user-service", None, "/users-standby", PoolName::Standby)
        },
        on(
            "api-gateway",
            Some("api.example.com"),
            "/",
            PoolName::Active,
        ),
    ]);
    for name in extra {
        cfg.routes.push(Route {
            rewrite: Some("/hello".into()),
            ..on(name, None, &format!("/{name}"), PoolName::Active)
        });
    }
    cfg
}

async fn start(cfg: Config) -> Daemon {
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Daemon::start(cfg, public, Some(admin)).unwrap()
}

/// Each service's snapshot generation, in `SERVICES` order.
fn generations(d: &Daemon) -> Vec<u64> {
    SERVICES
        .iter()
        .map(|s| {
            let svc = d.services.get(Some(s.name)).expect("service exists");
            svc.publisher.load().generation
        })
        .collect()
}

/// The version `path` answers on `host`, on a fresh connection.
async fn version_at(d: &Daemon, host: Option<&str>, path: &str) -> (u16, String) {
    let mut c = Conn::open_host(d.public_addr, host).await.unwrap();
    let (status, body) = timeout(REQUEST_DEADLINE, c.get(path))
        .await
        .expect("no answer within the request deadline")
        .unwrap();
    (status, version_of(&body))
}

/// Flips every instance of `s` between active and standby; `to` is the version made active.
fn flip(consul: &ConsulDouble, s: &Svc, to: &str) {
    for version in s.versions {
        let tag = if version == to { "active" } else { "standby" };
        for n in 0..2 {
            assert!(consul.set_tags(&id(s.name, version, n), [tag]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_one_service_moves_only_its_routes_under_load() {
    let consul = ConsulDouble::start().await.unwrap();
    for s in &SERVICES {
        register(&consul, s).await;
    }
    let d = start(config(&consul, &[])).await;
    eventually("every service's first pools", || async {
        generations(&d).iter().all(|g| *g >= 1)
    })
    .await;
    // Each route reaches its own service, by prefix or by Host; a Host no route names falls to
    // the host-less routes.
    assert_eq!(version_at(&d, None, "/hello").await, (200, "v1".into()));
    assert_eq!(version_at(&d, None, "/standby").await, (200, "v2".into()));
    assert_eq!(version_at(&d, None, "/users").await, (200, "u1".into()));
    assert_eq!(
        version_at(&d, None, "/users-standby").await,
        (200, "u2".into())
    );
    let api = Some("API.example.com:8080");
    assert_eq!(version_at(&d, api, "/hello").await, (200, "a1".into()));
    assert_eq!(
        version_at(&d, Some("other.example.com"), "/users").await,
        (200, "u1".into())
    );

    let t0 = Instant::now();
    let loads: Vec<Load> = SERVICES
        .iter()
        .map(|s| match s.host {
            Some(h) => Load::start_host(d.public_addr, h, s.path, CONNS),
            None => Load::start(d.public_addr, s.path, CONNS),
        })
        .collect();
    let standby_load = Load::start(d.public_addr, "/users-standby", CONNS);
    for (l, s) in loads.iter().zip(&SERVICES) {
        l.until_each_conn(s.versions[0], PER_CONN).await;
    }
    standby_load.until_each_conn("u2", PER_CONN).await;

    // Each service switched in turn, twice (there and back); the others' windows stay on their
    // first version, so any answer of theirs from another version fails the window check.
    let mut switches: Vec<Vec<Instant>> = vec![vec![t0]; SERVICES.len()];
    let mut versions: Vec<Vec<&str>> = SERVICES.iter().map(|s| vec![s.versions[0]]).collect();
    let mut standby_versions = vec!["u2"];
    for round in 0..2 {
        for (i, s) in SERVICES.iter().enumerate() {
            let to = s.versions[(round + 1) % 2];
            let before = generations(&d);
            switches[i].push(Instant::now());
            versions[i].push(to);
            if s.name == "user-service" {
                standby_versions.push(s.versions[round % 2]);
            }
            flip(&consul, s, to);
            loads[i].until_each_conn(to, PER_CONN).await;
            if s.name == "user-service" {
                standby_load
                    .until_each_conn(s.versions[round % 2], PER_CONN)
                    .await;
            }
            // No other service's pools were published again.
            let after = generations(&d);
            for (j, other) in SERVICES.iter().enumerate() {
                if j != i {
                    assert_eq!(
                        before[j], after[j],
                        "switching {} published new pools for {}",
                        s.name, other.name
                    );
                }
            }
            assert!(after[i] > before[i], "{} did not swap", s.name);
        }
    }
    let standby_switches: Vec<Instant> = std::iter::once(t0)
        .chain(switches[1][1..].iter().copied())
        .collect();
    let mut summary = Vec::new();
    for ((l, s), (sw, vs)) in loads
        .into_iter()
        .zip(&SERVICES)
        .zip(switches.iter().zip(&versions))
    {
        let records = l.finish().await;
        let w = check_no_old_after_new(&records, sw, vs, s.name);
        w.assert_enough(s.name, CONNS, PER_CONN);
        summary.push(format!("{} {} requests", s.name, records.len()));
    }
    let records = standby_load.finish().await;
    let w = check_no_old_after_new(
        &records,
        &standby_switches,
        &standby_versions,
        "user-service standby",
    );
    w.assert_enough("user-service standby", CONNS, PER_CONN);
    eprintln!(
        "three services, six switches: {}, user-service standby {} requests; zero errors",
        summary.join(", "),
        records.len()
    );
}

#[tokio::test]
async fn a_service_consul_does_not_know_gets_503_and_a_status_note_while_the_others_serve() {
    let consul = ConsulDouble::start().await.unwrap();
    for s in &SERVICES {
        register(&consul, s).await;
    }
    let d = start(config(&consul, &["ghost-service"])).await;
    eventually("every known service's first pools", || async {
        generations(&d).iter().all(|g| *g >= 1)
    })
    .await;
    let ghost = d.services.get(Some("ghost-service")).unwrap();
    eventually("the unknown service noted", || async {
        ghost.status.state().note.is_some()
    })
    .await;
    assert_eq!(
        ghost.status.state().note.unwrap(),
        "Consul lists no instance of service \"ghost-service\": check the service name and that \
         its instances are registered"
    );
    let (status, _) = version_at(&d, None, "/ghost-service").await;
    assert_eq!(status, 503);
    assert_eq!(version_at(&d, None, "/hello").await, (200, "v1".into()));
    assert_eq!(version_at(&d, None, "/users").await, (200, "u1".into()));

    let admin = d.admin_addr.unwrap();
    let (code, body) = get(admin, "/status?service=ghost-service").await;
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["service"], "ghost-service");
    assert_eq!(doc["ready"], false);
    assert!(doc["source_status"]["note"]
        .as_str()
        .is_some_and(|n| n.contains("ghost-service")));
    assert_eq!(
        doc["services"],
        serde_json::json!([
            "hello-service",
            "user-service",
            "api-gateway",
            "ghost-service"
        ])
    );
    // The primary's document is unchanged by the others.
    let (_, body) = get(admin, "/status").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (doc["service"].as_str(), doc["ready"].as_bool()),
        (Some("hello-service"), Some(true))
    );
    // Readiness covers every service and names the one that cannot be served.
    let (code, body) = get(admin, "/ready").await;
    assert_eq!(code, 503);
    assert!(
        body.starts_with("service \"ghost-service\": not ready"),
        "{body}"
    );
    assert_eq!(get(admin, "/ready?service=user-service").await.0, 200);
    let (code, body) = get(admin, "/status?service=nope").await;
    assert_eq!(code, 404);
    assert!(body.contains("no service named \"nope\""), "{body}");
    // Every service's series carry its name.
    let (_, metrics) = get(admin, "/metrics").await;
    for s in [
        "hello-service",
        "user-service",
        "api-gateway",
        "ghost-service",
    ] {
        let line = format!("zerodown_upstream_timeouts_total{{service=\"{s}\",pool=\"active\"}} 0");
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    let pool = "zerodown_pool_instances{service=\"user-service\",pool=\"active\"} 2";
    assert!(metrics.contains(pool), "{metrics}");
}

/// A reload adds a service (its routes answer once its pools load), keeps an unchanged one on
/// its running source (no new publish), and removes one (its routes go with it).
#[tokio::test]
async fn a_reload_adds_and_removes_services_and_leaves_the_others_running() {
    let consul = ConsulDouble::start().await.unwrap();
    for s in &SERVICES {
        register(&consul, s).await;
    }
    let full = config(&consul, &[]);
    let mut without_api = full.clone();
    without_api.services.retain(|s| s.name != "api-gateway");
    without_api
        .routes
        .retain(|r| r.service.as_deref() != Some("api-gateway"));
    let d = start(without_api.clone()).await;
    let users = d.services.get(Some("user-service")).unwrap();
    eventually("user-service loaded", || async {
        users.publisher.load().generation >= 1
    })
    .await;
    let users_generation = users.publisher.load().generation;
    let api = Some("api.example.com");
    // No route names the host yet: the host-less routes answer (the primary).
    assert_eq!(version_at(&d, api, "/hello").await, (200, "v1".into()));

    d.reload(full).unwrap();
    eventually("api-gateway serves after the reload", || async {
        version_at(&d, api, "/hello").await == (200, "a1".into())
    })
    .await;
    let same = d.services.get(Some("user-service")).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&users, &same),
        "an unchanged service keeps its pools"
    );
    assert_eq!(same.publisher.load().generation, users_generation);
    assert_eq!(
        d.services.names(),
        ["hello-service", "user-service", "api-gateway"]
    );

    d.reload(without_api).unwrap();
    assert!(d.services.get(Some("api-gateway")).is_none());
    let metrics = d.metrics.render();
    let gone = "zerodown_pool_instances{service=\"api-gateway\",pool=\"active\"} 0";
    assert!(
        metrics.contains(gone),
        "a removed service's pools still report: {metrics}"
    );
    assert_eq!(version_at(&d, api, "/hello").await, (200, "v1".into()));
    assert_eq!(version_at(&d, None, "/users").await, (200, "u1".into()));
}
