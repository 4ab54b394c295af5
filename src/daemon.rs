//! The daemon's composition root: wires config, source, publisher, the HTTP front-end and the
//! admin API together, applies reloads, and drains on shutdown. Signals are translated into calls here by the CLI, which keeps
//! this testable in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::config::{Config, PoolsConfig, SetupError, SourceConfig};
use crate::core::discovery::{self, status::SourceStatus, Reports, UpstreamSource};
use crate::core::{Publisher, Service, Services};
use crate::hsms::Hsms;
pub use crate::http::listener::ListenerSettings;
use crate::http::proxy::{Proxy, Settings};
use crate::http::{listener, tls};
use crate::telemetry::metrics::Metrics;
use crate::upgrade::Offer;

/// The sockets a daemon serves, bound by the caller (on `127.0.0.1:0` in tests).
pub struct Listeners {
    pub public: TcpListener,
    pub admin: Option<TcpListener>,
    /// Required when the config has a `[tls]` section.
    pub tls: Option<TcpListener>,
    /// Required when the config has an `[hsms]` section.
    pub hsms: Option<TcpListener>,
}

/// A started daemon.
pub struct Daemon {
    pub proxy: Arc<Proxy>,
    /// Every service, the primary first (each its own publisher and source status).
    pub services: Arc<Services>,
    pub metrics: Arc<Metrics>,
    pub public_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    pub hsms_addr: Option<SocketAddr>,
    /// The HSMS front-end, when the config has one.
    pub hsms: Option<Arc<Hsms>>,
    /// 1 for a process started fresh; one more than its predecessor's after an upgrade.
    pub generation: u64,
    offer: Arc<Offer>,
    config: Mutex<Config>,
    /// Each service's running source, by service name.
    sources: Mutex<Vec<Running>>,
    settings: watch::Sender<Arc<ListenerSettings>>,
    permits: Arc<Semaphore>,
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    drain: watch::Sender<Duration>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    admin: Option<JoinHandle<()>>,
    reaper: JoinHandle<()>,
}

impl Daemon {
    /// Starts serving on already-bound listeners. Fails, naming the setting, when something the
    /// config points at cannot be used (an unreadable CA, token or certificate file).
    pub fn start(
        cfg: Config,
        public: TcpListener,
        admin: Option<TcpListener>,
    ) -> Result<Daemon, SetupError> {
        Daemon::start_with_tls(cfg, public, admin, None)
    }

    /// As [`Daemon::start`], plus the HTTPS listener `cfg.tls` asks for.
    pub fn start_with_tls(
        cfg: Config,
        public: TcpListener,
        admin: Option<TcpListener>,
        tls: Option<TcpListener>,
    ) -> Result<Daemon, SetupError> {
        Daemon::run(
            cfg,
            Listeners {
                public,
                admin,
                tls,
                hsms: None,
            },
        )
    }

    /// Builds everything that can fail first, then spawns the source, the listeners and the
    /// admin API, so a failed start leaves no task behind.
    pub fn run(cfg: Config, l: Listeners) -> Result<Daemon, SetupError> {
        Daemon::run_as(cfg, l, 1)
    }

    /// As [`Daemon::run`], as process generation `generation` (after `generation - 1` upgrades).
    pub fn run_as(cfg: Config, l: Listeners, generation: u64) -> Result<Daemon, SetupError> {
        Daemon::run_held(cfg, l, generation, None, &[])
    }

