//! One equipment connection: the tokio glue around its [`Relay`]. Reads and decodes the
//! equipment's bytes (T8 between the bytes of one message), runs the relay's timers, opens backend
//! connections when the relay or a version change asks for one, and carries out the relay's
//! actions. Every rule about what may be sent where lives in the relay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::backend::{self, BackendEvent, Dial};
use super::codec::{self, Decoder, Message};
use super::relay::{Action, BackendId, BackendState, Event, Relay};
use super::state::{lock, unix_ms, BackendView, Hsms, SessionView, SwitchView};
use crate::core::Instance;
use crate::telemetry::metrics::Lv;

/// After a failed switch or with no backend to go to, wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A backend connection the session holds.
struct Link {
    tx: mpsc::Sender<Message>,
    instance: Arc<Instance>,
}

struct Session<'a> {
    h: &'a Hsms,
    relay: Relay,
    links: HashMap<BackendId, Link>,
    /// The version the session's data goes to (set when a switch completes).
    serving: Option<String>,
    /// When the session tries again to reach its target version.
    retry_at: Option<Instant>,
    hold: Option<String>,
    eq_tx: mpsc::Sender<Message>,
    events: mpsc::Sender<(BackendId, BackendEvent)>,
    view: Arc<Mutex<SessionView>>,
    queued: usize,
    /// Set when the session must end once the actions are carried out.
    ending: Option<String>,
}

/// Serves one equipment connection until it closes, the relay ends it, or the daemon stops.
pub async fn run(
    h: &Hsms,
    id: u64,
    view: Arc<Mutex<SessionView>>,
    stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, wr) = stream.into_split();
    let (eq_tx, eq_rx) = mpsc::channel(h.cfg.max_queued);
    let writer = tokio::spawn(write_equipment(wr, eq_rx));
    let (ev_tx, mut ev_rx) = mpsc::channel(h.cfg.max_queued);
    let mut s = Session {
        h,
        relay: Relay::new(h.relay_config(), Instant::now()),
        links: HashMap::new(),
        serving: None,
        retry_at: None,
        hold: None,
        eq_tx,
        events: ev_tx,
        view,
        queued: 0,
        ending: None,
    };
    tracing::info!(target: "zerodown::hsms", session = id, "equipment connected");
    s.follow_target(Instant::now());
    let mut generation = h.publisher.subscribe();
    let mut buf = BytesMut::with_capacity(8192);
    let mut decoder = Decoder::new(h.cfg.max_message_bytes);
    let mut t8: Option<Instant> = None;
    loop {
        s.apply();
        if s.ending.is_some() {
            break;
        }
        let deadline = [s.relay.next_deadline(), t8, s.retry_at]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => s.equipment_gone("equipment closed the connection".into()),
                Err(e) => s.equipment_gone(format!("read failed: {e}")),
                Ok(_) => {
                    s.decode(&mut decoder, &mut buf);
                    t8 = decoder.partial(&buf).then(|| Instant::now() + h.cfg.t8);
                }
            },
            Some((bid, ev)) = ev_rx.recv() => s.on_backend(bid, ev),
            _ = sleep => {
                let now = Instant::now();
                if t8.is_some_and(|d| d <= now) {
                    s.event("t8_expired");
                    s.equipment_gone(format!(
                        "T8: a message stopped arriving for {:?} (inter-character timeout)",
                        h.cfg.t8
                    ));
                } else {
                    if s.retry_at.is_some_and(|d| d <= now) {
                        s.retry_at = None;
                        s.follow_target(now);
                    }
                    s.relay.on_tick(now);
                }
            }
            Ok(()) = generation.changed() => s.follow_target(Instant::now()),
            _ = shutdown.wait_for(|down| *down) => s.equipment_gone("zerodown is stopping".into()),
        }
    }
    let why = s.ending.take().unwrap_or_default();
    tracing::info!(target: "zerodown::hsms", session = id, reason = %why, "session ended");
    s.h.metrics.hsms_queued.dec_by(s.queued as i64);
    // Dropping the senders closes the backends and lets the writer flush (a last Reject, say).
    drop(s);
    if tokio::time::timeout(h.cfg.t6, writer).await.is_err() {
        tracing::debug!(target: "zerodown::hsms", session = id, "equipment writer did not finish");
    }
}

