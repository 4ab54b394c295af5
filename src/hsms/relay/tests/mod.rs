use super::*;
use bytes::Bytes;

mod handoff;
mod sim;
mod switch;

const OLD: BackendId = 1;
const NEW: BackendId = 2;

struct H {
    r: Relay,
    t0: Instant,
    /// Every action ever emitted, for whole-run invariants.
    all: Vec<Action>,
}

impl H {
    fn new() -> Self {
        let t0 = Instant::now();
        H {
            r: Relay::new(RelayConfig::default(), t0),
            t0,
            all: Vec::new(),
        }
    }

    /// Selected equipment relaying to OLD.
    fn relaying() -> Self {
        let mut h = H::new();
        h.eq(codec::select_req(100), 0);
        h.r.begin_switch(OLD, h.at(0));
        h.r.on_backend_selected(OLD, h.at(0));
        h.take();
        h
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn take(&mut self) -> Vec<Action> {
        let a = self.r.take_actions();
        self.all.extend(a.iter().cloned());
        a
    }

    fn eq(&mut self, m: Message, ms: u64) -> Vec<Action> {
        self.r.on_equipment(m, self.at(ms));
        self.take()
    }

    fn be(&mut self, id: BackendId, m: Message, ms: u64) -> Vec<Action> {
        self.r.on_backend(id, m, self.at(ms));
        self.take()
    }

    fn tick(&mut self, ms: u64) -> Vec<Action> {
        self.r.on_tick(self.at(ms));
        self.take()
    }

    fn switch_to(&mut self, id: BackendId, ms: u64) -> Vec<Action> {
        self.r.begin_switch(id, self.at(ms));
        self.r.on_backend_selected(id, self.at(ms));
        self.take()
    }
}

fn primary(system: u32, w: bool) -> Message {
    Message::data(1, 6, 11, w, system, Bytes::from_static(b"\x01\x00"))
}

fn reply_to(m: &Message) -> Message {
    Message::data(
        m.header.session_id,
        m.header.stream,
        m.header.function + 1,
        false,
        m.header.system,
        Bytes::new(),
    )
}

fn sent_to(actions: &[Action], id: BackendId) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendBackend(i, m) if *i == id => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn to_equipment(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendEquipment(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn has_event(actions: &[Action], pred: impl Fn(&Event) -> bool) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Event(e) if pred(e)))
}

fn reject_of(m: &Message) -> (u8, u8, u32) {
    assert_eq!(m.header.stype, SType::RejectReq);
    (m.header.byte2(), m.header.status(), m.header.system)
}

/// Between two switch outcomes at most one backend receives data, and a switched-away or abandoned
/// backend receives nothing afterwards.
fn assert_one_backend_per_phase(actions: &[Action]) {
    let mut receiver: Option<BackendId> = None;
    let mut retired: Vec<BackendId> = Vec::new();
    for (k, a) in actions.iter().enumerate() {
        match a {
            Action::SendBackend(id, m) => {
                assert!(
                    !retired.contains(id),
                    "action {k}: {m:?} sent to retired backend {id}"
                );
                if m.is_data() {
                    match receiver {
                        None => receiver = Some(*id),
                        Some(r) => {
                            assert_eq!(r, *id, "action {k}: two backends got data in one phase")
                        }
                    }
                }
            }
            Action::SwitchDone { from, .. } => {
                retired.extend(*from);
                receiver = None;
            }
            Action::SwitchRolledBack { abandoned, .. } => {
                retired.push(*abandoned);
                receiver = None;
            }
            _ => {}
        }
    }
}

