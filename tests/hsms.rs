//! The HSMS front-end end to end: an equipment (tests/common/hsms.rs) talks to zerodown's HSMS
//! listener, zerodown to demo HSMS hosts of two versions, switched through the upstreams file.

mod common;

use std::time::Duration;

use common::hsms::{two_versions, Equipment, Rig};
use common::*;
use zerodown::hsms::codec::{self, SType};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn equipment_selects_and_reaches_the_active_version_then_the_new_one() {
    let mut rig = Rig::start(two_versions(Duration::ZERO).await, |_| {}).await;
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v1"));
    // zerodown answers Linktest itself.
    let sys = eq.system();
    eq.send(&codec::linktest_req(sys)).await;
    assert!(eq.wait_for(sys, SType::LinktestRsp, WAIT).await.is_some());

    rig.flip();
    let end = tokio::time::Instant::now() + DEADLINE;
    let mut seen_v2 = false;
    while tokio::time::Instant::now() < end {
        let v = eq
            .s1f1(WAIT)
            .await
            .expect("every S1F1 gets a reply across the switch");
        if v == "v2" {
            seen_v2 = true;
        } else {
            assert!(
                !seen_v2,
                "v1 answered after v2 did: versions mixed on one session"
            );
        }
        if seen_v2 {
            break;
        }
    }
    assert!(seen_v2, "the session never moved to v2");
    // After the switch only v2 answers.
    for _ in 0..20 {
        assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v2"));
    }
    assert!(
        eq.unsolicited.is_empty(),
        "unexpected messages: {:?}",
        eq.unsolicited
    );
    let sessions = rig.daemon.hsms.as_ref().unwrap().sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].switches, 1);
    assert_eq!(sessions[0].backend.as_ref().unwrap().version, "v2");
    // `/status` shows the same, through the typed document the operator commands read.
    let (code, body) = get(rig.daemon.admin_addr.unwrap(), "/status").await;
    assert_eq!(code, 200);
    let doc: zerodown::admin::status::StatusDoc = serde_json::from_str(&body).unwrap();
    let h = doc.hsms.expect("hsms in /status");
    assert_eq!(h.target_version.as_deref(), Some("v2"));
    assert_eq!(h.sessions.len(), 1);
    assert_eq!(h.sessions[0].state, "selected");
    assert_eq!(h.sessions[0].last_switch.as_ref().unwrap().outcome, "done");
}

#[tokio::test]
async fn data_before_select_is_rejected_and_a_silent_connection_is_closed_at_t7() {
    let rig = Rig::start(two_versions(Duration::ZERO).await, |c| {
        c.hsms.as_mut().unwrap().t7 = Duration::from_millis(300);
    })
    .await;
    let mut eq = Equipment::connect(rig.hsms).await;
    let sys = eq.system();
    eq.send(&common::hsms::s1f1(sys)).await;
    let r = eq
        .wait_for(sys, SType::RejectReq, WAIT)
        .await
        .expect("Reject.req for data before Select");
    assert_eq!(r.header.status(), 4, "reason 4: entity not selected");
    // No Select within T7: zerodown closes the connection.
    assert!(
        eq.recv(WAIT).await.is_none(),
        "connection should close at T7"
    );
}

