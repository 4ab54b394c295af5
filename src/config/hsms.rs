//! `[hsms]`: the equipment-facing listener (HSMS, SEMI E37) and its timers. Absent: no listener.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the listener treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HsmsMode {
    /// zerodown is the equipment's HSMS peer and switches sessions at a transaction boundary.
    Hsms,
    /// Plain TCP: new connections go to the active version; at a switch, connections to the old
    /// version get `tcp_drain` and are then closed.
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HsmsConfig {
    pub listen: SocketAddr,
    pub mode: HsmsMode,
    /// Reply timeout: an open transaction is forgotten after this long (the peers keep their own).
    #[serde(serialize_with = "super::duration::serialize")]
    pub t3: Duration,
    /// Control transaction timeout: a backend must answer Select.req within this.
    #[serde(serialize_with = "super::duration::serialize")]
    pub t6: Duration,
    /// An equipment connection that sends no Select.req within this is closed.
    #[serde(serialize_with = "super::duration::serialize")]
    pub t7: Duration,
    /// The bytes of one message must keep arriving with gaps below this.
    #[serde(serialize_with = "super::duration::serialize")]
    pub t8: Duration,
    /// Longest wait for the old backend's open transactions during a switch (then the session
    /// stays on the old backend), and longest time a primary waits for a backend. At most T3/2.
    #[serde(serialize_with = "super::duration::serialize")]
    pub drain_bound: Duration,
    /// Largest message accepted (the length field: 10 header bytes + body).
    pub max_message_bytes: u32,
    /// Equipment connections served at once; more are closed on accept.
    pub max_sessions: usize,
    /// Messages queued per session (toward the equipment, toward a backend, or held during a
    /// switch) before the session refuses more.
    pub max_queued: usize,
    /// `tcp` mode: how long connections to an old version may stay after a switch.
    #[serde(serialize_with = "super::duration::serialize")]
    pub tcp_drain: Duration,
}

impl HsmsConfig {
    pub fn new(listen: SocketAddr) -> HsmsConfig {
        HsmsConfig {
            listen,
            mode: HsmsMode::Hsms,
            t3: Duration::from_secs(45),
            t6: Duration::from_secs(5),
            t7: Duration::from_secs(10),
            t8: Duration::from_secs(5),
            drain_bound: Duration::from_secs(10),
            max_message_bytes: 16 << 20,
            max_sessions: 1024,
            max_queued: 1024,
            tcp_drain: Duration::from_secs(30),
        }
    }
}