#[test]
fn select_linktest_deselect() {
    let mut h = H::new();
    let out = h.eq(codec::linktest_req(1), 0);
    assert_eq!(
        to_equipment(&out),
        [codec::linktest_rsp(&codec::linktest_req(1).header)]
    );
    let out = h.eq(codec::deselect_req(2), 0);
    assert_eq!(
        to_equipment(&out)[0].header.status(),
        codec::DESELECT_NOT_ESTABLISHED
    );
    let out = h.eq(codec::select_req(3), 0);
    let rsp = &to_equipment(&out)[0];
    assert_eq!(
        (rsp.header.stype, rsp.header.status(), rsp.header.system),
        (SType::SelectRsp, 0, 3)
    );
    assert!(h.r.is_selected());
    let out = h.eq(codec::select_req(4), 0);
    assert_eq!(
        to_equipment(&out)[0].header.status(),
        codec::SELECT_ALREADY_ACTIVE
    );
    let out = h.eq(codec::deselect_req(5), 0);
    let rsp = &to_equipment(&out)[0];
    assert_eq!(
        (rsp.header.stype, rsp.header.status()),
        (SType::DeselectRsp, codec::DESELECT_OK)
    );
    assert!(!h.r.is_selected());
    let out = h.eq(primary(6, true), 0);
    assert_eq!(reject_of(&to_equipment(&out)[0]), (0, 4, 6));
    // Deselect restarts T7.
    assert!(h.tick(9_999).is_empty());
    assert!(h.tick(10_000).contains(&Action::CloseEquipment {
        reason: CloseReason::NotSelected
    }));
}

#[test]
fn deselect_is_refused_while_a_transaction_is_open() {
    let mut h = H::relaying();
    h.eq(primary(7, true), 0);
    let out = h.eq(codec::deselect_req(8), 0);
    assert_eq!(to_equipment(&out)[0].header.status(), codec::DESELECT_BUSY);
    assert!(h.r.is_selected());
}

#[test]
fn reject_reasons() {
    let mut h = H::new();
    let out = h.eq(primary(9, true), 0);
    assert_eq!(reject_of(&to_equipment(&out)[0]), (0, 4, 9));
    assert!(has_event(&out, |e| matches!(
        e,
        Event::Rejected {
            reason: RejectReason::EntityNotSelected,
            ..
        }
    )));
    let mut odd = primary(10, true);
    odd.header.ptype = 5;
    let out = h.eq(odd, 0);
    assert_eq!(reject_of(&to_equipment(&out)[0]), (5, 2, 10));
    let mut unknown = codec::linktest_req(11);
    unknown.header.stype = SType::Unknown(8);
    let out = h.eq(unknown.clone(), 0);
    assert_eq!(reject_of(&to_equipment(&out)[0]), (8, 1, 11));
    // A Reject is never answered with a Reject, whatever its PType.
    let mut rej = codec::reject_req(&primary(12, true).header, RejectReason::TransactionNotOpen);
    rej.header.ptype = 9;
    assert!(to_equipment(&h.eq(rej, 0)).is_empty());
    // The backend side gets the same treatment.
    let mut h = H::relaying();
    let out = h.be(OLD, unknown, 0);
    assert_eq!(reject_of(&sent_to(&out, OLD)[0]), (8, 1, 11));
}

#[test]
fn unsolicited_responses_are_ignored() {
    let mut h = H::relaying();
    for m in [
        codec::select_rsp(&codec::select_req(1).header, 0),
        codec::linktest_rsp(&codec::linktest_req(2).header),
        codec::deselect_rsp(&codec::deselect_req(3).header, 0),
    ] {
        let stype = m.header.stype;
        let out = h.eq(m, 0);
        assert_eq!(
            out,
            [Action::Event(Event::Unsolicited {
                from: Side::Equipment,
                stype
            })]
        );
    }
}

#[test]
fn separate_closes_everything() {
    let mut h = H::relaying();
    h.eq(primary(1, true), 0);
    let out = h.eq(codec::separate_req(2), 0);
    assert!(out.contains(&Action::CloseEquipment {
        reason: CloseReason::Separated
    }));
    assert!(out.contains(&Action::CloseBackend(OLD)));
    assert_eq!(sent_to(&out, OLD)[0].header.stype, SType::SeparateReq);
    assert!(
        to_equipment(&out).is_empty(),
        "never a Separate.req toward the equipment"
    );
    assert!(h.r.is_closed());
    assert!(h.eq(codec::linktest_req(3), 0).is_empty());
    assert!(h.be(OLD, primary(4, true), 0).is_empty());
}

