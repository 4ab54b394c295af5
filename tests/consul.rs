//! The Consul source against the in-process double: pools from one blocking query, version-safe
//! switches under load (tag flips instance by instance, and the KV selector), and failures that
//! never cost a request.

mod common;

use std::time::Duration;

use common::consul::{register, start, SERVICE};
use common::load::{both, check_no_old_after_new, until_version, Load};
use common::*;
use tokio::time::Instant;
use zerodown::config::ActiveSelector;
use zerodown::daemon::Daemon;
use zerodown_testkit::{random_order, ConsulDouble, Fault, Times};

struct Fleet {
    consul: ConsulDouble,
    /// (id, version)
    ids: Vec<(String, &'static str)>,
}

/// Two v1 instances tagged active (and `blue`), two v2 tagged standby (and `green`).
async fn fleet() -> Fleet {
    let consul = ConsulDouble::start().await.unwrap();
    let mut ids = Vec::new();
    for (id, version, tags) in [
        ("v1-a", "v1", ["active", "blue"]),
        ("v1-b", "v1", ["active", "blue"]),
        ("v2-a", "v2", ["standby", "green"]),
        ("v2-b", "v2", ["standby", "green"]),
    ] {
        let addr = backend(version).await;
        register(&consul, id, addr, version, &tags);
        ids.push((id.to_string(), version));
    }
    Fleet { consul, ids }
}

impl Fleet {
    /// The tag flip Nomad performs: instance by instance, in random order, with small gaps.
    async fn flip(&self, active: &str, seed: u64) {
        let changes: Vec<(String, Vec<String>)> = self
            .ids
            .iter()
            .map(|(id, v)| {
                let color = if *v == "v1" { "blue" } else { "green" };
                let tag = if *v == active { "active" } else { "standby" };
                (id.clone(), vec![tag.to_string(), color.to_string()])
            })
            .collect();
        self.consul
            .flip_tags(random_order(changes, seed), Duration::from_millis(3))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_come_from_one_untagged_passing_query() {
    let f = fleet().await;
    let d = start(&f.consul, |_, _| {}).await;
    assert_eq!(
        get(d.public_addr, "/hello").await.1,
        "msg-v1 (version v1)\n"
    );
    assert_eq!(
        get(d.public_addr, "/standby").await.1,
        "msg-v2 (version v2)\n"
    );
    let health_calls = || {
        f.consul
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/v1/health/service/"))
            .collect::<Vec<_>>()
    };
    // The blocking call follows the first answer; on a loaded machine it can trail the requests.
    eventually("a blocking call", || async {
        health_calls().iter().any(|r| r.index().is_some())
    })
    .await;
    let health = health_calls();
    for r in &health {
        assert_eq!(r.path, format!("/v1/health/service/{SERVICE}"));
        assert!(r.query.split('&').any(|p| p == "passing"), "{}", r.query);
        assert!(
            r.param("tag").is_none(),
            "must not filter by tag: {}",
            r.query
        );
    }
    // The first call does not block; later ones echo the index with a wait in ms.
    assert!(health[0].index().is_none());
    let later = health
        .iter()
        .find(|r| r.index().is_some())
        .expect("no blocking call seen");
    assert!(later.index().unwrap() >= 1);
    assert_eq!(later.param("wait").as_deref(), Some("2000ms"));
}

const ACTIVE_CONNS: usize = 32;
const STANDBY_CONNS: usize = 8;
/// Requests each connection finishes on the new version before the next switch.
const PER_CONN: usize = 3;

/// `zerodown_gate_holds_total{kind="version"}` for `pool`, from the daemon's exposition.
fn version_holds(d: &zerodown::daemon::Daemon, pool: &str) -> u64 {
    let service = d.publisher().service().to_string();
    let want = format!(
        "zerodown_gate_holds_total{{service=\"{service}\",pool=\"{pool}\",kind=\"version\"}} "
    );
    let text = d.metrics.render();
    let line = text
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("no {want:?} in\n{text}"));
    line[want.len()..].trim().parse().unwrap()
}

/// `source.cached`: the watch asks the agent's cache (`?cached`), which answers stale with
/// `X-Cache`; switches are picked up as without it.
#[tokio::test]
async fn cached_watch_reads_the_agent_cache_and_still_switches() {
    let f = fleet().await;
    let d = start(&f.consul, |s, _| s.cached = true).await;
    assert_eq!(
        get(d.public_addr, "/hello").await.1,
        "msg-v1 (version v1)\n"
    );
    f.flip("v2", 1).await;
    until_version(d.public_addr, "/hello", "v2").await;
    let calls: Vec<_> = f
        .consul
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/health/service/"))
        .collect();
    assert!(calls.len() >= 2, "{calls:?}");
    for r in &calls {
        assert!(r.query.split('&').any(|p| p == "cached"), "{}", r.query);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tag_flips_under_load_never_mix_versions() {
    let f = fleet().await;
    let d = start(&f.consul, |_, _| {}).await;
    let addr = d.public_addr;
    let t0 = Instant::now();
    let active_load = Load::start(addr, "/hello", ACTIVE_CONNS);
    let standby_load = Load::start(addr, "/standby", STANDBY_CONNS);
    active_load.until_each_conn("v1", PER_CONN).await;
    standby_load.until_each_conn("v2", PER_CONN).await;
    let mut switches = vec![t0];
    let (mut av, mut sv) = (vec!["v1"], vec!["v2"]);
    for k in 1..=20u64 {
        let (active, standby) = if k % 2 == 1 {
            ("v2", "v1")
        } else {
            ("v1", "v2")
        };
        switches.push(Instant::now());
        av.push(active);
        sv.push(standby);
        f.flip(active, k).await;
        until_version(addr, "/hello", active).await;
        until_version(addr, "/standby", standby).await;
        active_load.until_each_conn(active, PER_CONN).await;
        standby_load.until_each_conn(standby, PER_CONN).await;
    }
    let active = active_load.finish().await;
    let standby = standby_load.finish().await;
    let a = check_no_old_after_new(&active, &switches, &av, "active");
    let s = check_no_old_after_new(&standby, &switches, &sv, "standby");
    a.assert_enough("active", ACTIVE_CONNS, PER_CONN);
    s.assert_enough("standby", STANDBY_CONNS, PER_CONN);
    // Each flip moves the four instances one at a time, 3 ms apart: after any of the first three
    // moves some pool has both versions among its candidates, so a proxy that sees the flip
    // midway must hold that pool (serve one version, the other waiting) rather than mix them.
    // The proxy's blocking query wakes on the first move, so most flips are seen midway (each
    // of 20 was on an idle machine, 28-33 holds in all); half is the floor.
    let holds = (version_holds(&d, "active"), version_holds(&d, "standby"));
    assert!(
        holds.0 + holds.1 >= 10,
        "the single-version gate held a pool in fewer than half of 20 flips: {holds:?}"
    );
    eprintln!(
        "tag flips: {} + {} requests, {}, version holds (active, standby) {holds:?}, zero errors",
        active.len(),
        standby.len(),
        both(&a, &s, "flip")
    );
}

/// When each proxy first answers `version` on `/hello`, from `t0`, polled concurrently.
async fn first_seen(proxies: &[Daemon], version: &'static str, t0: Instant) -> Vec<Duration> {
    let mut set = tokio::task::JoinSet::new();
    for (i, d) in proxies.iter().enumerate() {
        let addr = d.public_addr;
        set.spawn(async move {
            until_version(addr, "/hello", version).await;
            (i, t0.elapsed())
        });
    }
    let mut seen = vec![Duration::ZERO; proxies.len()];
    while let Some(r) = set.join_next().await {
        let (i, at) = r.unwrap();
        seen[i] = at;
    }
    seen
}

/// All proxies hold a blocking query on the one key; the write wakes all of them at once, so the
/// spread is scheduling: at most 85 ms seen with two CPU hogs on a 2-core machine. A proxy that
/// missed the wake-up would stay on the old version until its 2 s wait expired (its query began
/// at the previous switch, a few hundred ms earlier), well past this bound.
const KV_SPREAD_BOUND: Duration = Duration::from_millis(500);
const KV_CONNS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_selector_switches_three_proxies_with_one_write() {
    let f = fleet().await;
    let key = format!("zerodown/{SERVICE}/active");
    f.consul.kv_put(&key, "blue");
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(start(&f.consul, |s, _| s.active_selector = ActiveSelector::Kv).await);
    }
    let t0 = Instant::now();
    let loads: Vec<Load> = proxies
        .iter()
        .map(|d| Load::start(d.public_addr, "/hello", KV_CONNS))
        .collect();
    for l in &loads {
        l.until_each_conn("v1", PER_CONN).await;
    }
    let mut switches = vec![t0];
    let mut versions = vec!["v1"];
    let mut spreads = Vec::new();
    for k in 1..=10 {
        let (group, version) = if k % 2 == 1 {
            ("green", "v2")
        } else {
            ("blue", "v1")
        };
        let cas = f.consul.kv_get(&key).unwrap().modify_index;
        switches.push(Instant::now());
        versions.push(version);
        let t_write = Instant::now();
        assert!(f.consul.kv_cas(&key, group, cas), "cas write refused");
        let seen = first_seen(&proxies, version, t_write).await;
        spreads.push(*seen.iter().max().unwrap() - *seen.iter().min().unwrap());
        for l in &loads {
            l.until_each_conn(version, PER_CONN).await;
        }
    }
    let mut checked = 0;
    for (i, l) in loads.into_iter().enumerate() {
        let records = l.finish().await;
        let w = check_no_old_after_new(&records, &switches, &versions, &format!("proxy {i}"));
        w.assert_enough(&format!("proxy {i}"), KV_CONNS, PER_CONN);
        checked += w.checked;
    }
    assert!(checked > 1000, "too few requests checked: {checked}");
    let worst = *spreads.iter().max().unwrap();
    eprintln!(
        "kv selector, 3 proxies: {checked} checked; first-to-last spread per switch {spreads:?}"
    );
    assert!(
        worst < KV_SPREAD_BOUND,
        "a proxy lagged the others by {worst:?} after one KV write: {spreads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_errors_and_index_reset_cost_nothing_and_a_later_flip_lands() {
    let f = fleet().await;
    let d = start(&f.consul, |_, _| {}).await;
    let addr = d.public_addr;
    let t0 = Instant::now();
    let load = Load::start(addr, "/hello", 16);
    // 500 bursts, 429, a reset connection, broken bodies: one kind at a time (kinds injected
    // together would stack on the same request).
    for fault in [
        Fault::NO_LEADER,
        Fault::RATE_LIMITED,
        Fault::ResetConnection,
        Fault::CloseMidBody,
        Fault::TruncatedJson,
        Fault::InvalidJson,
    ] {
        let before = d.status().state().errors_total;
        f.consul.inject_on("/v1/health/", fault, Times::Next(3));
        f.consul.spurious_wakeup();
        eventually("the fault reached the source", || async {
            d.status().state().errors_total >= before + 3
        })
        .await;
    }
    // Index reset (snapshot restore) in the middle of the load.
    f.consul.clear_faults();
    f.consul.snapshot_restore(3);
    // A full outage: connections refused.
    f.consul.outage(true).await.unwrap();
    eventually("outage noticed", || async {
        d.status()
            .state()
            .last_error
            .is_some_and(|e| e.contains("cannot connect"))
    })
    .await;
    assert_eq!(
        get(addr, "/hello").await.1,
        "msg-v1 (version v1)\n",
        "last good pool keeps serving"
    );
    f.consul.outage(false).await.unwrap();
    // A flip made after the outage is picked up.
    let t_flip = Instant::now();
    f.flip("v2", 7).await;
    until_version(addr, "/hello", "v2").await;
    load.until_each_conn("v2", PER_CONN).await;
    let records = load.finish().await;
    let w = check_no_old_after_new(&records, &[t0, t_flip], &["v1", "v2"], "active");
    assert!(
        records.len() > 500 && w.min_checked() >= 16 * (PER_CONN - 1),
        "{} requests, {} checked after the flip",
        records.len(),
        w.checked
    );
    let st = d.status().state();
    assert!(
        st.consecutive_errors == 0 && st.stale_since_ms.is_none(),
        "{st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_group_vanishing_for_a_moment_keeps_the_last_set() {
    let f = fleet().await;
    let d = start(&f.consul, |_, _| {}).await;
    let t0 = Instant::now();
    let load = Load::start(d.public_addr, "/hello", 8);
    load.until_each_conn("v1", PER_CONN).await;
    let gen = d.publisher().load_full().generation;
    // Both active instances fail their checks: `?passing` drops them.
    f.consul
        .set_check("v1-a", zerodown_testkit::CheckStatus::Critical);
    f.consul
        .set_check("v1-b", zerodown_testkit::CheckStatus::Critical);
    eventually("empty-pool hold published", || async {
        matches!(
            d.publisher().load_full().active.hold,
            Some(zerodown::core::Hold::Empty { .. })
        )
    })
    .await;
    assert!(d.publisher().load_full().generation > gen);
    tokio::time::sleep(Duration::from_millis(50)).await;
    f.consul
        .set_check("v1-a", zerodown_testkit::CheckStatus::Passing);
    f.consul
        .set_check("v1-b", zerodown_testkit::CheckStatus::Passing);
    eventually("hold released", || async {
        d.publisher().load_full().active.hold.is_none()
    })
    .await;
    load.until_each_conn("v1", PER_CONN).await;
    let records = load.finish().await;
    // One window, v1 throughout.
    let w = check_no_old_after_new(&records, &[t0], &["v1"], "active");
    assert_eq!(w.per_window, vec![records.len()]);
}
