//! A randomized session checked against the relay's invariants.

use super::*;

/// Messages in flight in a simulation, and what the equipment got back.
#[derive(Default)]
struct Wire {
    to_backends: VecDeque<(BackendId, Message)>,
    to_eq: VecDeque<Message>,
    answered: Vec<u32>,
    need_backend: bool,
}

impl Wire {
    fn route(&mut self, out: Vec<Action>) {
        for a in out {
            match a {
                Action::SendBackend(id, m) if m.expects_reply() => {
                    self.to_backends.push_back((id, m))
                }
                Action::SendEquipment(m) if m.is_secondary() => self.answered.push(m.header.system),
                Action::SendEquipment(m) if m.expects_reply() => self.to_eq.push_back(m),
                Action::NeedBackend => self.need_backend = true,
                Action::CloseBackend(id) => self.to_backends.retain(|(i, _)| *i != id),
                _ => {}
            }
        }
    }

    /// One peer answers the oldest request that reached it.
    fn answer_one(&mut self, h: &mut H, ms: u64) -> bool {
        if let Some((id, m)) = self.to_backends.pop_front() {
            let out = h.be(id, reply_to(&m), ms);
            self.route(out);
        } else if let Some(m) = self.to_eq.pop_front() {
            let out = h.eq(reply_to(&m), ms);
            self.route(out);
        } else {
            return false;
        }
        true
    }
}

/// Random traffic with switches, failures and prompt peers: no panic, one backend per phase, and every
/// equipment W-bit primary answered exactly once when nothing was lost, dropped or expired.
#[test]
fn simulated_sessions_keep_the_invariants() {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    let mut checked = 0;
    let mut switches = 0;
    for round in 0..300 {
        let mut h = H::relaying();
        let failures = round % 3 == 0;
        let (mut ms, mut next_id, mut sys) = (0u64, 10, 1u32);
        let mut asked: Vec<u32> = Vec::new();
        let mut w = Wire::default();
        let mut pending: Option<BackendId> = None;
        for _ in 0..200 {
            ms += rnd(300);
            match rnd(10) {
                0..=2 => {
                    let wbit = rnd(2) == 0;
                    if wbit {
                        asked.push(sys);
                    }
                    let out = h.eq(primary(sys, wbit), ms);
                    w.route(out);
                    sys += 1;
                }
                3 => {
                    if let Some(id) = h.r.current_backend() {
                        let out = h.be(id, primary(100_000 + sys, true), ms);
                        w.route(out);
                        sys += 1;
                    }
                }
                4 if pending.is_none()
                    && matches!(h.r.backend_state(), BackendState::Active(_)) =>
                {
                    h.r.begin_switch(next_id, h.at(ms));
                    pending = Some(next_id);
                    next_id += 1;
                }
                5 => {
                    if let Some(id) = pending.take() {
                        if failures && rnd(3) == 0 {
                            h.r.on_backend_select_failed(id);
                        } else {
                            h.r.on_backend_selected(id, h.at(ms));
                        }
                    }
                }
                6 if failures && rnd(4) == 0 => {
                    if let Some(id) = h.r.current_backend() {
                        h.r.on_backend_closed(id, h.at(ms));
                    }
                }
                _ => {
                    w.answer_one(&mut h, ms);
                }
            }
            let out = h.take();
            w.route(out);
            let out = h.tick(ms);
            w.route(out);
            if std::mem::take(&mut w.need_backend) {
                h.r.begin_switch(next_id, h.at(ms));
                pending = Some(next_id);
                next_id += 1;
            }
        }
        // Finish any switch and let the peers answer everything.
        if let Some(id) = pending {
            h.r.on_backend_selected(id, h.at(ms));
            let out = h.take();
            w.route(out);
        }
        let mut guard = 0;
        while w.answer_one(&mut h, ms) {
            guard += 1;
            assert!(guard < 100_000);
        }
        assert_one_backend_per_phase(&h.all);
        switches += h
            .all
            .iter()
            .filter(|a| matches!(a, Action::SwitchDone { from: Some(_), .. }))
            .count();
        let mut got = w.answered.clone();
        got.sort_unstable();
        got.dedup();
        assert_eq!(
            got.len(),
            w.answered.len(),
            "round {round}: a primary was answered twice"
        );
        let lost = h.all.iter().any(|a| {
            matches!(
                a,
                Action::Event(
                    Event::TransactionLost { .. } | Event::Dropped { .. } | Event::T3Expired { .. }
                )
            )
        });
        if !lost {
            assert_eq!(
                got, asked,
                "round {round}: every W-bit primary answered once"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 100 && switches > 100,
        "the simulation exercises the rules ({checked}, {switches})"
    );
}
