//! Moving a session to another zerodown process (an upgrade) at a message boundary: the old
//! backend is drained the way a switch drains it, then the glue hands the equipment connection
//! and [`HandOff`] over; the next process starts from [`Relay::adopted`] with no backend, and its
//! first switch (to the same version) sends the queue on.

use std::time::{Duration, Instant};

use super::{after, Action, BackendState, HandOff, Queued, Relay};
use crate::hsms::codec;

impl Relay {
    /// Starts handing the session over. Returns false while a switch is under way (it ends within
    /// T6 or the drain bound: ask again after it) or once the session is over.
    pub fn begin_handover(&mut self, now: Instant) -> bool {
        if self.closed {
            return false;
        }
        match self.backend {
            BackendState::None => {
                self.push(Action::HandOverReady {
                    took: Duration::ZERO,
                });
                true
            }
            BackendState::Active(old) => {
                self.backend = BackendState::HandingOver {
                    old,
                    started: now,
                    deadline: after(now, self.cfg.drain_bound),
                };
                self.maybe_finish(now);
                true
            }
            BackendState::Selecting { .. }
            | BackendState::Draining { .. }
            | BackendState::HandingOver { .. } => false,
        }
    }

    /// The session's state for the next process; this relay is over (it ignores every later
    /// event). Only after [`Action::HandOverReady`]: no backend, no open transaction.
    pub fn hand_off(&mut self, now: Instant) -> HandOff {
        let t7_left = (!self.selected)
            .then(|| self.t7_deadline.map(|d| d.saturating_duration_since(now)))
            .flatten();
        let queue = std::mem::take(&mut self.queue)
            .into_iter()
            .map(|q| (q.msg, now.saturating_duration_since(q.at)))
            .collect();
        self.closed = true;
        HandOff {
            selected: self.selected,
            t7_left,
            queue,
        }
    }

    /// A session handed over by another process (or taken back after a hand-over failed): no
    /// backend yet; the glue connects one and calls [`Relay::begin_switch`].
    pub fn adopted(cfg: super::RelayConfig, h: HandOff, now: Instant) -> Relay {
        let mut r = Relay::new(cfg, now);
        r.selected = h.selected;
        if let Some(left) = h.t7_left {
            r.t7_deadline = after(now, left);
        }
        r.queue = h
            .queue
            .into_iter()
            .map(|(msg, age)| Queued {
                msg,
                at: now.checked_sub(age).unwrap_or(now),
            })
            .collect();
        r
    }

    /// Ends a hand-over once `old` has no open transaction: separates from it and says so.
    pub(super) fn maybe_hand_over(&mut self, now: Instant) {
        if let BackendState::HandingOver { old, started, .. } = self.backend {
            if !self.has_open(old) {
                let sep = codec::separate_req(self.system());
                self.push(Action::SendBackend(old, sep));
                self.push(Action::CloseBackend(old));
                self.backend = BackendState::None;
                self.push(Action::HandOverReady {
                    took: now.saturating_duration_since(started),
                });
            }
        }
    }

    /// The drain bound passed with transactions still open: stay on `old`, here.
    pub(super) fn abandon_handover(&mut self, old: super::BackendId) {
        self.backend = BackendState::Active(old);
        self.push(Action::HandOverAbandoned { kept: old });
        while let Some(q) = self.queue.pop_front() {
            self.primary_to_backend(old, q.msg, q.at);
        }
    }
}
