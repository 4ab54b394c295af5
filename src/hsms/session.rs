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
use super::handoff::{self, Adoption, Head, Parcel};
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
    id: u64,
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
    moving: Move,
}

/// Where a hand-over to the next process stands.
#[derive(Default)]
struct Move {
    /// The process is upgrading: the session moves once it can.
    wanted: bool,
    /// The relay is draining toward it.
    under_way: bool,
    /// After an abandoned attempt, when to try again.
    again_at: Option<Instant>,
    /// The relay is ready: the connection goes now.
    ready: Option<Duration>,
}

/// How a session starts: fresh, or carried on from a hand-over.
struct Start {
    relay: Relay,
    buf: BytesMut,
    serving: Option<String>,
    /// Taken back after a failed hand-over: the process stopping does not end it.
    kept: bool,
}

impl Start {
    /// Carries on the session `parcel` holds (adopted, or `kept` after a failed hand-over).
    fn carried(h: &Hsms, parcel: Parcel, kept: bool) -> Start {
        Start {
            relay: Relay::adopted(h.relay_config(), parcel.off, Instant::now()),
            serving: parcel.head.serving,
            buf: parcel.pending,
            kept,
        }
    }
}

/// What a session ended in.
enum End {
    Closed(String),
    /// Ready to move: the socket (reunited) and the session's state.
    Moving(TcpStream, Box<Parcel>),
}

/// Serves one equipment connection until it closes, the relay ends it, the daemon stops, or it
/// moves to the next process.
pub async fn run(
    h: &Hsms,
    id: u64,
    view: Arc<Mutex<SessionView>>,
    stream: TcpStream,
    shutdown: watch::Receiver<bool>,
) {
    tracing::info!(target: "zerodown::hsms", session = id, "equipment connected");
    let start = Start {
        relay: Relay::new(h.relay_config(), Instant::now()),
        buf: BytesMut::with_capacity(8192),
        serving: None,
        kept: false,
    };
    carry_on(h, id, view, stream, start, shutdown).await;
}

/// Serves a session the previous process handed over.
pub async fn adopt(
    h: &Hsms,
    id: u64,
    view: Arc<Mutex<SessionView>>,
    a: Adoption,
    shutdown: watch::Receiver<bool>,
) {
    let Adoption { stream, parcel } = a;
    let stream = match TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "zerodown::hsms", session = id, error = %e, "cannot serve a handed-over session");
            return;
        }
    };
    let head = &parcel.head;
    tracing::info!(target: "zerodown::hsms", session = id, previous_session = head.session, equipment = %head.equipment, serving = head.serving.as_deref(), queued = parcel.off.queue.len(), pending_bytes = parcel.pending.len(), upgrades = head.upgrades, "session adopted from the previous process");
    h.metrics
        .hsms_handovers
        .get_or_create(&[("outcome", Lv::S("adopted"))])
        .inc();
    {
        let mut v = lock(&view);
        v.upgrades = head.upgrades;
        v.switches = head.switches;
        v.rollbacks = head.rollbacks;
    }
    let start = Start::carried(h, parcel, false);
    carry_on(h, id, view, stream, start, shutdown).await;
}

/// Runs the session; a hand-over that fails gives the session back, and it carries on here.
async fn carry_on(
    h: &Hsms,
    id: u64,
    view: Arc<Mutex<SessionView>>,
    mut stream: TcpStream,
    mut start: Start,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let (sock, parcel) = match relay(h, id, &view, stream, start, shutdown.clone()).await {
            End::Closed(why) => {
                tracing::info!(target: "zerodown::hsms", session = id, reason = %why, "session ended");
                return;
            }
            End::Moving(sock, parcel) => (sock, parcel),
        };
        let queued = parcel.off.queue.len();
        let sock = match sock.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "zerodown::hsms", session = id, error = %e, "session ended: its socket could not be handed over");
                return;
            }
        };
        let (sock, parcel, why) = match handoff::send(h, sock, *parcel).await {
            Ok(()) => {
                tracing::info!(target: "zerodown::hsms", session = id, queued, "session handed over to the next process");
                h.metrics
                    .hsms_handovers
                    .get_or_create(&[("outcome", Lv::S("handed_over"))])
                    .inc();
                return;
            }
            Err(back) => back,
        };
        tracing::warn!(target: "zerodown::hsms", session = id, error = %why, "session could not be handed over: it stays in this process");
        h.metrics
            .hsms_handovers
            .get_or_create(&[("outcome", Lv::S("kept"))])
            .inc();
        stream = match TcpStream::from_std(sock) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "zerodown::hsms", session = id, error = %e, "session ended: its socket could not be taken back");
                return;
            }
        };
        start = Start::carried(h, parcel, true);
    }
}

