//! The HSMS front-end (SEMI E37/E37.1): zerodown is the equipment's passive peer on one side and
//! keeps its own active HSMS session with one backend version at a time on the other. It reads
//! the core's snapshot like the HTTP front-end does, so one version decision serves both.
//!
//! - [`codec`]: framing, sans-IO. Data messages are forwarded byte for byte; lengths above the
//!   configured maximum are refused from the 4 length bytes, before any body is buffered.
//! - [`relay`]: one equipment session as a pure state machine (events in, actions out, time passed
//!   in), so the glue only moves bytes and runs timers.
//! - [`target`]: which version and instances sessions should use.
//! - `frontend`: the listener and its limits; `state`: what sessions share and the registry
//!   `/status` reads; `session` and `backend` are the per-connection glue, `tcp` the plain-TCP
//!   mode; `handoff`: sessions moving to the next process at an upgrade.
//!
//! Guarantees: the equipment's control messages (Select, Linktest, Deselect, Separate) are
//! answered locally, so it never sees a switch; only one backend exchanges data with an equipment
//! session at any moment; a switch happens only when the old backend has no open transaction in
//! either direction, and equipment primaries arriving meanwhile are queued and sent, in order, to
//! the new backend.
//!
//! Limits: every wait is bounded. A new backend that does not select within T6, or an old one
//! still busy after the drain bound, rolls the switch back to the old backend (retried a second
//! later). Transactions open on a backend that dies are lost: no reply is fabricated, and the
//! waiting peer sees its own T3 expire. A queued primary with no backend to take it within the
//! drain bound is dropped rather than answered late.

mod backend;
pub mod codec;
mod frontend;
mod handoff;
pub mod relay;
mod session;
mod state;
pub mod target;
mod tcp;

pub use frontend::serve;
pub use state::{BackendView, Hsms, HsmsStatus, SessionView, SwitchView};