    /// As [`Daemon::run_as`]; with `first_pools_wait`, generation 1 too holds its listeners until
    /// the first pools load, at most that long: for sockets systemd passed, whose queue may
    /// already hold connections (socket activation), which would otherwise get 503s. The public
    /// and HTTPS listeners are also served on each of `workers` (see [`crate::runtime`]).
    pub fn run_held(
        cfg: Config,
        l: Listeners,
        generation: u64,
        first_pools_wait: Option<Duration>,
        workers: &[Handle],
    ) -> Result<Daemon, SetupError> {
        let addr = |l: &TcpListener| l.local_addr().map_err(SetupError::Listener);
        let public_addr = addr(&l.public)?;
        let tls_addr = l.tls.as_ref().map(addr).transpose()?;
        let admin_addr = l.admin.as_ref().map(addr).transpose()?;
        let hsms_addr = l.hsms.as_ref().map(addr).transpose()?;
        let tls = tls_for(&cfg, &l)?;
        let built = build_sources(&cfg, |_, _, _| true)?;
        let admin_token = cfg.server.admin_token()?;
        let listen_inode = crate::upgrade::fds::inode(&l.public);
        let offer = Arc::new(Offer::new(
            generation,
            offer(&l).map_err(SetupError::Listener)?,
        ));

        let metrics = Arc::new(Metrics::new());
        let sources: Vec<Running> = built
            .into_iter()
            .map(|b| Running::start(b, None, &metrics))
            .collect();
        let services = Arc::new(Services::new(
            sources.iter().map(|r| Arc::clone(&r.service)).collect(),
        ));
        // HSMS relays to the primary service.
        let publisher = Arc::clone(&sources[0].service.publisher);
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&metrics),
            Settings::from_config(&cfg, &services.all()),
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let reaper = tokio::spawn(reap_idle(
            Arc::clone(&services),
            Arc::clone(&proxy),
            shutdown_rx.clone(),
        ));
        let (settings, settings_rx) = watch::channel(Arc::new(ListenerSettings::from_config(&cfg)));
        let (drain, drain_rx) = watch::channel(cfg.server.drain_timeout);
        let permits = Arc::new(Semaphore::new(cfg.limits.max_connections));
        let shared = listener::Shared {
            proxy: Arc::clone(&proxy),
            settings: settings_rx,
            permits: Arc::clone(&permits),
            shutdown: shutdown_rx.clone(),
            drain: drain_rx,
            shares: Arc::new(crate::runtime::Shares::new(workers.len() + 1)),
        };
        // A successor shares its sockets with the running process: it must not take connections
        // until it can serve them, or they would get 503s while its first pools load.
        let gate = Gate {
            services: (generation > 1 || first_pools_wait.is_some()).then(|| services.all()),
            // A successor's wait is bounded by its --upgrade-timeout (it exits past it).
            bound: first_pools_wait.filter(|_| generation == 1),
            shutdown: shutdown_rx.clone(),
        };
        let mut listeners = Vec::new();
        // Every worker accepts on each HTTP listener (see `crate::runtime`).
        let mut on_workers = |sock, tls: Option<&Arc<ArcSwap<TlsAcceptor>>>| {
            let socks = spread(sock, workers).map_err(SetupError::Listener)?;
            let inboxes = listener::inboxes(socks.len());
            for ((on, sock), inbox) in socks.into_iter().zip(inboxes) {
                let serve = listener::serve(sock, tls.cloned(), shared.clone(), inbox);
                listeners.push(gate.spawn(&on, serve));
            }
            Ok::<_, SetupError>(())
        };
        on_workers(l.public, None)?;
        if let (Some(sock), Some(t)) = (l.tls, &tls) {
            on_workers(sock, Some(t))?;
        }
        let hsms = match (&cfg.hsms, l.hsms) {
            (Some(h), Some(sock)) => {
                let front = Arc::new(Hsms::new(
                    h.clone(),
                    Arc::clone(&publisher),
                    Arc::clone(&metrics),
                ));
                let drain = cfg.server.drain_timeout;
                let serve =
                    crate::hsms::serve(Arc::clone(&front), sock, shutdown_rx.clone(), drain);
                listeners.push(gate.spawn(&Handle::current(), serve));
                Some(front)
            }
            _ => None,
        };
        let admin = l.admin.map(|sock| {
            let state =
                admin::AdminState::new(Arc::clone(&services), Arc::clone(&metrics), admin_token)
                    .with_hsms(hsms.clone())
                    .with_generation(generation);
            tokio::spawn(admin::serve(sock, state, shutdown_rx))
        });
        tracing::info!(
            target: "zerodown::server",
            listen = %public_addr,
            admin = admin_addr.map(tracing::field::display),
            tls = tls_addr.map(tracing::field::display),
            hsms = hsms_addr.map(tracing::field::display),
            generation,
            pid = std::process::id(),
            // The same inode across generations proves the socket was never closed.
            listen_inode,
            source = %source_name(&cfg.source),
            services = cfg.services.len() + 1,
            version = env!("CARGO_PKG_VERSION"),
            "zerodown started"
        );
        Ok(Daemon {
            proxy,
            services,
            metrics,
            public_addr,
            admin_addr,
            tls_addr,
            hsms_addr,
            hsms,
            generation,
            offer,
            config: Mutex::new(cfg),
            sources: Mutex::new(sources),
            settings,
            permits,
            tls,
            drain,
            shutdown,
            listeners,
            admin,
            reaper,
        })
    }

    /// Applies a new, already validated config without dropping a connection. Listener addresses
    /// cannot change in place; a change is logged and needs a restart. A source that cannot be
    /// built rejects the whole reload, so nothing changes.
    pub fn reload(&self, new: Config) -> Result<(), SetupError> {
        let mut cur = self.config.lock().unwrap_or_else(|p| p.into_inner());
        // HSMS sessions hold the primary service's publisher for their whole life.
        if self.hsms.is_some() && new.primary_service() != cur.primary_service() {
            return Err(SetupError::HsmsPrimaryChanged {
                from: cur.primary_service().to_string(),
                to: new.primary_service().to_string(),
            });
        }
        let mut running = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        // Only services whose source or pools changed get a new source; built before anything
        // changes, so a source that cannot be built rejects the whole reload.
        let changed = build_sources(&new, |name, source, pools| {
            !running.iter().any(|r| r.same(name, source, pools))
        })?;
        // Certificates are re-read on every reload (renewals keep the same paths).
        let acceptor = match (&new.tls, &self.tls) {
            (Some(t), Some(_)) => Some(tls::acceptor(t)?),
            (Some(_), None) => return Err(SetupError::TlsAdded),
            (None, _) => None,
        };
        if let (Some(a), Some(slot)) = (acceptor, &self.tls) {
            slot.store(Arc::new(a));
        }
        let (old_cap, new_cap) = (cur.limits.max_connections, new.limits.max_connections);
        if new_cap > old_cap {
            self.permits.add_permits(new_cap - old_cap);
        } else if new_cap < old_cap {
            // Free permits go now; busy ones are not returned as their connections close.
            let forgotten = self.permits.forget_permits(old_cap - new_cap);
            if forgotten < old_cap - new_cap {
                tracing::warn!(target: "zerodown::server", lowered_by = forgotten, wanted = old_cap - new_cap, "connections in use kept part of the old limit: restart zerodown to lower it fully");
            }
        }
        if new.server.listen != cur.server.listen
            || new.server.admin_listen != cur.server.admin_listen
        {
            tracing::warn!(target: "zerodown::server", "listen addresses changed in the config: restart zerodown to apply them");
        }
        if new.hsms != cur.hsms {
            tracing::warn!(target: "zerodown::server", "the [hsms] section changed: restart (or upgrade) zerodown to apply it");
        }
        restart_sources(&mut running, changed, &new, &self.metrics);
        self.services
            .store(running.iter().map(|r| Arc::clone(&r.service)).collect());
        self.proxy
            .reload(Settings::from_config(&new, &self.services.all()));
        self.settings
            .send_replace(Arc::new(ListenerSettings::from_config(&new)));
        self.drain.send_replace(new.server.drain_timeout);
        *cur = new;
        tracing::info!(target: "zerodown::server", "configuration reloaded");
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish within the drain timeout, then stops.
    pub async fn shutdown(self) {
        self.offer.close();
        self.shutdown.send_replace(true);
        for l in self.listeners {
            let _ = l.await;
        }
        for r in self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            r.task.abort();
        }
        if let Some(a) = self.admin {
            a.abort();
        }
        self.reaper.abort();
    }
}

