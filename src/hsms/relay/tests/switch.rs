//! Switching, rollback and backend loss.

use super::*;

#[test]
fn full_switch_with_transactions_open_both_ways() {
    let mut h = H::relaying();
    let e1 = primary(1, true);
    let h1 = primary(50, true);
    h.eq(e1.clone(), 0);
    h.be(OLD, h1.clone(), 0);
    h.r.begin_switch(NEW, h.at(100));
    // Selecting: equipment data still goes to the old backend.
    let e2 = primary(2, true);
    assert_eq!(
        sent_to(&h.eq(e2.clone(), 150), OLD),
        std::slice::from_ref(&e2)
    );
    h.r.on_backend_selected(NEW, h.at(200));
    assert!(matches!(h.r.backend_state(), BackendState::Draining { .. }));
    // Draining: new primaries are queued.
    let e3 = primary(3, true);
    let e4 = primary(4, false);
    assert!(h.eq(e3.clone(), 300).is_empty());
    assert!(h.eq(e4.clone(), 310).is_empty());
    assert_eq!(h.r.queued(), 2);
    // Linktests are still answered locally.
    assert_eq!(to_equipment(&h.eq(codec::linktest_req(77), 320)).len(), 1);
    // Old replies still flow; the host transaction is still open.
    assert_eq!(
        to_equipment(&h.be(OLD, reply_to(&e1), 400)),
        [reply_to(&e1)]
    );
    assert_eq!(
        to_equipment(&h.be(OLD, reply_to(&e2), 410)),
        [reply_to(&e2)]
    );
    assert!(matches!(h.r.backend_state(), BackendState::Draining { .. }));
    // The equipment's reply to the old host closes the last transaction: switch.
    let out = h.eq(reply_to(&h1), 500);
    let old: Vec<_> = sent_to(&out, OLD);
    assert_eq!(old.len(), 2);
    assert_eq!(old[0], reply_to(&h1));
    assert_eq!(old[1].header.stype, SType::SeparateReq);
    let done = out
        .iter()
        .position(|a| matches!(a, Action::SwitchDone { .. }))
        .unwrap();
    assert_eq!(
        out[done],
        Action::SwitchDone {
            from: Some(OLD),
            to: NEW,
            took: Duration::from_millis(400)
        }
    );
    assert!(out[..done].contains(&Action::CloseBackend(OLD)));
    assert_eq!(sent_to(&out[done..], NEW), [e3.clone(), e4]);
    assert_eq!(h.r.current_backend(), Some(NEW));
    // The new backend answers; nothing more to the old one.
    assert_eq!(
        to_equipment(&h.be(NEW, reply_to(&e3), 600)),
        [reply_to(&e3)]
    );
    let e5 = primary(5, true);
    assert_eq!(sent_to(&h.eq(e5, 700), NEW).len(), 1);
    let out = h.be(OLD, primary(51, true), 800);
    assert!(to_equipment(&out).is_empty());
    assert!(has_event(&out, |e| matches!(
        e,
        Event::StrayBackend { id: OLD, .. }
    )));
    assert_one_backend_per_phase(&h.all);
}

#[test]
fn switch_waits_for_a_slow_reply() {
    let mut h = H::relaying();
    let e1 = primary(1, true);
    h.eq(e1.clone(), 0);
    h.switch_to(NEW, 0);
    h.eq(primary(2, true), 100);
    for ms in [1_000, 5_000, 9_999] {
        assert!(h.tick(ms).is_empty(), "still draining at {ms}");
    }
    let out = h.be(OLD, reply_to(&e1), 9_999);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::SwitchDone { to: NEW, .. })));
    assert_eq!(sent_to(&out, NEW).len(), 1);
    assert_one_backend_per_phase(&h.all);
}

