//! Operator commands against the Consul and Nomad doubles and a live proxy: deploy, switch and
//! rollback under continuous load with zero errors, every refusal leaving things unchanged, a
//! second rollback changing nothing, and a switch the proxy does not follow undone (or, through
//! Nomad, described with the command that undoes it).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load::{both, check_no_old_after_new, until_version, Load};
use common::*;
use tokio::time::Instant;
use zerodown::config::{ActiveSelector, Config, ConsulAddress, ConsulSourceConfig, SourceConfig};
use zerodown::daemon::Daemon;
use zerodown::ops::{self, Ctx, OpsError, Targets};
use zerodown_testkit::{
    reference_job, CheckStatus, ConsulDouble, NomadDouble, NomadFault, Times, REFERENCE_SERVICE,
};

struct Fleet {
    consul: Arc<ConsulDouble>,
    nomad: NomadDouble,
    daemon: Daemon,
    cfg: Config,
}

impl Fleet {
    fn ctx(&self, timeout: Duration) -> Ctx {
        let t = Targets {
            admin: Some(self.daemon.admin_addr.unwrap().to_string()),
            proxy: Some(self.daemon.public_addr.to_string()),
            nomad_addr: Some(self.nomad.url()),
            job: None,
        };
        Ctx::new(self.cfg.clone(), &t, timeout).unwrap()
    }
}

async fn consul_config(consul: &ConsulDouble, selector: ActiveSelector) -> Config {
    let mut src = ConsulSourceConfig::from_env(REFERENCE_SERVICE, &|_| None).unwrap();
    src.address = ConsulAddress::parse(&consul.url(), false).unwrap();
    src.wait = Duration::from_secs(2);
    src.min_interval = Duration::from_millis(10);
    src.retry_max = Duration::from_millis(200);
    src.active_selector = selector;
    let mut cfg = Config::default();
    cfg.log.access_log = false;
    cfg.source = SourceConfig::Consul(src);
    cfg
}

async fn daemon(cfg: &Config) -> Daemon {
    common::consul::start_config(cfg.clone()).await
}

/// The reference job (blue v1 active, green v2 standby) rolled out on the doubles, with a demo
/// backend behind each image, and a proxy watching the tags.
async fn nomad_fleet() -> Fleet {
    let consul = Arc::new(ConsulDouble::start().await.unwrap());
    let nomad = NomadDouble::start(Some(Arc::clone(&consul))).await.unwrap();
    let ports = [
        ("hello:v1", backend("v1").await.port()),
        ("hello:v2", backend("v2").await.port()),
        ("hello:v3", backend("v3").await.port()),
    ];
    nomad.set_port_allocator(move |slot| {
        ports
            .iter()
            .find(|(img, _)| *img == slot.image)
            .map_or(9, |(_, p)| *p)
    });
    nomad
        .seed_job(reference_job("hello:v1", "hello:v2", "v1", "v2"))
        .unwrap();
    let cfg = consul_config(&consul, ActiveSelector::Tags).await;
    let daemon = daemon(&cfg).await;
    until_version(daemon.public_addr, "/hello", "v1").await;
    until_version(daemon.public_addr, "/standby", "v2").await;
    Fleet {
        consul,
        nomad,
        daemon,
        cfg,
    }
}

