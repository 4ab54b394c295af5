//! Switching backends, backend loss, timers and the end of the session.

use std::time::Instant;

use super::{
    after, due, Action, BackendId, BackendState, CloseReason, Direction, DropReason, Event, Relay,
    Role, RollbackReason, Txn,
};
use crate::hsms::codec;

impl Relay {
    /// Starts moving the session to backend connection `new`, whose Select result the glue will
    /// report through [`Relay::on_backend_selected`] or [`Relay::on_backend_select_failed`].
    pub fn begin_switch(&mut self, new: BackendId, now: Instant) {
        if self.closed {
            self.push(Action::CloseBackend(new));
            return;
        }
        let deadline = after(now, self.cfg.t6);
        match self.backend {
            BackendState::None => {
                self.backend = BackendState::Selecting {
                    old: None,
                    new,
                    started: now,
                    deadline,
                };
            }
            BackendState::Active(old) if old != new => {
                self.backend = BackendState::Selecting {
                    old: Some(old),
                    new,
                    started: now,
                    deadline,
                };
            }
            _ => {
                self.event(Event::SwitchRefused { id: new });
                if self.role(new) == Role::Unknown {
                    self.push(Action::CloseBackend(new));
                }
            }
        }
    }

    /// The glue's Select.req to `id` was answered with status 0.
    pub fn on_backend_selected(&mut self, id: BackendId, now: Instant) {
        if self.closed {
            return;
        }
        match self.backend {
            BackendState::Selecting {
                old: None,
                new,
                started,
                ..
            } if new == id => self.complete(None, new, started, now),
            BackendState::Selecting {
                old: Some(old),
                new,
                started,
                ..
            } if new == id => {
                let deadline = after(now, self.cfg.drain_bound);
                self.backend = BackendState::Draining {
                    old,
                    new,
                    started,
                    deadline,
                };
                self.maybe_finish(now);
            }
            _ => self.event(Event::StraySelected { id }),
        }
    }

    /// Selecting `id` failed (refused, or the connection broke before the answer).
    pub fn on_backend_select_failed(&mut self, id: BackendId) {
        if !self.closed && matches!(self.backend, BackendState::Selecting { new, .. } if new == id)
        {
            self.rollback(RollbackReason::SelectFailed);
        }
    }

    /// Backend connection `id` closed (or the glue gave up on it).
    pub fn on_backend_closed(&mut self, id: BackendId, now: Instant) {
        if !self.closed {
            self.backend_gone(id, now);
        }
    }

    /// The equipment connection closed: separate from and close every backend.
    pub fn on_equipment_closed(&mut self) {
        if !self.closed {
            self.close_all(None);
        }
    }

    /// Runs every timer due at `now`: T7, T3, T6, the drain bound and queue expiry.
    pub fn on_tick(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if !self.selected && due(self.t7_deadline, now) {
            self.close_all(Some(CloseReason::NotSelected));
            return;
        }
        for (dir, map) in [
            (Direction::EquipmentToHost, &mut self.to_host),
            (Direction::HostToEquipment, &mut self.to_equipment),
        ] {
            let expired: Vec<(u32, Txn)> = map
                .iter()
                .filter(|(_, t)| due(t.deadline, now))
                .map(|(s, t)| (*s, *t))
                .collect();
            for (system, t) in expired {
                map.remove(&system);
                self.actions.push_back(Action::Event(Event::T3Expired {
                    dir,
                    system,
                    backend: t.backend,
                }));
            }
        }
        // Expiries may have closed the last open transaction: finishing beats rolling back.
        self.maybe_finish(now);
        match self.backend {
            BackendState::Selecting { deadline, .. } if due(deadline, now) => {
                self.rollback(RollbackReason::SelectTimeout)
            }
            BackendState::Draining { deadline, .. } if due(deadline, now) => {
                self.rollback(RollbackReason::DrainTimeout)
            }
            BackendState::HandingOver { old, deadline, .. } if due(deadline, now) => {
                self.abandon_handover(old)
            }
            _ => {}
        }
        // Sent late, a primary would be answered after the equipment's T3: drop it instead.
        while let Some(q) = self.queue.front() {
            if !due(after(q.at, self.cfg.drain_bound), now) {
                break;
            }
            let system = q.msg.header.system;
            self.queue.pop_front();
            self.event(Event::Dropped {
                system,
                reason: DropReason::Expired,
            });
        }
    }

    /// Ends the drain once the old backend has no open transaction in either direction.
    pub(super) fn maybe_finish(&mut self, now: Instant) {
        self.maybe_hand_over(now);
        if let BackendState::Draining {
            old, new, started, ..
        } = self.backend
        {
            if !self.has_open(old) {
                let sep = codec::separate_req(self.system());
                self.push(Action::SendBackend(old, sep));
                self.push(Action::CloseBackend(old));
                self.complete(Some(old), new, started, now);
            }
        }
    }

    /// Whether `id` has an open transaction in either direction.
    pub(super) fn has_open(&self, id: BackendId) -> bool {
        self.to_host
            .values()
            .chain(self.to_equipment.values())
            .any(|t| t.backend == id)
    }