#[test]
fn drain_bound_rolls_back_to_the_old_backend() {
    let mut h = H::relaying();
    let e1 = primary(1, true);
    h.eq(e1.clone(), 0);
    h.switch_to(NEW, 0);
    let e2 = primary(2, true);
    h.eq(e2.clone(), 100);
    let held = primary(900, true);
    assert!(
        to_equipment(&h.be(NEW, held, 200)).is_empty(),
        "the new backend is held while draining"
    );
    assert_eq!(h.r.next_deadline(), Some(h.at(10_000)));
    let out = h.tick(10_000);
    assert_eq!(sent_to(&out, NEW)[0].header.stype, SType::SeparateReq);
    assert!(out.contains(&Action::CloseBackend(NEW)));
    assert!(out.contains(&Action::SwitchRolledBack {
        kept: Some(OLD),
        abandoned: NEW,
        reason: RollbackReason::DrainTimeout
    }));
    assert!(has_event(&out, |e| matches!(
        e,
        Event::Dropped {
            system: 900,
            reason: DropReason::RolledBack
        }
    )));
    assert_eq!(sent_to(&out, OLD), std::slice::from_ref(&e2));
    assert_eq!(h.r.current_backend(), Some(OLD));
    // Both replies still arrive.
    assert_eq!(
        to_equipment(&h.be(OLD, reply_to(&e1), 11_000)),
        [reply_to(&e1)]
    );
    assert_eq!(
        to_equipment(&h.be(OLD, reply_to(&e2), 11_000)),
        [reply_to(&e2)]
    );
    assert!(h
        .be(NEW, primary(901, true), 12_000)
        .iter()
        .all(|a| matches!(a, Action::Event(_))));
    assert_one_backend_per_phase(&h.all);
}

#[test]
fn select_failure_or_t6_stays_on_old() {
    let mut h = H::relaying();
    h.r.begin_switch(NEW, h.at(0));
    h.r.on_backend_select_failed(NEW);
    let out = h.take();
    assert_eq!(
        out,
        [
            Action::CloseBackend(NEW),
            Action::SwitchRolledBack {
                kept: Some(OLD),
                abandoned: NEW,
                reason: RollbackReason::SelectFailed
            }
        ]
    );
    assert_eq!(sent_to(&h.eq(primary(1, true), 10), OLD).len(), 1);
    // T6.
    h.r.begin_switch(3, h.at(100));
    assert!(h.tick(5_099).is_empty());
    let out = h.tick(5_100);
    assert!(out.contains(&Action::SwitchRolledBack {
        kept: Some(OLD),
        abandoned: 3,
        reason: RollbackReason::SelectTimeout
    }));
    // A late Select result for the abandoned connection changes nothing.
    h.r.on_backend_selected(3, h.at(5_200));
    assert_eq!(h.take(), [Action::Event(Event::StraySelected { id: 3 })]);
    assert_eq!(h.r.backend_state(), &BackendState::Active(OLD));
    assert_one_backend_per_phase(&h.all);
}

#[test]
fn backend_death_loses_transactions_and_queues_until_a_new_backend() {
    let mut h = H::relaying();
    h.eq(primary(1, true), 0);
    h.be(OLD, primary(60, true), 0);
    h.r.on_backend_closed(OLD, h.at(100));
    let out = h.take();
    assert!(has_event(&out, |e| *e
        == Event::TransactionLost {
            dir: Direction::EquipmentToHost,
            system: 1,
            backend: OLD
        }));
    assert!(has_event(&out, |e| *e
        == Event::TransactionLost {
            dir: Direction::HostToEquipment,
            system: 60,
            backend: OLD
        }));
    assert!(out.contains(&Action::NeedBackend));
    assert!(to_equipment(&out).is_empty(), "no fabricated replies");
    // The equipment's reply to the lost host transaction goes nowhere.
    assert!(sent_to(&h.eq(reply_to(&primary(60, true)), 150), OLD).is_empty());
    // Queued meanwhile, in order; the oldest expires at the drain bound.
    for (k, ms) in [(2u32, 200u64), (3, 5_000), (4, 6_000)] {
        assert!(h.eq(primary(k, true), ms).is_empty());
    }
    let out = h.tick(10_200);
    assert_eq!(
        out,
        [Action::Event(Event::Dropped {
            system: 2,
            reason: DropReason::Expired
        })]
    );
    h.r.begin_switch(NEW, h.at(10_300));
    assert!(
        h.eq(primary(5, true), 10_400).is_empty(),
        "still no backend while selecting"
    );
    h.r.on_backend_selected(NEW, h.at(10_500));
    let out = h.take();
    assert!(out.contains(&Action::SwitchDone {
        from: None,
        to: NEW,
        took: Duration::from_millis(200)
    }));
    let sys: Vec<u32> = sent_to(&out, NEW).iter().map(|m| m.header.system).collect();
    assert_eq!(sys, [3, 4, 5]);
    // Their T3 runs from when the equipment sent them.
    assert_eq!(h.r.next_deadline(), Some(h.at(5_000 + 45_000)));
    assert_one_backend_per_phase(&h.all);
}