const ACTIVE_CONNS: usize = 16;
const STANDBY_CONNS: usize = 8;
/// Requests each connection finishes on the new version before the next step.
const PER_CONN: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_switch_rollback_under_load_drop_nothing() {
    let f = nomad_fleet().await;
    let ctx = f.ctx(Duration::from_secs(20));
    let addr = f.daemon.public_addr;
    let t0 = Instant::now();
    let active = Load::start(addr, "/hello", ACTIVE_CONNS);
    let standby = Load::start(addr, "/standby", STANDBY_CONNS);
    active.until_each_conn("v1", PER_CONN).await;
    standby.until_each_conn("v2", PER_CONN).await;

    let t_deploy = Instant::now();
    let msg = ops::deploy::deploy(&ctx, "v3", "hello:v3").await.unwrap();
    assert!(msg.contains("deployed v3"), "{msg}");
    assert_eq!(
        ops::status::report(&ctx)
            .await
            .proxy
            .and_then(|s| s.pools.active.version)
            .unwrap_or_default(),
        "v1",
        "a deploy never touches the active group"
    );
    until_version(addr, "/standby", "v3").await;
    standby.until_each_conn("v3", PER_CONN).await;
    active.until_each_conn("v1", PER_CONN).await;

    let t_switch = Instant::now();
    let s = ops::switch::switch(&ctx, false, None).await.unwrap();
    assert_eq!((s.from.as_str(), s.to.as_str()), ("v1", "v3"));
    let job = f.nomad.job(REFERENCE_SERVICE).unwrap();
    assert!(job["TaskGroups"].to_string().contains("hello:v3"));
    active.until_each_conn("v3", PER_CONN).await;
    standby.until_each_conn("v1", PER_CONN).await;

    let t_rollback = Instant::now();
    let r = ops::rollback::rollback(&ctx, false).await.unwrap();
    assert_eq!((r.from.as_str(), r.to.as_str()), ("v3", "v1"));
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    // A retried rollback changes nothing: v3 does not come back.
    let index = f.nomad.job(REFERENCE_SERVICE).unwrap()["JobModifyIndex"].clone();
    let again = ops::rollback::rollback(&ctx, false).await.unwrap_err();
    assert!(
        matches!(again, OpsError::NothingToDo { .. })
            && again.to_string().contains("v1 already serves"),
        "{again}"
    );
    assert_eq!(
        f.nomad.job(REFERENCE_SERVICE).unwrap()["JobModifyIndex"],
        index,
        "a second rollback changed the job"
    );
    active.until_each_conn("v1", PER_CONN).await;
    standby.until_each_conn("v3", PER_CONN).await;

    let records = active.finish().await;
    let standby_records = standby.finish().await;
    let a = check_no_old_after_new(
        &records,
        &[t0, t_switch, t_rollback],
        &["v1", "v3", "v1"],
        "active",
    );
    let s = check_no_old_after_new(
        &standby_records,
        &[t0, t_deploy, t_switch, t_rollback],
        &["v2", "v3", "v1", "v3"],
        "standby",
    );
    assert!(
        records.len() > 500 && standby_records.len() > 250,
        "{} + {} requests",
        records.len(),
        standby_records.len()
    );
    a.assert_enough("active", ACTIVE_CONNS, PER_CONN);
    s.assert_enough("standby", STANDBY_CONNS, PER_CONN);
    eprintln!(
        "deploy, switch, rollback: {} + {} requests, {}",
        records.len(),
        standby_records.len(),
        both(&a, &s, "step")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_retries_a_nomad_enforce_index_conflict() {
    let f = nomad_fleet().await;
    let ctx = f.ctx(Duration::from_secs(20));
    f.nomad.conflict_next_register();
    let s = ops::switch::switch(&ctx, false, None).await.unwrap();
    assert_eq!(s.to, "v2");
    let posts = f
        .nomad
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("/v1/job/{REFERENCE_SERVICE}"))
        .count();
    assert_eq!(
        posts, 2,
        "one conflict, then a re-read and a successful submit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deployment_is_reported_with_its_revert_and_the_active_group_keeps_serving() {
    let f = nomad_fleet().await;
    let ctx = f.ctx(Duration::from_secs(20));
    f.nomad.fail_next_deployment();
    let err = ops::deploy::deploy(&ctx, "v3", "hello:v3")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed") && err.contains("auto-reverted"),
        "{err}"
    );
    assert_eq!(
        get(f.daemon.public_addr, "/hello").await.1,
        "msg-v1 (version v1)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_standby_is_refused_and_nothing_changes() {
    let f = nomad_fleet().await;
    let ctx = f.ctx(Duration::from_secs(5));
    let standby_ids: Vec<String> = f
        .consul
        .service_ids(REFERENCE_SERVICE)
        .into_iter()
        .filter(|id| id.contains("group-green"))
        .collect();
    f.consul.set_check(&standby_ids[0], CheckStatus::Critical);
    let before = f.nomad.job(REFERENCE_SERVICE).unwrap()["JobModifyIndex"].clone();
    let err = ops::switch::switch(&ctx, false, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not ready") && err.contains("pass --force"),
        "{err}"
    );
    assert_eq!(
        f.nomad.job(REFERENCE_SERVICE).unwrap()["JobModifyIndex"],
        before,
        "the job was changed"
    );
    // diagnose names the failing check and how to look at it.
    let checks = ops::diagnose::run(&ctx).await;
    let health = checks.iter().find(|c| c.name == "health checks").unwrap();
    assert!(!health.ok && health.fix.is_some(), "{health:?}");
}

/// Nomad plans the swap as a destructive update of the group serving now (a hand edit of the job
/// or a driver change would): the switch refuses before submitting, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_plan_is_refused_and_nothing_changes() {
    let f = nomad_fleet().await;
    let ctx = f.ctx(Duration::from_secs(5));
    let before = f.nomad.job(REFERENCE_SERVICE).unwrap()["JobModifyIndex"].clone();
    f.nomad
        .inject("/", NomadFault::DestructivePlan("blue"), Times::Next(1));
    let err = ops::switch::switch(&ctx, false, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("blue") && err.contains("destructive"), "{err}");
    assert_eq!(
        f.nomad.job(REFERENCE_SERVICE).unwrap()["JobModifyIndex"],
        before,
        "the job was changed"
    );
    let registers = f
        .nomad
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("/v1/job/{REFERENCE_SERVICE}"))
        .count();
    assert_eq!(registers, 0, "a job was submitted after a destructive plan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_diagnose_on_a_healthy_fleet() {
    let f = nomad_fleet().await;
    let ctx = f.ctx(Duration::from_secs(5));
    let r = ops::status::report(&ctx).await;
    assert!(
        r.proxy_error.is_none() && r.disagreements.is_empty(),
        "{:?}",
        r.disagreements
    );
    assert_eq!(r.instances.len(), 4);
    assert!(r
        .instances
        .iter()
        .all(|i| i.probe.status == Some(200) && i.proxy_pool.is_some()));
    assert_eq!((r.hello.status, r.standby.status), (Some(200), Some(200)));
    assert!(ops::status::render(&r).contains("proxy and source agree"));
    let checks = ops::diagnose::run(&ctx).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(checks.iter().any(|c| c.name == "nomad job"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_switch_is_one_cas_write() {
    let consul = Arc::new(ConsulDouble::start().await.unwrap());
    for (id, v, color) in [("a", "v1", "blue"), ("b", "v2", "green")] {
        common::consul::register(&consul, id, backend(v).await, v, &[color]);
    }
    let key = format!("zerodown/{REFERENCE_SERVICE}/active");
    consul.kv_put(&key, "blue");
    let cfg = consul_config(&consul, ActiveSelector::Kv).await;
    let d = daemon(&cfg).await;
    let t = Targets {
        admin: Some(d.admin_addr.unwrap().to_string()),
        proxy: Some(d.public_addr.to_string()),
        ..Targets::default()
    };
    let ctx = Ctx::new(cfg, &t, Duration::from_secs(10)).unwrap();
    let s = ops::switch::switch(&ctx, false, None).await.unwrap();
    assert_eq!((s.from.as_str(), s.to.as_str()), ("v1", "v2"));
    assert_eq!(consul.kv_get(&key).unwrap().value, b"green".to_vec());
    assert!(s.how.contains("cas="), "{}", s.how);
}

#[tokio::test]
async fn file_switch_refusals_and_a_proxy_that_does_not_converge() {
    let v1 = backend("v1").await;
    // Only an active group: nothing to switch to.
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    let ctx_for = |d: &TestDaemon, admin: std::net::SocketAddr, timeout| {
        let mut cfg = test_config(&d.upstreams);
        cfg.server.admin_listen = admin;
        cfg.server.listen = d.daemon.public_addr;
        Ctx::new(cfg, &Targets::default(), timeout).unwrap()
    };
    let before = std::fs::read_to_string(&d.upstreams).unwrap();
    let err = ops::switch::switch(
        &ctx_for(&d, d.daemon.admin_addr.unwrap(), Duration::from_secs(2)),
        false,
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("standby pool is empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&d.upstreams).unwrap(),
        before,
        "file changed by a refused switch"
    );

    // A standby instance that does not answer is refused.
    let dead = dead_address();
    write_upstreams(
        &d.upstreams,
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("s", dead.to_string(), "v2", "standby"),
        ],
    );
    eventually("standby loaded", || async {
        !d.daemon.publisher().load_full().standby.is_empty()
    })
    .await;
    let err = ops::switch::switch(
        &ctx_for(&d, d.daemon.admin_addr.unwrap(), Duration::from_secs(2)),
        false,
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not answer"), "{err}");

    // The file switch itself, watched through a proxy that never sees it: a clear timeout.
    let v2 = backend("v2").await;
    write_upstreams(
        &d.upstreams,
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("s", v2.to_string(), "v2", "standby"),
        ],
    );
    eventually("standby v2", || async {
        d.daemon.publisher().load_full().standby.version.as_deref() == Some("v2")
    })
    .await;
    let other = start(
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("s", v2.to_string(), "v2", "standby"),
        ],
        |_| {},
    )
    .await;
    let ctx = ctx_for(
        &d,
        other.daemon.admin_addr.unwrap(),
        Duration::from_millis(800),
    );
    let before = std::fs::read_to_string(&d.upstreams).unwrap();
    let err = ops::switch::switch(&ctx, false, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("did not report v2 serving /hello")
            && err.contains("restored to its content before the switch"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&d.upstreams).unwrap(),
        before,
        "the switch left its change behind"
    );
    assert!(
        !ops::record::file_beside(&d.upstreams).exists(),
        "a switch that did not happen was recorded"
    );
    // The proxy that watches the file followed the switch and then the restore: v1 again.
    until_version(d.daemon.public_addr, "/hello", "v1").await;
}

fn file_ctx(d: &TestDaemon, timeout: Duration) -> Ctx {
    let mut cfg = test_config(&d.upstreams);
    cfg.server.admin_listen = d.daemon.admin_addr.unwrap();
    cfg.server.listen = d.daemon.public_addr;
    Ctx::new(cfg, &Targets::default(), timeout).unwrap()
}

/// The same proxy stopped and started again on its upstreams file: no swap history.
async fn restart(d: TestDaemon) -> TestDaemon {
    let TestDaemon {
        daemon,
        upstreams,
        dir,
    } = d;
    daemon.shutdown().await;
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Daemon::start(test_config(&upstreams), public, Some(admin)).unwrap();
    let mut rx = daemon.publisher().subscribe();
    tokio::time::timeout(DEADLINE, rx.wait_for(|g| *g >= 1))
        .await
        .unwrap()
        .unwrap();
    TestDaemon {
        daemon,
        upstreams,
        dir,
    }
}

/// A rollback undoes the last switch once: run again, it changes nothing and says so (exit 3 on
/// the command line) — also after the proxy restarted and forgot its swap history. The hand-kept
/// file keeps its comments through all of it.
#[tokio::test]
async fn rollback_twice_changes_nothing_the_second_time_even_after_a_restart() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let d = start(
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("b", v2.to_string(), "v2", "standby"),
        ],
        |_| {},
    )
    .await;
    let text = std::fs::read_to_string(&d.upstreams).unwrap();
    let hand_kept = format!("# kept by hand: blue is rack 3\n{text}");
    std::fs::write(&d.upstreams, &hand_kept).unwrap();
    let ctx = file_ctx(&d, Duration::from_secs(10));

    let err = ops::rollback::rollback(&ctx, false).await.unwrap_err();
    assert!(
        matches!(err, OpsError::Refused { .. }) && err.to_string().contains("nothing to roll back"),
        "{err}"
    );

    let s = ops::switch::switch(&ctx, false, None).await.unwrap();
    assert_eq!((s.from.as_str(), s.to.as_str()), ("v1", "v2"));
    assert!(std::fs::read_to_string(&d.upstreams)
        .unwrap()
        .starts_with("# kept by hand: blue is rack 3\n"));
    let r = ops::rollback::rollback(&ctx, false).await.unwrap();
    assert_eq!((r.from.as_str(), r.to.as_str()), ("v2", "v1"));
    assert_eq!(
        std::fs::read_to_string(&d.upstreams).unwrap(),
        hand_kept,
        "a switch and its rollback leave the file as it was"
    );

    let err = ops::rollback::rollback(&ctx, false).await.unwrap_err();
    assert!(
        matches!(err, OpsError::NothingToDo { .. }),
        "the second rollback: {err}"
    );
    assert!(
        err.to_string().contains("v1 already serves /hello"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&d.upstreams).unwrap(), hand_kept);
    assert_eq!(
        get(d.daemon.public_addr, "/hello").await.1,
        "msg-v1 (version v1)\n"
    );

    // Switch again, then restart the proxy: its history is gone, the record is not.
    ops::switch::switch(&ctx, false, None).await.unwrap();
    let d = restart(d).await;
    let ctx = file_ctx(&d, Duration::from_secs(10));
    let status = ctx.proxy_status().await.unwrap();
    assert!(
        status.swaps.iter().all(|s| s.active.old_version.is_none()),
        "a restarted proxy has no version change in its history: {:?}",
        status.swaps
    );
    let r = ops::rollback::rollback(&ctx, false).await.unwrap();
    assert_eq!((r.from.as_str(), r.to.as_str()), ("v2", "v1"));
    let err = ops::rollback::rollback(&ctx, false).await.unwrap_err();
    assert!(matches!(err, OpsError::NothingToDo { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&d.upstreams).unwrap(), hand_kept);
}

/// Every instance tagged standby: the proxy holds its last active set. A switch would make two
/// versions active and never complete, so it refuses before writing anything.
#[tokio::test]
async fn a_switch_the_gates_would_not_serve_is_refused_before_anything_is_written() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let d = start(
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("b", v2.to_string(), "v2", "standby"),
        ],
        |_| {},
    )
    .await;
    write_upstreams(
        &d.upstreams,
        &[
            ("a", v1.to_string(), "v1", "standby"),
            ("b", v2.to_string(), "v2", "standby"),
        ],
    );
    eventually("the active pool held", || async {
        d.daemon.publisher().load_full().active.hold.is_some()
    })
    .await;
    let before = std::fs::read_to_string(&d.upstreams).unwrap();
    let err = ops::switch::switch(&file_ctx(&d, Duration::from_secs(2)), false, None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, OpsError::Refused { .. })
            && text.contains("gates hold")
            && text.contains("no instance for it")
            && text.contains("nothing was changed"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&d.upstreams).unwrap(), before);
    assert_eq!(
        get(d.daemon.public_addr, "/hello").await.1,
        "msg-v1 (version v1)\n"
    );
}

