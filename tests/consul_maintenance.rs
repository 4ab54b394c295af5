//! Consul as operators run it: an instance put in maintenance mode (`consul maint`) leaves the
//! pool like a failing one, without a failed request, and `zerodown status` says "maintenance".

mod common;

use std::time::Duration;

use common::consul::{register, source, start_config};
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
    let d = start_config(cfg.clone()).await;
    leaves_under_load(&d, "v1-a", "v1-b", || {
        assert!(consul.set_maintenance("v1-a", Some("disk swap")))
    })
    .await;

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
    leaves_under_load(&d, "v1-b", "v1-a", || {
        assert!(consul.set_node_maintenance("node-v1-b", Some("kernel upgrade")))
    })
    .await;
    let report = ops::status::report(&ctx).await;
    let row = report.instances.iter().find(|r| r.id == "v1-b").unwrap();
    assert_eq!(row.health, "maintenance (kernel upgrade)");
    assert_eq!(row.proxy_pool, None);
}

/// Under load on /hello, `change` takes `gone` out of the active pool, leaving `kept`: zero
/// failed requests, every answer v1.
async fn leaves_under_load(d: &Daemon, gone: &str, kept: &str, change: impl FnOnce()) {
    let load = Load::start(d.public_addr, "/hello", 8);
    load.until_each_conn("v1", 15).await;
    change();
    eventually(&format!("{gone} left the active pool"), || async {
        let snap = d.publisher().load_full();
        snap.active.members.len() == 1 && snap.active.members[0].instance.id == kept
    })
    .await;
    load.until_each_conn("v1", 15).await;
    let records = load.finish().await;
    assert!(records.len() > 200, "too little load: {}", records.len());
    assert!(records.iter().all(|r| r.version == "v1"));
}