#[test]
fn old_backend_primaries_during_drain_are_forwarded_and_waited_for() {
    let mut h = H::relaying();
    let e1 = primary(1, true);
    h.eq(e1.clone(), 0);
    h.switch_to(NEW, 0);
    let hp = primary(70, true);
    assert_eq!(
        to_equipment(&h.be(OLD, hp.clone(), 100)),
        std::slice::from_ref(&hp)
    );
    h.be(OLD, reply_to(&e1), 200);
    assert!(
        matches!(h.r.backend_state(), BackendState::Draining { .. }),
        "waits for the host transaction too"
    );
    let out = h.eq(reply_to(&hp), 300);
    assert_eq!(sent_to(&out, OLD)[0], reply_to(&hp));
    assert!(out.iter().any(|a| matches!(a, Action::SwitchDone { .. })));
    assert_one_backend_per_phase(&h.all);
}

#[test]
fn new_backend_primaries_are_held_until_done() {
    let mut h = H::relaying();
    let e1 = primary(1, true);
    h.eq(e1.clone(), 0);
    h.switch_to(NEW, 0);
    let np = primary(80, true);
    assert!(to_equipment(&h.be(NEW, np.clone(), 100)).is_empty());
    let out = h.be(OLD, reply_to(&e1), 200);
    assert_eq!(to_equipment(&out), [reply_to(&e1), np.clone()]);
    assert_eq!(sent_to(&h.eq(reply_to(&np), 300), NEW), [reply_to(&np)]);
}

#[test]
fn queue_is_flushed_in_order() {
    let mut h = H::relaying();
    let e1 = primary(1, true);
    h.eq(e1.clone(), 0);
    h.switch_to(NEW, 0);
    let sent: Vec<u32> = (100..150).collect();
    for (k, s) in sent.iter().enumerate() {
        h.eq(primary(*s, k % 3 == 0), 10 + k as u64);
    }
    let out = h.be(OLD, reply_to(&e1), 500);
    let got: Vec<u32> = sent_to(&out, NEW).iter().map(|m| m.header.system).collect();
    assert_eq!(got, sent);
    assert_eq!(h.r.open_transactions(), (17, 0));
}

#[test]
fn queue_is_bounded() {
    let mut h = H::relaying();
    h.eq(primary(1, true), 0);
    h.switch_to(NEW, 0);
    let max = RelayConfig::default().max_queued as u32;
    for s in 0..max {
        h.eq(primary(1_000 + s, false), 1);
    }
    let out = h.eq(primary(5, false), 1);
    assert_eq!(
        out,
        [Action::Event(Event::Dropped {
            system: 5,
            reason: DropReason::QueueFull
        })]
    );
}

#[test]
fn old_death_while_draining_completes_and_new_death_rolls_back() {
    let mut h = H::relaying();
    h.eq(primary(1, true), 0);
    h.switch_to(NEW, 0);
    h.eq(primary(2, true), 10);
    h.r.on_backend_closed(OLD, h.at(20));
    let out = h.take();
    assert!(has_event(&out, |e| matches!(
        e,
        Event::TransactionLost { system: 1, .. }
    )));
    assert!(out.contains(&Action::SwitchDone {
        from: Some(OLD),
        to: NEW,
        took: Duration::from_millis(20)
    }));
    assert!(
        sent_to(&out, OLD).is_empty(),
        "no Separate to a dead backend"
    );
    assert_eq!(sent_to(&out, NEW).len(), 1);

    let mut h = H::relaying();
    h.eq(primary(1, true), 0);
    h.switch_to(NEW, 0);
    h.eq(primary(2, true), 10);
    let out = h.be(NEW, codec::separate_req(3), 20);
    assert!(out.contains(&Action::SwitchRolledBack {
        kept: Some(OLD),
        abandoned: NEW,
        reason: RollbackReason::NewBackendClosed
    }));
    assert_eq!(
        sent_to(&out, OLD).len(),
        1,
        "the queue goes back to the old backend"
    );
    assert!(sent_to(&out, NEW).is_empty());
    assert_one_backend_per_phase(&h.all);
}
