//! One equipment session as a sans-IO state machine: events in, [`Action`]s out, time passed in.
//!
//! zerodown is the equipment's passive HSMS peer and answers its control messages itself; data is
//! forwarded unchanged to one backend at a time, with every W-bit transaction tracked by system bytes
//! in each direction so that a switch can wait for a transaction boundary.

mod handoff;
mod switch;
mod types;

pub use types::{
    Action, BackendId, BackendState, CloseReason, ConfigError, Direction, DropReason, Event,
    HandOff, RelayConfig, RollbackReason, Side,
};

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::codec::{self, Header, Message, RejectReason, SType};

#[derive(Debug, Clone, Copy)]
struct Txn {
    backend: BackendId,
    deadline: Option<Instant>,
}

#[derive(Debug)]
struct Queued {
    msg: Message,
    at: Instant,
}

/// How a backend id relates to the session right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Exchanges data with the equipment (the active or old backend).
    Current,
    /// Selected during a drain: its primaries are held until the switch is done.
    Pending,
    /// Being selected.
    Selecting,
    Unknown,
}

/// One equipment session. Feed it events; drain [`Relay::poll_action`] after each.
#[derive(Debug)]
pub struct Relay {
    cfg: RelayConfig,
    selected: bool,
    closed: bool,
    t7_deadline: Option<Instant>,
    backend: BackendState,
    /// Equipment→host transactions, by the equipment's system bytes.
    to_host: BTreeMap<u32, Txn>,
    /// Host→equipment transactions, by the backend's system bytes. Only one backend ever has some.
    to_equipment: BTreeMap<u32, Txn>,
    /// Equipment primaries waiting for a backend, in arrival order.
    queue: VecDeque<Queued>,
    /// The new backend's primaries held until its switch is done.
    held: VecDeque<Queued>,
    actions: VecDeque<Action>,
    next_system: u32,
}

fn after(now: Instant, d: Duration) -> Option<Instant> {
    // None means "never": a huge configured duration must not panic on overflow.
    now.checked_add(d)
}

fn due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| now >= d)
}

impl Relay {
    /// A relay for an equipment connection accepted at `now`, with no backend yet: the glue connects
    /// one and calls [`Relay::begin_switch`].
    pub fn new(cfg: RelayConfig, now: Instant) -> Self {
        let t7_deadline = after(now, cfg.t7);
        Relay {
            cfg,
            selected: false,
            closed: false,
            t7_deadline,
            backend: BackendState::None,
            to_host: BTreeMap::new(),
            to_equipment: BTreeMap::new(),
            queue: VecDeque::new(),
            held: VecDeque::new(),
            actions: VecDeque::new(),
            next_system: 1,
        }
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// All pending actions, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.actions.drain(..).collect()
    }

    /// Whether the equipment has selected.
    pub fn is_selected(&self) -> bool {
        self.selected
    }

    /// Whether the session is over (every later event is ignored).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The backend side's state.
    pub fn backend_state(&self) -> &BackendState {
        &self.backend
    }

    /// The backend that exchanges data with the equipment, if any.
    pub fn current_backend(&self) -> Option<BackendId> {
        match self.backend {
            BackendState::None | BackendState::Selecting { old: None, .. } => None,
            BackendState::Active(id)
            | BackendState::Selecting { old: Some(id), .. }
            | BackendState::Draining { old: id, .. }
            | BackendState::HandingOver { old: id, .. } => Some(id),
        }
    }

    /// Open transactions: (equipment→host, host→equipment).
    pub fn open_transactions(&self) -> (usize, usize) {
        (self.to_host.len(), self.to_equipment.len())
    }