/// Through the KV selector, a switch the proxy does not follow is undone with a check-and-set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_switch_the_proxy_does_not_follow_is_undone() {
    let consul = Arc::new(ConsulDouble::start().await.unwrap());
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    common::consul::register(&consul, "a", v1, "v1", &["blue"]);
    common::consul::register(&consul, "b", v2, "v2", &["green"]);
    let key = format!("zerodown/{REFERENCE_SERVICE}/active");
    consul.kv_put(&key, "blue");
    // A proxy that serves the same instances but does not watch this Consul.
    let other = start(
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("b", v2.to_string(), "v2", "standby"),
        ],
        |_| {},
    )
    .await;
    let t = Targets {
        admin: Some(other.daemon.admin_addr.unwrap().to_string()),
        proxy: Some(other.daemon.public_addr.to_string()),
        ..Targets::default()
    };
    let cfg = consul_config(&consul, ActiveSelector::Kv).await;
    let ctx = Ctx::new(cfg, &t, Duration::from_millis(800)).unwrap();
    let err = ops::switch::switch(&ctx, false, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("did not report v2") && err.contains("restored to blue"),
        "{err}"
    );
    assert_eq!(consul.kv_get(&key).unwrap().value, b"blue".to_vec());
}

/// Through Nomad, a switch the proxy does not follow is left in place, and the error names the
/// job version before it and the command that goes back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_switch_the_proxy_does_not_follow_names_the_undo() {
    let f = nomad_fleet().await;
    let job = f.nomad.job(REFERENCE_SERVICE).unwrap();
    let version = job["Version"].as_u64().unwrap();
    let err = ops::switch::switch(&f.ctx(Duration::ZERO), false, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("did not report v2")
            && err.contains("was left")
            && err.contains(&format!("nomad job revert {REFERENCE_SERVICE} {version}")),
        "{err}"
    );
    assert_ne!(
        f.nomad.job(REFERENCE_SERVICE).unwrap()["JobModifyIndex"],
        job["JobModifyIndex"],
        "the switch was submitted"
    );
}