#[tokio::test]
async fn a_length_over_the_maximum_closes_the_connection() {
    let rig = Rig::start(two_versions(Duration::ZERO).await, |c| {
        c.hsms.as_mut().unwrap().max_message_bytes = 1000;
    })
    .await;
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    eq.send_raw(&2000u32.to_be_bytes()).await;
    assert!(eq.recv(WAIT).await.is_none(), "connection should close");
    let m = rig.daemon.metrics.render();
    assert!(
        m.contains("zerodown_hsms_events_total{kind=\"bad_frame\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_switch_waits_for_a_slow_transaction_on_the_old_version() {
    let mut rig = Rig::start(two_versions(Duration::from_millis(800)).await, |_| {}).await;
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    // Wait for the backend, then leave one slow transaction open on v1 and switch under it.
    eventually("session on v1", || async {
        rig.daemon.hsms.as_ref().unwrap().sessions()[0]
            .backend
            .is_some()
    })
    .await;
    let slow = eq.system();
    eq.send(&common::hsms::s1f1(slow)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.flip();
    // A primary sent during the drain is queued and answered by v2 after the slow one finishes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = eq.system();
    eq.send(&common::hsms::s1f1(queued)).await;
    let first = eq
        .wait_for(slow, SType::Data, WAIT)
        .await
        .expect("slow reply");
    assert_eq!(
        zerodown::demo::hsms::s1f2_version(&first.body).as_deref(),
        Some("v1")
    );
    let second = eq
        .wait_for(queued, SType::Data, WAIT)
        .await
        .expect("queued reply");
    assert_eq!(
        zerodown::demo::hsms::s1f2_version(&second.body).as_deref(),
        Some("v2")
    );
    let s = &rig.daemon.hsms.as_ref().unwrap().sessions()[0];
    let took = s.last_switch.as_ref().unwrap().took_ms;
    assert!(
        took >= 500,
        "the switch waited for the slow reply ({took} ms)"
    );
}

#[tokio::test]
async fn a_dead_backend_is_replaced_by_another_instance_of_the_same_version() {
    let mut hosts = Vec::new();
    let mut list = Vec::new();
    for (id, v, tag) in [
        ("v1-a", "v1", "active"),
        ("v1-b", "v1", "active"),
        ("v2-a", "v2", "standby"),
    ] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let host = zerodown::demo::hsms::HsmsHost {
            version: v.into(),
            delay: Duration::ZERO,
        };
        hosts.push((id, tokio::spawn(zerodown::demo::hsms::serve(l, host))));
        list.push((id, backend(v).await, addr, v, tag));
    }
    let rig = common::hsms::Rig::start(list, |_| {}).await;
    let front = std::sync::Arc::clone(rig.daemon.hsms.as_ref().unwrap());
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v1"));
    let first = front.sessions()[0].backend.clone().unwrap().instance;
    // The host the session uses dies (its listener and connections close).
    let (_, task) = hosts.iter().find(|(id, _)| *id == first).unwrap();
    task.abort();
    eventually("session moved to the other v1 instance", || async {
        front.sessions()[0]
            .backend
            .as_ref()
            .is_some_and(|b| b.instance != first && b.version == "v1")
    })
    .await;
    // The equipment saw nothing: still selected, answered by v1.
    for _ in 0..10 {
        assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v1"));
    }
    assert!(
        eq.unsolicited.is_empty(),
        "unexpected: {:?}",
        eq.unsolicited
    );
    let m = rig.daemon.metrics.render();
    assert!(
        m.contains("zerodown_hsms_events_total{kind=\"backend_lost\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn operator_commands_see_and_wait_for_hsms_sessions() {
    use zerodown::ops::{self, Ctx, Targets};
    let rig = Rig::start(two_versions(Duration::ZERO).await, |_| {}).await;
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v1"));
    let t = Targets {
        admin: Some(rig.daemon.admin_addr.unwrap().to_string()),
        proxy: Some(rig.daemon.public_addr.to_string()),
        ..Targets::default()
    };
    let ctx = Ctx::new(rig.cfg.clone(), &t, Duration::from_secs(10)).unwrap();
    let s = ops::switch::switch(&ctx, false, None).await.unwrap();
    assert_eq!((s.from.as_str(), s.to.as_str()), ("v1", "v2"));
    let line = s.hsms.expect("switch reports the HSMS sessions");
    assert!(line.starts_with("1 HSMS session(s) on v2"), "{line}");
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v2"));
    let report = ops::status::report(&ctx).await;
    let text = ops::status::render_with(&report, false);
    assert!(text.contains("new sessions go to v2"), "{text}");
    assert!(text.contains("selected"), "{text}");
    let checks = ops::diagnose::run(&ctx).await;
    let hsms = checks
        .iter()
        .find(|c| c.name == "hsms ports")
        .expect("hsms check");
    assert!(hsms.ok, "{}", hsms.detail);
    assert!(hsms.detail.starts_with("3 HSMS port(s)"), "{}", hsms.detail);
}

#[tokio::test]
async fn an_old_transaction_past_the_drain_bound_rolls_the_session_back_then_it_retries() {
    // v1 holds every reply 1.2 s; the drain bound is 300 ms, so the first switch attempt finds a
    // transaction still open on v1 and rolls back; a later attempt (after the reply) completes.
    let mut rig = Rig::start(two_versions(Duration::from_millis(1200)).await, |c| {
        let h = c.hsms.as_mut().unwrap();
        h.t3 = Duration::from_secs(4);
        h.drain_bound = Duration::from_millis(300);
    })
    .await;
    let front = std::sync::Arc::clone(rig.daemon.hsms.as_ref().unwrap());
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    eventually("session on v1", || async {
        front.sessions()[0].backend.is_some()
    })
    .await;
    let slow = eq.system();
    eq.send(&common::hsms::s1f1(slow)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    rig.flip();
    eventually("the first attempt rolled back", || async {
        front.sessions()[0].rollbacks >= 1
    })
    .await;
    let s = front.sessions()[0].clone();
    assert_eq!(
        s.backend.as_ref().unwrap().version,
        "v1",
        "still on v1 after the rollback"
    );
    assert!(
        s.last_switch
            .as_ref()
            .unwrap()
            .outcome
            .contains("DrainTimeout"),
        "{:?}",
        s.last_switch
    );
    // The slow transaction is answered by v1, where it was sent.
    let r = eq
        .wait_for(slow, SType::Data, WAIT)
        .await
        .expect("slow reply");
    assert_eq!(
        zerodown::demo::hsms::s1f2_version(&r.body).as_deref(),
        Some("v1")
    );
    eventually("a later attempt moved the session to v2", || async {
        front.sessions()[0]
            .backend
            .as_ref()
            .is_some_and(|b| b.version == "v2")
    })
    .await;
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v2"));
    assert!(
        eq.unsolicited.is_empty(),
        "unexpected: {:?}",
        eq.unsolicited
    );
}

#[tokio::test]
async fn a_message_that_stops_arriving_is_cut_at_t8() {
    let rig = Rig::start(two_versions(Duration::ZERO).await, |c| {
        c.hsms.as_mut().unwrap().t8 = Duration::from_millis(300);
    })
    .await;
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    // The length and half a header, then nothing.
    eq.send_raw(&[0, 0, 0, 10, 0, 0, 0x81]).await;
    let began = tokio::time::Instant::now();
    assert!(
        eq.recv(WAIT).await.is_none(),
        "connection should close at T8"
    );
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    let m = rig.daemon.metrics.render();
    assert!(
        m.contains("zerodown_hsms_events_total{kind=\"t8_expired\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn sessions_beyond_the_cap_are_closed_and_the_others_keep_working() {
    let rig = Rig::start(two_versions(Duration::ZERO).await, |c| {
        c.hsms.as_mut().unwrap().max_sessions = 2;
    })
    .await;
    let mut a = Equipment::connect(rig.hsms).await;
    let mut b = Equipment::connect(rig.hsms).await;
    assert_eq!(a.select().await, codec::SELECT_OK);
    assert_eq!(b.select().await, codec::SELECT_OK);
    let mut c = Equipment::connect(rig.hsms).await;
    assert!(
        c.recv(WAIT).await.is_none(),
        "a third session is closed at once"
    );
    assert_eq!(a.s1f1(WAIT).await.as_deref(), Some("v1"));
    assert_eq!(b.s1f1(WAIT).await.as_deref(), Some("v1"));
    let m = rig.daemon.metrics.render();
    assert!(m.contains("zerodown_hsms_sessions_refused_total 1"), "{m}");
}

#[tokio::test]
async fn tcp_mode_relays_and_closes_old_version_connections_after_the_drain() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut rig = Rig::start(two_versions(Duration::ZERO).await, |c| {
        let h = c.hsms.as_mut().unwrap();
        h.mode = zerodown::config::HsmsMode::Tcp;
        h.tcp_drain = Duration::from_millis(300);
    })
    .await;
    // Plain bytes through: an HSMS Select.req to the v1 host, relayed untouched.
    let mut s = tokio::net::TcpStream::connect(rig.hsms).await.unwrap();
    let mut b = bytes::BytesMut::new();
    codec::encode(&codec::select_req(7), &mut b).unwrap();
    s.write_all(&b).await.unwrap();
    let mut got = [0u8; 14];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[9], 2, "Select.rsp from the host");
    rig.flip();
    // After the switch, the old-version connection is closed once tcp_drain has passed.
    let began = tokio::time::Instant::now();
    let mut rest = [0u8; 1];
    let closed = tokio::time::timeout(WAIT, s.read(&mut rest)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(
        began.elapsed() >= Duration::from_millis(250),
        "closed before the drain: {:?}",
        began.elapsed()
    );
    // A new connection goes to v2.
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v2"));
}

#[tokio::test]
async fn hsms_holds_on_its_version_when_the_new_one_has_no_hsms_instance() {
    let (http1, http2) = (backend("v1").await, backend("v2").await);
    let v1_hsms = common::hsms::host("v1", Duration::ZERO).await;
    let list = vec![
        ("v1-a", http1, v1_hsms, "v1", "active"),
        ("v2-a", http2, dead_address(), "v2", "standby"),
    ];
    let rig = Rig::start(list, |_| {}).await;
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v1"));
    // v2 becomes active, and has no HSMS address.
    let text = format!(
        "[[instances]]\nid = \"v1-a\"\naddress = \"{http1}\"\nhsms = \"{v1_hsms}\"\nversion = \"v1\"\ntags = [\"standby\"]\n\n\
         [[instances]]\nid = \"v2-a\"\naddress = \"{http2}\"\nversion = \"v2\"\ntags = [\"active\"]\n"
    );
    let tmp = rig.upstreams.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &rig.upstreams).unwrap();
    let front = std::sync::Arc::clone(rig.daemon.hsms.as_ref().unwrap());
    let http = rig.daemon.public_addr;
    eventually("HTTP on v2", || async {
        get(http, "/hello").await.1.contains("v2")
    })
    .await;
    eventually("the hold is reported", || async {
        front
            .status()
            .hold
            .is_some_and(|h| h.contains("v2 has no HSMS instance"))
    })
    .await;
    assert_eq!(
        eq.s1f1(WAIT).await.as_deref(),
        Some("v1"),
        "HSMS stays on v1"
    );
    assert_eq!(front.sessions()[0].backend.as_ref().unwrap().version, "v1");
}

/// HSMS sessions relay to the primary service for their whole life: a reload that would rename
/// it is refused with the reason, and the running config keeps serving.
#[tokio::test]
async fn a_reload_renaming_the_primary_service_is_refused_while_hsms_relays_to_it() {
    let rig = Rig::start(two_versions(Duration::ZERO).await, |_| {}).await;
    let mut renamed = rig.cfg.clone();
    let mut consul =
        zerodown::config::ConsulSourceConfig::from_env("other-service", &|_| None).unwrap();
    consul.address = zerodown::config::ConsulAddress::parse("127.0.0.1:1", false).unwrap();
    renamed.source = zerodown::config::SourceConfig::Consul(consul);
    let err = rig.daemon.reload(renamed).unwrap_err().to_string();
    assert_eq!(
        err,
        "the primary service changed from \"default\" to \"other-service\" while [hsms] relays \
         to it: restart (or upgrade) zerodown to apply it"
    );
    assert_eq!(rig.daemon.publisher().service(), "default");
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, 0);
}

#[tokio::test]
async fn a_session_whose_hand_over_fails_stays_here_and_the_process_waits_for_it() {
    let rig = Rig::start(two_versions(Duration::ZERO).await, |_| {}).await;
    let mut eq = Equipment::connect(rig.hsms).await;
    assert_eq!(eq.select().await, codec::SELECT_OK);
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v1"));
    // A successor that answered READY, then went away before taking the session.
    let (line, gone) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(gone);
    let daemon = rig.daemon;
    daemon.hand_over_sessions(std::sync::Arc::new(zerodown::upgrade::Successor::new(
        0, true, line,
    )));
    let (hsms, metrics) = (daemon.hsms.clone().unwrap(), daemon.metrics.clone());
    let stopping = tokio::spawn(daemon.shutdown());
    eventually("the session was taken back", || async {
        metrics
            .render()
            .contains("hsms_handovers_total{outcome=\"kept\"} 1")
    })
    .await;
    // Still served, with the same equipment connection, while the process waits for it.
    assert_eq!(eq.s1f1(WAIT).await.as_deref(), Some("v1"));
    assert_eq!(hsms.sessions().len(), 1);
    assert!(
        !stopping.is_finished(),
        "the process stopped while it held a session"
    );
    assert!(eq.unsolicited.is_empty(), "{:?}", eq.unsolicited);
    // Once the equipment leaves, nothing holds the process.
    drop(eq);
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("stopped once the session ended")
        .unwrap();
}