impl Daemon {
    /// At an upgrade: HSMS sessions move to `next` (when it takes them) instead of ending.
    pub fn hand_over_sessions(&self, next: Arc<crate::upgrade::Successor>) {
        if let Some(h) = &self.hsms {
            if next.takes_sessions {
                h.hand_over_to(next);
            }
        }
    }

    /// Whether this process adopts HSMS sessions from its predecessor.
    pub fn takes_sessions(&self) -> bool {
        self.hsms.as_ref().is_some_and(|h| h.takes_sessions())
    }

    /// Copies of the listening sockets, for a successor (see [`crate::upgrade`]).
    pub fn offer(&self) -> Arc<Offer> {
        Arc::clone(&self.offer)
    }

    /// The primary service's publisher (its pools).
    pub fn publisher(&self) -> Arc<Publisher> {
        Arc::clone(&self.primary().publisher)
    }

    /// What the primary service's source last did (`/status`'s `source_status`).
    pub fn status(&self) -> Arc<SourceStatus> {
        Arc::clone(&self.primary().status)
    }

    fn primary(&self) -> Arc<Service> {
        let all = self.services.all();
        // A daemon always has its primary service: built first, never removed.
        Arc::clone(&all[0])
    }
}

/// Closes pooled upstream connections that stayed idle past `upstream.idle_timeout` (or that
/// the upstream closed), on every endpoint of every service: checkout skips them, but an
/// endpoint no request goes to would otherwise hold their sockets until it is retired.
async fn reap_idle(
    services: Arc<Services>,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let timeout = proxy.idle_timeout();
        let every = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        for service in services.all().iter() {
            let snap = service.publisher.load();
            for m in snap.active.members.iter().chain(&snap.standby.members) {
                crate::http::upstream::ConnPool::of(&m.endpoint).evict(timeout);
            }
        }
    }
}