/// Forwards each connection to `upstream`; before forwarding a `PUT` it runs `before_put`, so a
/// concurrent write can land exactly between the command's read and its compare-and-set.
async fn interposer(
    upstream: std::net::SocketAddr,
    before_put: impl Fn() + Send + Sync + 'static,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let before_put = Arc::new(before_put);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = l.accept().await {
            let before_put = Arc::clone(&before_put);
            tokio::spawn(async move {
                let mut first = vec![0u8; 4];
                if client.read_exact(&mut first).await.is_err() {
                    return;
                }
                if &first == b"PUT " {
                    before_put();
                }
                let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                server.write_all(&first).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_switch_refuses_when_the_key_changed_since_it_was_read() {
    let consul = Arc::new(ConsulDouble::start().await.unwrap());
    for (id, v, color) in [("a", "v1", "blue"), ("b", "v2", "green")] {
        common::consul::register(&consul, id, backend(v).await, v, &[color]);
    }
    let key = format!("zerodown/{REFERENCE_SERVICE}/active");
    consul.kv_put(&key, "blue");
    let cfg = consul_config(&consul, ActiveSelector::Kv).await;
    let d = daemon(&cfg).await;
    // The command talks to Consul through the interposer; the proxy talks to Consul directly.
    let (c2, k2) = (Arc::clone(&consul), key.clone());
    let via = interposer(consul.addr(), move || {
        c2.kv_put(&k2, "blue");
    })
    .await;
    let mut ops_cfg = cfg.clone();
    if let SourceConfig::Consul(c) = &mut ops_cfg.source {
        c.address = ConsulAddress::parse(&format!("http://{via}"), false).unwrap();
    }
    let t = Targets {
        admin: Some(d.admin_addr.unwrap().to_string()),
        proxy: Some(d.public_addr.to_string()),
        ..Targets::default()
    };
    let ctx = Ctx::new(ops_cfg, &t, Duration::from_secs(3)).unwrap();
    let err = ops::switch::switch(&ctx, false, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("changed after it was read") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(
        consul.kv_get(&key).unwrap().value,
        b"blue".to_vec(),
        "the key was overwritten"
    );
    assert_eq!(
        get(d.public_addr, "/hello").await.1,
        "msg-v1 (version v1)\n"
    );
}

/// The file source has no health checks: diagnose says so instead of "all passing".
#[tokio::test]
async fn diagnose_on_the_file_source_claims_no_health_checks() {
    let v1 = backend("v1").await;
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    let checks = ops::diagnose::run(&file_ctx(&d, Duration::from_secs(2))).await;
    assert!(
        checks.iter().all(|c| c.name != "health checks"),
        "{checks:?}"
    );
    let file = checks.iter().find(|c| c.name == "upstreams file").unwrap();
    assert!(file.detail.contains("no health checks"), "{file:?}");
    assert!(checks.iter().any(|c| c.name == "instances answer" && c.ok));
}
