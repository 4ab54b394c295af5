//! Consul as operators run it: an instance put in maintenance mode (`consul maint`) leaves the
//! pool like a failing one, without a failed request, and `zerodown status` says "maintenance".

mod common;

use std::time::Duration;

use common::consul::{register, source};
use common::load::Load;
use common::*;
use zerodown::config::{Config, SourceConfig};
use zerodown::daemon::Daemon;
use zerodown::ops::{self, Ctx, Targets};
use zerodown_testkit::ConsulDouble;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_in_maintenance_leaves_the_pool_without_a_failed_request() {
    let consul = ConsulDouble::start().await.unwrap();
    register(&consul, "v1-a", backend("v1").await, "v1", &["active"]);
    register(&consul, "v1-b", backend("v1").await, "v1", &["active"]);
    register(&consul, "v2-a", backend("v2").await, "v2", &["standby"]);
    let mut cfg = Config::default();
    cfg.log.access_log = false;
    cfg.source = SourceConfig::Consul(source(&consul));
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let d = Daemon::start(cfg.clone(), public, Some(admin)).unwrap();
    let mut rx = d.publisher().subscribe();
    tokio::time::timeout(DEADLINE, rx.wait_for(|g| *g >= 1))
        .await
        .unwrap()
        .unwrap();
    let load = Load::start(d.public_addr, "/hello", 8);
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(consul.set_maintenance("v1-a", Some("disk swap")));
    eventually("v1-a left the active pool", || async {
        let snap = d.publisher().load_full();
        snap.active.members.len() == 1 && snap.active.members[0].instance.id == "v1-b"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = load.finish().await;
    assert!(records.len() > 200, "too little load: {}", records.len());
    assert!(records.iter().all(|r| r.version == "v1"));

    let t = Targets {
        admin: Some(d.admin_addr.unwrap().to_string()),
        proxy: Some(d.public_addr.to_string()),
        ..Targets::default()
    };
    let ctx = Ctx::new(cfg, &t, Duration::from_secs(5)).unwrap();
    let report = ops::status::report(&ctx).await;
    let row = report.instances.iter().find(|r| r.id == "v1-a").unwrap();
    assert_eq!(row.health, "maintenance (disk swap)");
    assert_eq!(row.proxy_pool, None);

    // Out of maintenance: back in the pool.
    assert!(consul.set_maintenance("v1-a", None));
    eventually("v1-a back in the active pool", || async {
        d.publisher().load_full().active.members.len() == 2
    })
    .await;

    // Node maintenance (`_node_maintenance`) takes every instance on the node out the same way.
    let load = Load::start(d.public_addr, "/hello", 8);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(consul.set_node_maintenance("node-v1-b", Some("kernel upgrade")));
    eventually("v1-b left the active pool", || async {
        let snap = d.publisher().load_full();
        snap.active.members.len() == 1 && snap.active.members[0].instance.id == "v1-a"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = load.finish().await;
    assert!(records.len() > 200, "too little load: {}", records.len());
    let report = ops::status::report(&ctx).await;
    let row = report.instances.iter().find(|r| r.id == "v1-b").unwrap();
    assert_eq!(row.health, "maintenance (kernel upgrade)");
    assert_eq!(row.proxy_pool, None);
}