impl Session<'_> {
    fn decode(&mut self, decoder: &mut Decoder, buf: &mut BytesMut) {
        loop {
            match decoder.decode(buf) {
                Ok(Some(m)) => {
                    if m.is_data() {
                        self.count("to_backend");
                    }
                    self.relay.on_equipment(m, Instant::now());
                }
                Ok(None) => return,
                Err(e) => {
                    // A bad length cannot be skipped: the stream has no other framing.
                    self.event("bad_frame");
                    tracing::warn!(target: "zerodown::hsms", error = %e, "bad frame from the equipment: closing the connection");
                    self.equipment_gone(format!("bad frame: {e}"));
                    return;
                }
            }
        }
    }

    fn equipment_gone(&mut self, why: String) {
        self.relay.on_equipment_closed();
        if self.ending.is_none() {
            self.ending = Some(why);
        }
    }

    fn on_backend(&mut self, bid: BackendId, ev: BackendEvent) {
        let now = Instant::now();
        match ev {
            BackendEvent::Selected => self.relay.on_backend_selected(bid, now),
            BackendEvent::SelectFailed(why) => {
                tracing::warn!(target: "zerodown::hsms", backend = bid, error = %why, "backend not selected");
                self.links.remove(&bid);
                self.relay.on_backend_select_failed(bid);
            }
            BackendEvent::Message(m) => {
                if m.is_data() {
                    self.count("to_equipment");
                }
                self.relay.on_backend(bid, m, now);
            }
            BackendEvent::Closed(why) => {
                if self.links.remove(&bid).is_some() {
                    tracing::warn!(target: "zerodown::hsms", backend = bid, reason = %why, "backend connection ended");
                    self.relay.on_backend_closed(bid, now);
                }
            }
        }
    }

    /// Moves the session toward the version the snapshot says, unless a switch is under way.
    fn follow_target(&mut self, now: Instant) {
        if self.ending.is_some() {
            return;
        }
        let idle = match self.relay.backend_state() {
            BackendState::Active(_) => true,
            BackendState::None => self.links.is_empty(),
            BackendState::Selecting { .. } | BackendState::Draining { .. } => false,
        };
        if !idle {
            return;
        }
        let Some(target) = self.h.target(self.serving.as_deref()) else {
            self.hold = Some("no instance with an HSMS address serves the active version".into());
            if self.serving.is_none() || self.relay.current_backend().is_none() {
                self.retry_at = Some(now + RETRY_AFTER);
            }
            return;
        };
        self.hold = target.hold.clone();
        let on_target = self.serving.as_deref() == Some(target.version.as_str())
            && self.relay.current_backend().is_some();
        if on_target {
            return;
        }
        let Some(instance) = self.h.pick(&target) else {
            return;
        };
        let Some(address) = instance.hsms.clone() else {
            return;
        };
        let bid = self.h.backend_id();
        let dial = Dial {
            id: bid,
            address,
            t6: self.h.cfg.t6,
            max_message_bytes: self.h.cfg.max_message_bytes,
            max_queued: self.h.cfg.max_queued,
        };
        let tx = backend::spawn(dial, self.events.clone());
        tracing::info!(target: "zerodown::hsms", backend = bid, instance = %instance.id, version = %instance.version, from = self.serving.as_deref(), "selecting a backend");
        self.links.insert(bid, Link { tx, instance });
        self.relay.begin_switch(bid, now);
    }

    /// Carries out the relay's actions (which may produce more), then refreshes the view.
    fn apply(&mut self) {
        while let Some(a) = self.relay.poll_action() {
            self.act(a);
        }
        self.refresh_view();
    }

    fn act(&mut self, a: Action) {
        let now = Instant::now();
        match a {
            Action::SendEquipment(m) => {
                if self.eq_tx.try_send(m).is_err() {
                    self.equipment_gone(
                        "the equipment is not reading (queue full or connection gone)".into(),
                    );
                }
            }
            Action::SendBackend(bid, m) => {
                let sent = self.links.get(&bid).map(|l| l.tx.try_send(m));
                if let Some(Err(e)) = sent {
                    tracing::warn!(target: "zerodown::hsms", backend = bid, error = %e, "backend is not reading: dropping the connection");
                    self.links.remove(&bid);
                    self.relay.on_backend_closed(bid, now);
                }
            }
            Action::CloseBackend(bid) => {
                self.links.remove(&bid);
            }
            Action::CloseEquipment { reason } => {
                if matches!(reason, super::relay::CloseReason::NotSelected) {
                    self.event("not_selected");
                }
                if self.ending.is_none() {
                    self.ending = Some(format!("{reason:?}"));
                }
            }
            Action::NeedBackend => self.follow_target(now),
            Action::SwitchDone { from, to, took } => self.switched(from, to, took),
            Action::SwitchRolledBack {
                kept,
                abandoned,
                reason,
            } => {
                let version = self
                    .links
                    .remove(&abandoned)
                    .map(|l| l.instance.version.clone());
                self.h
                    .metrics
                    .hsms_switches
                    .get_or_create(&[("outcome", Lv::S("rolled_back"))])
                    .inc();
                tracing::warn!(target: "zerodown::hsms", kept, abandoned, to_version = version.as_deref(), reason = ?reason, "session switch rolled back: the session stays where it was");
                let mut v = lock(&self.view);
                v.rollbacks += 1;
                v.last_switch = Some(SwitchView {
                    from_version: self.serving.clone(),
                    to_version: version.unwrap_or_default(),
                    took_ms: 0,
                    at_ms: unix_ms(SystemTime::now()),
                    outcome: format!("rolled_back: {reason:?}"),
                });
                drop(v);
                self.retry_at = Some(now + RETRY_AFTER);
            }
            Action::Event(e) => self.on_event(e),
        }
    }

    fn switched(&mut self, from: Option<BackendId>, to: BackendId, took: Duration) {
        let Some(instance) = self.links.get(&to).map(|l| Arc::clone(&l.instance)) else {
            return;
        };
        let previous = self.serving.replace(instance.version.clone());
        if let Some(old) = from {
            self.links.remove(&old);
            let m = &self.h.metrics;
            m.hsms_switches
                .get_or_create(&[("outcome", Lv::S("done"))])
                .inc();
            m.hsms_switch_duration
                .get_or_create(&[("outcome", Lv::S("done"))])
                .observe(took.as_secs_f64());
            tracing::info!(target: "zerodown::hsms", from_version = previous.as_deref(), to_version = %instance.version, instance = %instance.id, took_ms = took.as_millis() as u64, "session switched");
            let mut v = lock(&self.view);
            v.switches += 1;
            v.last_switch = Some(SwitchView {
                from_version: previous,
                to_version: instance.version.clone(),
                took_ms: took.as_millis() as u64,
                at_ms: unix_ms(SystemTime::now()),
                outcome: "done".into(),
            });
        } else {
            tracing::info!(target: "zerodown::hsms", version = %instance.version, instance = %instance.id, "session connected to a backend");
        }
        // The snapshot may have moved on while this switch ran.
        self.retry_at = Some(Instant::now());
    }

    fn on_event(&mut self, e: Event) {
        let kind = match &e {
            Event::Rejected { .. } => "reject",
            Event::PeerRejected { .. } => "peer_reject",
            Event::T3Expired { .. } => "t3_expired",
            Event::TransactionLost { .. } => "transaction_lost",
            Event::Dropped { .. } => "dropped",
            Event::BackendLost { .. } => "backend_lost",
            Event::UnmatchedReply { .. } => "unmatched_reply",
            Event::Unsolicited { .. } => "unsolicited",
            Event::StrayBackend { .. } => "stray_backend",
            Event::DuplicateSystem { .. } => "duplicate_system",
            Event::SwitchRefused { .. } => "switch_refused",
            Event::StraySelected { .. } => "stray_selected",
        };
        self.event(kind);
        match kind {
            "reject" | "peer_reject" | "t3_expired" | "transaction_lost" | "dropped"
            | "backend_lost" => {
                tracing::warn!(target: "zerodown::hsms", kind, event = ?e, "hsms event")
            }
            _ => tracing::debug!(target: "zerodown::hsms", kind, event = ?e, "hsms event"),
        }
    }

    fn event(&self, kind: &'static str) {
        self.h
            .metrics
            .hsms_events
            .get_or_create(&[("kind", Lv::S(kind))])
            .inc();
    }

    fn count(&self, direction: &'static str) {
        self.h
            .metrics
            .hsms_messages
            .get_or_create(&[("direction", Lv::S(direction))])
            .inc();
    }

    fn refresh_view(&mut self) {
        let (to_host, to_equipment) = self.relay.open_transactions();
        let queued = self.relay.queued();
        self.h
            .metrics
            .hsms_queued
            .inc_by(queued as i64 - self.queued as i64);
        self.queued = queued;
        let current = self
            .relay
            .current_backend()
            .and_then(|b| self.links.get(&b))
            .map(|l| &l.instance);
        let state = if !self.relay.is_selected() {
            "not_selected"
        } else {
            match self.relay.backend_state() {
                BackendState::Active(_) => "selected",
                BackendState::Selecting { .. } | BackendState::Draining { .. } => "switching",
                BackendState::None => "no_backend",
            }
        };
        let mut v = lock(&self.view);
        if v.state != state {
            v.state = state.to_string();
        }
        // This runs after every message: the strings are copied only when they change.
        let shown = v.backend.as_ref().map(|b| b.instance.as_str());
        if shown != current.map(|i| i.id.as_str()) {
            v.backend = current.map(|i| BackendView {
                instance: i.id.clone(),
                address: i.hsms.clone().unwrap_or_default(),
                version: i.version.clone(),
            });
        }
        v.open_to_host = to_host;
        v.open_to_equipment = to_equipment;
        v.queued = queued;
        if v.hold != self.hold {
            v.hold = self.hold.clone();
        }
    }
}

/// Writes what the relay sends the equipment, batching what is queued; ends (closing the
/// connection after the last message) when the session drops its sender.
async fn write_equipment(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Message>) {
    let mut buf = BytesMut::with_capacity(8192);
    while let Some(m) = rx.recv().await {
        buf.clear();
        let mut next = Some(m);
        while let Some(m) = next {
            if codec::encode(&m, &mut buf).is_err() {
                tracing::warn!(target: "zerodown::hsms", "message too large to encode: dropped");
            }
            next = rx.try_recv().ok();
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
