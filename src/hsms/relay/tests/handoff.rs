//! Handing a session to the next process: drain, queue, adopt.

use super::*;

fn ready(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::HandOverReady { .. }))
}

#[test]
fn hand_over_waits_for_open_transactions_then_the_next_process_sends_the_queue() {
    let mut h = H::relaying();
    let e1 = primary(1, true);
    let h1 = primary(50, true);
    h.eq(e1.clone(), 0);
    h.be(OLD, h1.clone(), 0);
    assert!(h.r.begin_handover(h.at(100)));
    assert!(!ready(&h.take()));
    // New equipment primaries wait; the old backend's replies and the equipment's still flow.
    let e2 = primary(2, true);
    assert!(sent_to(&h.eq(e2.clone(), 150), OLD).is_empty());
    assert_eq!(
        to_equipment(&h.be(OLD, reply_to(&e1), 200)),
        [reply_to(&e1)]
    );
    assert_eq!(to_equipment(&h.eq(codec::linktest_req(9), 210)).len(), 1);
    let out = h.eq(reply_to(&h1), 300);
    let old = sent_to(&out, OLD);
    assert_eq!(old[0], reply_to(&h1));
    assert_eq!(old[1].header.stype, SType::SeparateReq);
    assert!(out.contains(&Action::CloseBackend(OLD)));
    assert!(out.contains(&Action::HandOverReady {
        took: Duration::from_millis(200)
    }));

    let off = h.r.hand_off(h.at(350));
    assert!(off.selected);
    assert_eq!(off.t7_left, None);
    assert_eq!(off.queue, vec![(e2.clone(), Duration::from_millis(200))]);
    // This relay is over: nothing it gets later goes anywhere.
    h.r.on_equipment(primary(3, true), h.at(360));
    assert!(h.take().is_empty());

    // The next process: selected, nothing sent until its backend is selected, then the queue,
    // with T3 counted from when the equipment sent it (at 150 ms in the old process's time).
    let t = h.at(400);
    let mut r = Relay::adopted(RelayConfig::default(), off, t);
    assert!(r.is_selected());
    assert_eq!(r.queued(), 1);
    r.begin_switch(NEW, t);
    assert!(r.take_actions().is_empty());
    r.on_backend_selected(NEW, t);
    let out = r.take_actions();
    assert_eq!(sent_to(&out, NEW), std::slice::from_ref(&e2));
    let t3_at = t - Duration::from_millis(200) + RelayConfig::default().t3;
    assert_eq!(r.next_deadline(), Some(t3_at));
    r.on_backend(NEW, reply_to(&e2), t);
    assert_eq!(to_equipment(&r.take_actions()), [reply_to(&e2)]);
}

#[test]
fn an_idle_session_is_ready_at_once_and_a_switch_under_way_finishes_first() {
    let mut h = H::relaying();
    assert!(h.r.begin_handover(h.at(0)));
    assert!(ready(&h.take()));

    let mut h = H::relaying();
    h.r.begin_switch(NEW, h.at(0));
    assert!(!h.r.begin_handover(h.at(1)), "not during a switch");
    h.r.on_backend_selected(NEW, h.at(2));
    h.take();
    assert!(h.r.begin_handover(h.at(3)));
    let out = h.take();
    assert!(ready(&out));
    assert_eq!(sent_to(&out, NEW)[0].header.stype, SType::SeparateReq);
}

#[test]
fn a_drain_past_the_bound_keeps_the_session_here_on_the_old_backend() {
    let mut h = H::relaying();
    let e1 = primary(1, true);
    h.eq(e1.clone(), 0);
    assert!(h.r.begin_handover(h.at(0)));
    let e2 = primary(2, true);
    h.eq(e2.clone(), 10);
    let bound = RelayConfig::default().drain_bound.as_millis() as u64;
    let out = h.tick(bound);
    assert!(out.contains(&Action::HandOverAbandoned { kept: OLD }));
    assert_eq!(
        sent_to(&out, OLD),
        std::slice::from_ref(&e2),
        "the queue goes to the old one"
    );
    assert_eq!(h.r.backend_state(), &BackendState::Active(OLD));
    // Both transactions still complete.
    assert_eq!(to_equipment(&h.be(OLD, reply_to(&e1), bound + 1)).len(), 1);
    assert_eq!(to_equipment(&h.be(OLD, reply_to(&e2), bound + 2)).len(), 1);
    assert!(!ready(&h.all));
}

#[test]
fn an_old_backend_lost_mid_hand_over_lets_it_go_on() {
    let mut h = H::relaying();
    h.eq(primary(1, true), 0);
    assert!(h.r.begin_handover(h.at(0)));
    h.r.on_backend_closed(OLD, h.at(5));
    let out = h.take();
    assert!(has_event(&out, |e| matches!(
        e,
        Event::TransactionLost { .. }
    )));
    assert!(ready(&out));
}

#[test]
fn a_session_not_yet_selected_keeps_what_is_left_of_t7() {
    let t0 = Instant::now();
    let cfg = RelayConfig::default();
    let mut r = Relay::new(cfg.clone(), t0);
    assert!(r.begin_handover(t0 + Duration::from_secs(4)));
    let off = r.hand_off(t0 + Duration::from_secs(4));
    assert!(!off.selected);
    assert_eq!(off.t7_left, Some(cfg.t7 - Duration::from_secs(4)));
    let t1 = t0 + Duration::from_secs(100);
    let mut r = Relay::adopted(cfg.clone(), off, t1);
    assert_eq!(
        r.next_deadline(),
        Some(t1 + cfg.t7 - Duration::from_secs(4))
    );
    r.on_tick(t1 + cfg.t7);
    assert!(r.is_closed());
}
