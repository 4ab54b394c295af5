//! The relay's configuration and the vocabulary it speaks to the glue.

use std::time::{Duration, Instant};

use crate::hsms::codec::{Message, RejectReason, SType};

/// Identifies one backend connection (the glue never reuses an id).
pub type BackendId = u64;

/// Timers and bounds of a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Reply timeout: an open transaction is forgotten after this long.
    pub t3: Duration,
    /// Control transaction timeout: the new backend must be selected within this.
    pub t6: Duration,
    /// The equipment must select within this of connecting (or of a Deselect).
    pub t7: Duration,
    /// Longest wait for the old backend's transactions during a switch, and longest time an equipment
    /// primary may sit in the queue. Well below T3 so a queued primary still gets its answer in time.
    pub drain_bound: Duration,
    /// Most messages held in each queue; beyond it new ones are dropped.
    pub max_queued: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            t3: Duration::from_secs(45),
            t6: Duration::from_secs(5),
            t7: Duration::from_secs(10),
            drain_bound: Duration::from_secs(10),
            max_queued: 1024,
        }
    }
}

/// A config that cannot keep the relay's promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be non-zero")]
    Zero(&'static str),
    #[error("drain bound {drain:?} must be at most half of T3 {t3:?}, so queued primaries keep time to be answered")]
    DrainBound { drain: Duration, t3: Duration },
}

impl RelayConfig {
    /// Checks that every bound is non-zero and the drain bound leaves queued primaries at least half of T3.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("t3", self.t3),
            ("t6", self.t6),
            ("t7", self.t7),
            ("drain_bound", self.drain_bound),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_queued == 0 {
            return Err(ConfigError::Zero("max_queued"));
        }
        if self.drain_bound.saturating_mul(2) > self.t3 {
            return Err(ConfigError::DrainBound {
                drain: self.drain_bound,
                t3: self.t3,
            });
        }
        Ok(())
    }
}

/// A peer of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Equipment,
    Backend(BackendId),
}

/// Which way a transaction's primary went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Opened by an equipment primary, closed by a backend's secondary.
    EquipmentToHost,
    /// Opened by a backend primary, closed by the equipment's secondary.
    HostToEquipment,
}

/// Why the equipment connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No Select.req within T7.
    NotSelected,
    /// The equipment sent Separate.req.
    Separated,
}

/// Why a switch gave up and stayed on the old backend (or on none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackReason {
    SelectFailed,
    /// No Select result within T6.
    SelectTimeout,
    /// The old backend still had open transactions after the drain bound.
    DrainTimeout,
    NewBackendClosed,
}

/// Why a message was dropped rather than delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Queued longer than the drain bound with no backend to take it.
    Expired,
    /// The queue was at `max_queued`.
    QueueFull,
    /// Held from a new backend whose switch was rolled back.
    RolledBack,
    /// The equipment connection ended.
    EquipmentGone,
}

/// Something for the glue to log or count; no action needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// We sent a Reject.req.
    Rejected {
        to: Side,
        reason: RejectReason,
        system: u32,
    },
    /// A peer sent a Reject.req (`reason` is header byte 3).
    PeerRejected { from: Side, reason: u8, system: u32 },
    /// A control message we did not ask for, ignored.
    Unsolicited { from: Side, stype: SType },
    /// A secondary matching no open transaction, dropped.
    UnmatchedReply { from: Side, system: u32 },
    /// A message from a backend not allowed to talk now (not selected, or already let go), dropped.
    StrayBackend { id: BackendId, stype: SType },
    /// A primary reused the system bytes of an open transaction; the new one replaces it.
    DuplicateSystem { dir: Direction, system: u32 },
    /// No reply within T3; the peers run their own T3, so nothing is sent.
    T3Expired {
        dir: Direction,
        system: u32,
        backend: BackendId,
    },
    /// An open transaction whose backend (or equipment) went away; no reply is fabricated.
    TransactionLost {
        dir: Direction,
        system: u32,
        backend: BackendId,
    },
    /// A data message that will never be delivered.
    Dropped { system: u32, reason: DropReason },
    /// The backend of the session closed or separated.
    BackendLost { id: BackendId },
    /// `begin_switch` while a switch is already under way, or to a known id; ignored.
    SwitchRefused { id: BackendId },
    /// `on_backend_selected` for a connection not being selected (e.g. after a T6 rollback).
    StraySelected { id: BackendId },
}

/// What the glue must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Encode and write to the equipment connection.
    SendEquipment(Message),
    /// Encode and write to that backend connection.
    SendBackend(BackendId, Message),
    /// Close that connection (idempotent: it may already be closed).
    CloseBackend(BackendId),
    /// Close the equipment connection; the session is over.
    CloseEquipment { reason: CloseReason },
    /// No backend is left: connect one and call `begin_switch` with it.
    NeedBackend,
    /// `to` is now the only backend; `from` is `None` when there was none.
    SwitchDone {
        from: Option<BackendId>,
        to: BackendId,
        took: Duration,
    },
    /// The switch to `abandoned` is off; `kept` is still (or again) the backend.
    SwitchRolledBack {
        kept: Option<BackendId>,
        abandoned: BackendId,
        reason: RollbackReason,
    },
    /// No transaction is open and no backend is left: take [`Relay::hand_off`] and move the
    /// connection to the next process now.
    HandOverReady { took: Duration },
    /// The old backend still had open transactions after the drain bound: the session stays on
    /// it, here (its queue already flushed to it).
    HandOverAbandoned { kept: BackendId },
    /// Log or count it.
    Event(Event),
}

/// Where the session's backend side stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendState {
    /// No backend: equipment primaries are queued, each for at most the drain bound.
    None,
    /// The one backend exchanging data with the equipment.
    Active(BackendId),
    /// `new` is being selected; data still goes to `old` (or is queued when there is none).
    Selecting {
        old: Option<BackendId>,
        new: BackendId,
        started: Instant,
        deadline: Option<Instant>,
    },
    /// `new` is selected; equipment primaries are queued until `old` has no open transaction.
    Draining {
        old: BackendId,
        new: BackendId,
        started: Instant,
        deadline: Option<Instant>,
    },
    /// The session moves to another process (an upgrade): equipment primaries are queued until
    /// `old` has no open transaction, then the glue hands the connection over.
    HandingOver {
        old: BackendId,
        started: Instant,
        deadline: Option<Instant>,
    },
}

/// What another process needs to carry a session on: the equipment's state and the primaries
/// waiting for a backend, each with its age so its T3 keeps counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff {
    pub selected: bool,
    /// What is left of T7 when the equipment has not selected.
    pub t7_left: Option<Duration>,
    pub queue: Vec<(Message, Duration)>,
}