/// A service's source, built from its part of the config but not yet running.
struct Built {
    name: String,
    source: SourceConfig,
    pools: PoolsConfig,
    watch: Box<dyn UpstreamSource>,
}

/// Builds the source of every service `wanted` accepts (the primary first); fails, naming the
/// setting, on the first that cannot be built. Building reads token and TLS files, so services
/// that keep running as they are are left out rather than built and dropped.
fn build_sources(
    cfg: &Config,
    wanted: impl Fn(&str, &SourceConfig, &PoolsConfig) -> bool,
) -> Result<Vec<Built>, SetupError> {
    let mut out = Vec::new();
    for name in cfg.service_names() {
        let Some(view) = cfg.for_service(name) else {
            continue;
        };
        if !wanted(name, &view.source, &view.pools) {
            continue;
        }
        out.push(Built {
            watch: discovery::from_config(&view.source, &view.pools)?,
            name: name.to_string(),
            source: view.source,
            pools: view.pools,
        });
    }
    Ok(out)
}

/// A service and the task running its source.
struct Running {
    service: Arc<Service>,
    source: SourceConfig,
    pools: PoolsConfig,
    task: JoinHandle<()>,
}

impl Running {
    /// Runs `b`, on the publisher of `keep` when the service already exists (its pools and
    /// warm connections carry over), else on a new one.
    fn start(b: Built, keep: Option<Arc<Service>>, metrics: &Arc<Metrics>) -> Running {
        let service = keep.unwrap_or_else(|| {
            Arc::new(Service {
                publisher: Arc::new(Publisher::new(
                    &b.name,
                    b.pools.single_version,
                    Arc::clone(metrics),
                )),
                status: Arc::new(SourceStatus::default()),
            })
        });
        service.publisher.set_single_version(b.pools.single_version);
        let task = tokio::spawn(b.watch.run(Reports {
            publisher: Arc::clone(&service.publisher),
            status: Arc::clone(&service.status),
            metrics: Arc::clone(metrics),
        }));
        Running {
            service,
            source: b.source,
            pools: b.pools,
            task,
        }
    }

    fn same(&self, name: &str, source: &SourceConfig, pools: &PoolsConfig) -> bool {
        self.service.name() == name && &self.source == source && &self.pools == pools
    }
}