    /// Equipment primaries waiting for a backend.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// When [`Relay::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let t7 = if self.selected {
            None
        } else {
            self.t7_deadline
        };
        let switch = match self.backend {
            BackendState::Selecting { deadline, .. }
            | BackendState::Draining { deadline, .. }
            | BackendState::HandingOver { deadline, .. } => deadline,
            _ => None,
        };
        let queue = self
            .queue
            .front()
            .and_then(|q| after(q.at, self.cfg.drain_bound));
        let txns = self
            .to_host
            .values()
            .chain(self.to_equipment.values())
            .filter_map(|t| t.deadline);
        [t7, switch, queue].into_iter().flatten().chain(txns).min()
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn event(&mut self, e: Event) {
        self.push(Action::Event(e));
    }

    fn system(&mut self) -> u32 {
        let s = self.next_system;
        self.next_system = self.next_system.wrapping_add(1);
        s
    }

    fn role(&self, id: BackendId) -> Role {
        match self.backend {
            BackendState::Active(a) if a == id => Role::Current,
            BackendState::Selecting { old, new, .. } => {
                if old == Some(id) {
                    Role::Current
                } else if new == id {
                    Role::Selecting
                } else {
                    Role::Unknown
                }
            }
            BackendState::Draining { old, new, .. } => {
                if old == id {
                    Role::Current
                } else if new == id {
                    Role::Pending
                } else {
                    Role::Unknown
                }
            }
            BackendState::HandingOver { old, .. } if old == id => Role::Current,
            _ => Role::Unknown,
        }
    }

    fn reject(&mut self, to: Side, rejected: &Header, reason: RejectReason) {
        let msg = codec::reject_req(rejected, reason);
        self.push(match to {
            Side::Equipment => Action::SendEquipment(msg),
            Side::Backend(id) => Action::SendBackend(id, msg),
        });
        self.event(Event::Rejected {
            to,
            reason,
            system: rejected.system,
        });
    }

    /// A message from the equipment.
    pub fn on_equipment(&mut self, msg: Message, now: Instant) {
        if self.closed {
            return;
        }
        let h = msg.header;
        // Never answer a Reject with a Reject: two peers could bounce them forever.
        if h.ptype != 0 && h.stype != SType::RejectReq {
            self.reject(Side::Equipment, &h, RejectReason::PTypeNotSupported);
            return;
        }
        match h.stype {
            SType::Data if !self.selected => {
                self.reject(Side::Equipment, &h, RejectReason::EntityNotSelected)
            }
            SType::Data if msg.is_primary() => self.equipment_primary(msg, now),
            SType::Data => match self.to_equipment.remove(&h.system) {
                Some(t) => self.push(Action::SendBackend(t.backend, msg)),
                None => self.event(Event::UnmatchedReply {
                    from: Side::Equipment,
                    system: h.system,
                }),
            },
            SType::SelectReq => {
                let status = if self.selected {
                    codec::SELECT_ALREADY_ACTIVE
                } else {
                    codec::SELECT_OK
                };
                self.push(Action::SendEquipment(codec::select_rsp(&h, status)));
                self.selected = true;
            }
            SType::DeselectReq => {
                let busy = !(self.to_host.is_empty()
                    && self.to_equipment.is_empty()
                    && self.queue.is_empty()
                    && self.held.is_empty());
                let status = match (self.selected, busy) {
                    (false, _) => codec::DESELECT_NOT_ESTABLISHED,
                    // Refused while anything is in flight: its reply would have no selected peer.
                    (true, true) => codec::DESELECT_BUSY,
                    (true, false) => codec::DESELECT_OK,
                };
                self.push(Action::SendEquipment(codec::deselect_rsp(&h, status)));
                if status == codec::DESELECT_OK {
                    self.selected = false;
                    self.t7_deadline = after(now, self.cfg.t7);
                }
            }
            SType::LinktestReq => self.push(Action::SendEquipment(codec::linktest_rsp(&h))),
            SType::SeparateReq => self.close_all(Some(CloseReason::Separated)),
            SType::RejectReq => {
                self.event(Event::PeerRejected {
                    from: Side::Equipment,
                    reason: h.status(),
                    system: h.system,
                });
                // A rejected host primary will get no reply: close it and tell the backend that sent it.
                if h.byte2() == SType::Data.to_byte() {
                    if let Some(t) = self.to_equipment.remove(&h.system) {
                        self.push(Action::SendBackend(t.backend, msg));
                    }
                }
            }
            SType::SelectRsp | SType::DeselectRsp | SType::LinktestRsp => {
                self.event(Event::Unsolicited {
                    from: Side::Equipment,
                    stype: h.stype,
                })
            }
            SType::Unknown(_) => self.reject(Side::Equipment, &h, RejectReason::STypeNotSupported),
        }
        self.maybe_finish(now);
    }

    fn equipment_primary(&mut self, msg: Message, now: Instant) {
        match self.backend {
            BackendState::Active(id) | BackendState::Selecting { old: Some(id), .. } => {
                self.primary_to_backend(id, msg, now)
            }
            BackendState::None
            | BackendState::Selecting { old: None, .. }
            | BackendState::Draining { .. }
            | BackendState::HandingOver { .. } => {
                if self.queue.len() >= self.cfg.max_queued {
                    self.event(Event::Dropped {
                        system: msg.header.system,
                        reason: DropReason::QueueFull,
                    });
                } else {
                    self.queue.push_back(Queued { msg, at: now });
                }
            }
        }
    }

    /// Forwards an equipment primary; its T3 runs from `sent`, when the equipment sent it.
    fn primary_to_backend(&mut self, id: BackendId, msg: Message, sent: Instant) {
        if msg.expects_reply() {
            let txn = Txn {
                backend: id,
                deadline: after(sent, self.cfg.t3),
            };
            if self.to_host.insert(msg.header.system, txn).is_some() {
                self.event(Event::DuplicateSystem {
                    dir: Direction::EquipmentToHost,
                    system: msg.header.system,
                });
            }
        }
        self.push(Action::SendBackend(id, msg));
    }

    /// Forwards a host primary to the equipment; its T3 runs from `sent`, when the backend sent it.
    fn primary_to_equipment(&mut self, id: BackendId, msg: Message, sent: Instant) {
        if !self.selected {
            self.reject(
                Side::Backend(id),
                &msg.header,
                RejectReason::EntityNotSelected,
            );
            return;
        }
        if msg.expects_reply() {
            let txn = Txn {
                backend: id,
                deadline: after(sent, self.cfg.t3),
            };
            if self.to_equipment.insert(msg.header.system, txn).is_some() {
                self.event(Event::DuplicateSystem {
                    dir: Direction::HostToEquipment,
                    system: msg.header.system,
                });
            }
        }
        self.push(Action::SendEquipment(msg));
    }

    /// A message from backend connection `id`.
    pub fn on_backend(&mut self, id: BackendId, msg: Message, now: Instant) {
        if self.closed {
            return;
        }
        let h = msg.header;
        let role = self.role(id);
        if role == Role::Unknown {
            self.event(Event::StrayBackend { id, stype: h.stype });
            return;
        }
        if h.ptype != 0 && h.stype != SType::RejectReq {
            self.reject(Side::Backend(id), &h, RejectReason::PTypeNotSupported);
            return;
        }
        match h.stype {
            SType::Data => match role {
                Role::Current if msg.is_primary() => self.primary_to_equipment(id, msg, now),
                Role::Current => match self.to_host.get(&h.system) {
                    Some(t) if t.backend == id => {
                        self.to_host.remove(&h.system);
                        self.push(Action::SendEquipment(msg));
                    }
                    // Not forwarded: the equipment would see a reply to nothing it asked.
                    _ => self.event(Event::UnmatchedReply {
                        from: Side::Backend(id),
                        system: h.system,
                    }),
                },
                // Held, not forwarded: only one version exchanges data with the equipment at a time.
                Role::Pending if msg.is_primary() => {
                    if self.held.len() >= self.cfg.max_queued {
                        self.event(Event::Dropped {
                            system: h.system,
                            reason: DropReason::QueueFull,
                        });
                    } else {
                        self.held.push_back(Queued { msg, at: now });
                    }
                }
                Role::Pending => self.event(Event::UnmatchedReply {
                    from: Side::Backend(id),
                    system: h.system,
                }),
                Role::Selecting | Role::Unknown => {
                    self.event(Event::StrayBackend { id, stype: h.stype })
                }
            },
            SType::LinktestReq => self.push(Action::SendBackend(id, codec::linktest_rsp(&h))),
            SType::SeparateReq => self.backend_gone(id, now),
            SType::DeselectReq => {
                // The backend no longer serves this session: acknowledge, then treat it as gone.
                self.push(Action::SendBackend(
                    id,
                    codec::deselect_rsp(&h, codec::DESELECT_OK),
                ));
                self.backend_gone(id, now);
            }
            SType::RejectReq => {
                self.event(Event::PeerRejected {
                    from: Side::Backend(id),
                    reason: h.status(),
                    system: h.system,
                });
                let ours = self.to_host.get(&h.system).is_some_and(|t| t.backend == id);
                if h.byte2() == SType::Data.to_byte() && ours {
                    self.to_host.remove(&h.system);
                    if self.selected {
                        self.push(Action::SendEquipment(msg));
                    }
                }
            }
            SType::SelectReq | SType::SelectRsp | SType::DeselectRsp | SType::LinktestRsp => self
                .event(Event::Unsolicited {
                    from: Side::Backend(id),
                    stype: h.stype,
                }),
            SType::Unknown(_) => {
                self.reject(Side::Backend(id), &h, RejectReason::STypeNotSupported)
            }
        }
        self.maybe_finish(now);
    }
}

#[cfg(test)]
mod tests;