#[test]
fn t7_closes_an_equipment_that_never_selects() {
    let mut h = H::new();
    assert_eq!(h.r.next_deadline(), Some(h.at(10_000)));
    assert!(h.tick(9_999).is_empty());
    assert_eq!(
        h.tick(10_000),
        [Action::CloseEquipment {
            reason: CloseReason::NotSelected
        }]
    );
    let mut h = H::new();
    h.eq(codec::select_req(1), 5_000);
    assert!(h.tick(60_000).is_empty());
}

#[test]
fn relays_both_directions() {
    let mut h = H::relaying();
    let p = primary(1, true);
    assert_eq!(sent_to(&h.eq(p.clone(), 0), OLD), std::slice::from_ref(&p));
    assert_eq!(h.r.open_transactions(), (1, 0));
    assert_eq!(to_equipment(&h.be(OLD, reply_to(&p), 10)), [reply_to(&p)]);
    let hp = primary(1, true); // the same system bytes in the other direction do not collide
    assert_eq!(
        to_equipment(&h.be(OLD, hp.clone(), 20)),
        std::slice::from_ref(&hp)
    );
    assert_eq!(sent_to(&h.eq(reply_to(&hp), 30), OLD), [reply_to(&hp)]);
    assert_eq!(h.r.open_transactions(), (0, 0));
    // Without the W-bit nothing is tracked.
    h.eq(primary(2, false), 40);
    assert_eq!(h.r.open_transactions(), (0, 0));
    // A backend reply to nothing is dropped, not forwarded.
    let out = h.be(OLD, reply_to(&primary(3, true)), 50);
    assert!(to_equipment(&out).is_empty());
    assert!(has_event(&out, |e| matches!(
        e,
        Event::UnmatchedReply { system: 3, .. }
    )));
    let out = h.be(OLD, codec::linktest_req(9), 60);
    assert_eq!(sent_to(&out, OLD)[0].header.stype, SType::LinktestRsp);
}

#[test]
fn t3_expiry_is_reported_and_a_late_reply_dropped() {
    let mut h = H::relaying();
    let p = primary(5, true);
    h.eq(p.clone(), 0);
    assert_eq!(h.r.next_deadline(), Some(h.at(45_000)));
    assert!(h.tick(44_999).is_empty());
    let out = h.tick(45_000);
    assert_eq!(
        out,
        [Action::Event(Event::T3Expired {
            dir: Direction::EquipmentToHost,
            system: 5,
            backend: OLD
        })]
    );
    assert!(to_equipment(&h.be(OLD, reply_to(&p), 46_000)).is_empty());
}

#[test]
fn equipment_reject_closes_a_host_transaction() {
    let mut h = H::relaying();
    let hp = primary(8, true);
    h.be(OLD, hp.clone(), 0);
    let rej = codec::reject_req(&hp.header, RejectReason::TransactionNotOpen);
    let out = h.eq(rej.clone(), 1);
    assert_eq!(sent_to(&out, OLD), [rej]);
    assert_eq!(h.r.open_transactions(), (0, 0));
}

#[test]
fn config_validation() {
    assert_eq!(RelayConfig::default().validate(), Ok(()));
    let c = RelayConfig {
        drain_bound: Duration::from_secs(30),
        ..RelayConfig::default()
    };
    assert!(matches!(c.validate(), Err(ConfigError::DrainBound { .. })));
    let c = RelayConfig {
        t6: Duration::ZERO,
        ..RelayConfig::default()
    };
    assert_eq!(c.validate(), Err(ConfigError::Zero("t6")));
    // Huge durations never overflow an Instant.
    let c = RelayConfig {
        t3: Duration::MAX,
        t7: Duration::MAX,
        ..RelayConfig::default()
    };
    let mut r = Relay::new(c, Instant::now());
    r.on_equipment(codec::select_req(1), Instant::now());
    r.on_tick(Instant::now());
}