/// Relays between the equipment and the backends until the session ends or is ready to move.
async fn relay(
    h: &Hsms,
    id: u64,
    view: &Arc<Mutex<SessionView>>,
    stream: TcpStream,
    start: Start,
    mut shutdown: watch::Receiver<bool>,
) -> End {
    let (mut rd, wr) = stream.into_split();
    let (eq_tx, eq_rx) = mpsc::channel(h.cfg.max_queued);
    let writer = tokio::spawn(write_equipment(wr, eq_rx));
    let (ev_tx, mut ev_rx) = mpsc::channel(h.cfg.max_queued);
    let Start {
        relay,
        mut buf,
        serving,
        kept,
    } = start;
    let mut s = Session {
        h,
        id,
        relay,
        links: HashMap::new(),
        serving,
        retry_at: None,
        hold: None,
        eq_tx,
        events: ev_tx,
        view: Arc::clone(view),
        queued: 0,
        ending: None,
        moving: Move::default(),
    };
    s.follow_target(Instant::now());
    let mut generation = h.publisher.subscribe();
    let mut decoder = Decoder::new(h.cfg.max_message_bytes);
    // Bytes carried over from the previous process may hold whole messages.
    s.decode(&mut decoder, &mut buf);
    let mut t8 = decoder.partial(&buf).then(|| Instant::now() + h.cfg.t8);
    let mut stopping = kept;
    loop {
        s.move_on(Instant::now());
        s.apply();
        if s.ending.is_some() || s.moving.ready.is_some() {
            break;
        }
        let deadline = [s.relay.next_deadline(), t8, s.retry_at, s.moving.again_at]
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
            _ = shutdown.wait_for(|down| *down), if !stopping => {
                stopping = true;
                if h.successor().is_some() {
                    s.moving.wanted = true;
                } else if h.handing_over() {
                    // The successor broke before this session's turn: it stays, and is served.
                    tracing::warn!(target: "zerodown::hsms", session = id, "the next process cannot take sessions: this one stays here");
                } else {
                    s.equipment_gone("zerodown is stopping".into());
                }
            }
        }
    }
    s.h.metrics.hsms_queued.dec_by(s.queued as i64);
    if let Some(why) = s.ending.take() {
        // Dropping the senders closes the backends and lets the writer flush (a last Reject, say).
        drop(s);
        match tokio::time::timeout(h.cfg.t6, writer).await {
            Ok(Ok(Some(mut wr))) => {
                let _ = wr.shutdown().await;
            }
            Ok(_) => {}
            Err(_) => {
                tracing::debug!(target: "zerodown::hsms", session = id, "equipment writer did not finish")
            }
        }
        return End::Closed(why);
    }
    let took = s.moving.ready.unwrap_or_default();
    let off = s.relay.hand_off(Instant::now());
    let mut head = Head::new(id, String::new(), s.serving.take());
    {
        let v = lock(view);
        head.equipment = v.equipment.clone();
        head.upgrades = v.upgrades + 1;
        head.switches = v.switches;
        head.rollbacks = v.rollbacks;
    }
    tracing::debug!(target: "zerodown::hsms", session = id, took_ms = took.as_millis() as u64, "session drained for the hand-over");
    // Everything the relay sent the equipment is written before the socket moves.
    drop(s);
    let wr = match writer.await {
        Ok(Some(wr)) => wr,
        _ => return End::Closed("the equipment connection failed while handing over".into()),
    };
    match rd.reunite(wr) {
        Ok(sock) => End::Moving(
            sock,
            Box::new(Parcel {
                head,
                off,
                pending: buf,
            }),
        ),
        Err(_) => End::Closed("the equipment socket could not be reunited".into()),
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
        // A session about to move switches nowhere: the next process picks its backend.
        if self.ending.is_some() || self.moving.wanted {
            return;
        }
        let idle = match self.relay.backend_state() {
            BackendState::Active(_) => true,
            BackendState::None => self.links.is_empty(),
            BackendState::Selecting { .. }
            | BackendState::Draining { .. }
            | BackendState::HandingOver { .. } => false,
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

    /// Starts the hand-over when one is wanted and no switch is under way (a switch ends within
    /// T6 or the drain bound; the loop asks again after each event).
    fn move_on(&mut self, now: Instant) {
        let m = &mut self.moving;
        if !m.wanted || m.under_way || m.again_at.is_some_and(|t| now < t) {
            return;
        }
        m.again_at = None;
        if self.h.successor().is_none() {
            // The successor went away (a hand-over to it failed): this process keeps the session.
            m.wanted = false;
            self.retry_at = Some(now);
            return;
        }
        m.under_way = self.relay.begin_handover(now);
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
            Action::HandOverReady { took } => self.moving.ready = Some(took),
            Action::HandOverAbandoned { kept } => {
                tracing::warn!(target: "zerodown::hsms", session = self.id, backend = kept, drain_bound = ?self.h.cfg.drain_bound, "hand-over postponed: the backend still had open transactions after the drain bound");
                self.moving.under_way = false;
                self.moving.again_at = Some(now + RETRY_AFTER);
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
                BackendState::HandingOver { .. } => "handing_over",
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

/// Writes what the relay sends the equipment, batching what is queued, until the session drops
/// its sender; returns the write half then (`None` if a write failed), for the session to close
/// or hand over.
async fn write_equipment(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Message>,
) -> Option<OwnedWriteHalf> {
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
            return None;
        }
    }
    Some(wr)
}