/// Applies a reload to the running sources: `changed` services restart (or start), services
/// the new config no longer names stop, the rest run on. Keeps the config's order.
fn restart_sources(
    running: &mut Vec<Running>,
    changed: Vec<Built>,
    cfg: &Config,
    metrics: &Arc<Metrics>,
) {
    let mut old: Vec<Running> = std::mem::take(running);
    let mut changed = changed;
    for name in cfg.service_names() {
        let current = old
            .iter()
            .position(|r| r.service.name() == name)
            .map(|i| old.swap_remove(i));
        match changed.iter().position(|b| b.name == name) {
            Some(i) => {
                let b = changed.swap_remove(i);
                let keep = current.map(|r| {
                    r.task.abort();
                    r.service
                });
                let what = if keep.is_some() {
                    "restarted"
                } else {
                    "started"
                };
                let source = source_name(&b.source);
                running.push(Running::start(b, keep, metrics));
                tracing::info!(target: "zerodown::server", service = name, %source, "upstream source {what}");
            }
            None => running.extend(current),
        }
    }
    for r in old {
        r.task.abort();
        r.service.publisher.retire_gauges();
        tracing::info!(target: "zerodown::server", service = r.service.name(), "service removed: its source stopped");
    }
}

/// The TLS acceptor the config asks for; a `[tls]` or `[hsms]` section needs its listener.
fn tls_for(cfg: &Config, l: &Listeners) -> Result<Option<Arc<ArcSwap<TlsAcceptor>>>, SetupError> {
    if let (Some(h), None) = (&cfg.hsms, &l.hsms) {
        return Err(SetupError::HsmsNotListening(h.listen.to_string()));
    }
    match (&cfg.tls, &l.tls) {
        (Some(t), Some(_)) => Ok(Some(Arc::new(ArcSwap::from_pointee(tls::acceptor(t)?)))),
        (Some(t), None) => Err(SetupError::TlsNotListening(t.listen.to_string())),
        (None, _) => Ok(None),
    }
}

/// Holds a listener back until every service has loaded (when `services` is set), at most
/// `bound` when set.
struct Gate {
    services: Option<Arc<Vec<Arc<Service>>>>,
    bound: Option<Duration>,
    shutdown: watch::Receiver<bool>,
}

impl Gate {
    fn spawn(
        &self,
        on: &Handle,
        serve: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let (services, mut shutdown) = (self.services.clone(), self.shutdown.clone());
        let bound = self.bound;
        on.spawn(async move {
            if let Some(services) = services {
                let loaded = async {
                    match bound {
                        Some(b) => drop(tokio::time::timeout(b, all_loaded(&services)).await),
                        None => all_loaded(&services).await,
                    }
                };
                tokio::select! {
                    _ = loaded => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
            serve.await
        })
    }
}

/// Returns once every service's source has offered its first view: pools, or none (a service
/// Consul does not know must not hold an upgrade back: the running process serves it no better).
async fn all_loaded(services: &[Arc<Service>]) {
    let loaded = |s: &Service| s.publisher.offered();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !services.iter().all(|s| loaded(s)) {
        tick.tick().await;
    }
}

/// The listener for this runtime (worker 0), and one descriptor of the same socket registered
/// with each worker's runtime, in worker order: every worker accepts from the one queue.
fn spread(
    listener: TcpListener,
    workers: &[Handle],
) -> std::io::Result<Vec<(Handle, TcpListener)>> {
    let dups = workers
        .iter()
        .map(|w| {
            let fd = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
            let _in = w.enter();
            Ok((w.clone(), TcpListener::from_std(fd)?))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(std::iter::once((Handle::current(), listener))
        .chain(dups)
        .collect())
}

/// Duplicates every listener's socket (the same socket, another descriptor).
fn offer(l: &Listeners) -> std::io::Result<Vec<(&'static str, OwnedFd)>> {
    let mut out = vec![("public", l.public.as_fd().try_clone_to_owned()?)];
    for (name, sock) in [("admin", &l.admin), ("tls", &l.tls), ("hsms", &l.hsms)] {
        if let Some(s) = sock {
            out.push((name, s.as_fd().try_clone_to_owned()?));
        }
    }
    Ok(out)
}

fn source_name(c: &SourceConfig) -> String {
    match c {
        SourceConfig::File(f) => format!("file {}", f.path.display()),
        SourceConfig::Consul(s) => format!("consul {} service {}", s.address, s.service),
    }
}