    /// Makes `to` the backend and hands it the queues; `from` is already separated or gone.
    fn complete(&mut self, from: Option<BackendId>, to: BackendId, started: Instant, now: Instant) {
        self.backend = BackendState::Active(to);
        self.push(Action::SwitchDone {
            from,
            to,
            took: now.saturating_duration_since(started),
        });
        while let Some(q) = self.queue.pop_front() {
            self.primary_to_backend(to, q.msg, q.at);
        }
        while let Some(q) = self.held.pop_front() {
            self.primary_to_equipment(to, q.msg, q.at);
        }
    }

    /// Abandons the switch in progress and stays on the old backend (or on none).
    fn rollback(&mut self, reason: RollbackReason) {
        let (kept, abandoned) = match self.backend {
            BackendState::Selecting { old, new, .. } => {
                // Not selected: there is no session to separate.
                self.push(Action::CloseBackend(new));
                (old, new)
            }
            BackendState::Draining { old, new, .. } => {
                if reason != RollbackReason::NewBackendClosed {
                    let sep = codec::separate_req(self.system());
                    self.push(Action::SendBackend(new, sep));
                }
                self.push(Action::CloseBackend(new));
                (Some(old), new)
            }
            _ => return,
        };
        self.backend = kept.map_or(BackendState::None, BackendState::Active);
        self.push(Action::SwitchRolledBack {
            kept,
            abandoned,
            reason,
        });
        while let Some(q) = self.held.pop_front() {
            self.event(Event::Dropped {
                system: q.msg.header.system,
                reason: DropReason::RolledBack,
            });
        }
        match kept {
            Some(old) => {
                while let Some(q) = self.queue.pop_front() {
                    self.primary_to_backend(old, q.msg, q.at);
                }
            }
            None => self.push(Action::NeedBackend),
        }
    }

    /// Forgets every transaction of `id`: its peer gets no reply and sees its own T3 expire.
    fn lose_transactions(&mut self, id: BackendId) {
        for (dir, map) in [
            (Direction::EquipmentToHost, &mut self.to_host),
            (Direction::HostToEquipment, &mut self.to_equipment),
        ] {
            let lost: Vec<u32> = map
                .iter()
                .filter(|(_, t)| t.backend == id)
                .map(|(s, _)| *s)
                .collect();
            for system in lost {
                map.remove(&system);
                self.actions
                    .push_back(Action::Event(Event::TransactionLost {
                        dir,
                        system,
                        backend: id,
                    }));
            }
        }
    }

    pub(super) fn backend_gone(&mut self, id: BackendId, now: Instant) {
        match self.backend {
            BackendState::Active(a) if a == id => {
                self.lose_transactions(id);
                self.backend = BackendState::None;
                self.push(Action::CloseBackend(id));
                self.event(Event::BackendLost { id });
                self.push(Action::NeedBackend);
            }
            BackendState::Selecting {
                old: Some(old),
                new,
                started,
                deadline,
            } if old == id => {
                // The switch already under way becomes the replacement.
                self.lose_transactions(id);
                self.backend = BackendState::Selecting {
                    old: None,
                    new,
                    started,
                    deadline,
                };
                self.push(Action::CloseBackend(id));
                self.event(Event::BackendLost { id });
            }
            BackendState::Draining {
                old, new, started, ..
            } if old == id => {
                // Nothing left to drain: finish the switch now.
                self.lose_transactions(id);
                self.push(Action::CloseBackend(id));
                self.event(Event::BackendLost { id });
                self.complete(Some(old), new, started, now);
            }
            BackendState::HandingOver { old, started, .. } if old == id => {
                // Nothing left to drain: the hand-over can go on at once.
                self.lose_transactions(id);
                self.push(Action::CloseBackend(id));
                self.event(Event::BackendLost { id });
                self.backend = BackendState::None;
                self.push(Action::HandOverReady {
                    took: now.saturating_duration_since(started),
                });
            }
            BackendState::Selecting { new, .. } | BackendState::Draining { new, .. }
                if new == id =>
            {
                self.rollback(RollbackReason::NewBackendClosed);
            }
            _ => {}
        }
    }

    /// Ends the session: separates from every backend, closes the equipment when `reason` says so.
    pub(super) fn close_all(&mut self, reason: Option<CloseReason>) {
        let (selected, selecting): (Vec<BackendId>, Option<BackendId>) = match self.backend {
            BackendState::None => (vec![], None),
            BackendState::Active(id) => (vec![id], None),
            BackendState::Selecting { old, new, .. } => (old.into_iter().collect(), Some(new)),
            BackendState::Draining { old, new, .. } => (vec![old, new], None),
            BackendState::HandingOver { old, .. } => (vec![old], None),
        };
        for id in selected {
            self.lose_transactions(id);
            let sep = codec::separate_req(self.system());
            self.push(Action::SendBackend(id, sep));
            self.push(Action::CloseBackend(id));
        }
        if let Some(id) = selecting {
            self.push(Action::CloseBackend(id));
        }
        for q in std::mem::take(&mut self.queue)
            .into_iter()
            .chain(std::mem::take(&mut self.held))
        {
            self.event(Event::Dropped {
                system: q.msg.header.system,
                reason: DropReason::EquipmentGone,
            });
        }
        if let Some(reason) = reason {
            self.push(Action::CloseEquipment { reason });
        }
        self.to_host.clear();
        self.to_equipment.clear();
        self.backend = BackendState::None;
        self.selected = false;
        self.closed = true;
    }
}
