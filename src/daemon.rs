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
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::config::{Config, SetupError};
use crate::core::discovery::{self, status::SourceStatus, Reports};
use crate::core::Publisher;
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
    pub publisher: Arc<Publisher>,
    /// What the running source last did (`/status`'s `source_status`).
    pub status: Arc<SourceStatus>,
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
    source: Mutex<JoinHandle<()>>,
    settings: watch::Sender<Arc<ListenerSettings>>,
    permits: Arc<Semaphore>,
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    drain: watch::Sender<Duration>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    admin: Option<JoinHandle<()>>,
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
        let addr = |l: &TcpListener| l.local_addr().map_err(SetupError::Listener);
        let public_addr = addr(&l.public)?;
        let tls_addr = l.tls.as_ref().map(addr).transpose()?;
        let admin_addr = l.admin.as_ref().map(addr).transpose()?;
        let hsms_addr = l.hsms.as_ref().map(addr).transpose()?;
        let tls = tls_for(&cfg, &l)?;
        let source = discovery::from_config(&cfg.source, &cfg.pools)?;
        let admin_token = cfg.server.admin_token()?;
        let listen_inode = crate::upgrade::fds::inode(&l.public);
        let offer = Arc::new(Offer::new(
            generation,
            offer(&l).map_err(SetupError::Listener)?,
        ));

        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(SourceStatus::default());
        let publisher = Arc::new(Publisher::new(
            cfg.pools.single_version,
            Arc::clone(&metrics),
        ));
        let source = spawn_source(source, &publisher, &status, &metrics);
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&publisher),
            Arc::clone(&metrics),
            Settings::from_config(&cfg),
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (settings, settings_rx) = watch::channel(Arc::new(ListenerSettings::from_config(&cfg)));
        let (drain, drain_rx) = watch::channel(cfg.server.drain_timeout);
        let permits = Arc::new(Semaphore::new(cfg.limits.max_connections));
        let shared = listener::Shared {
            proxy: Arc::clone(&proxy),
            settings: settings_rx,
            permits: Arc::clone(&permits),
            shutdown: shutdown_rx.clone(),
            drain: drain_rx,
        };
        // A successor shares its sockets with the running process: it must not take connections
        // until it can serve them, or they would get 503s while its first pools load.
        let gate = Gate {
            pools: (generation > 1).then(|| publisher.subscribe()),
            shutdown: shutdown_rx.clone(),
        };
        let mut listeners = vec![gate.spawn(listener::serve(l.public, None, shared.clone()))];
        if let (Some(sock), Some(t)) = (l.tls, &tls) {
            listeners.push(gate.spawn(listener::serve(sock, Some(Arc::clone(t)), shared)));
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
                listeners.push(gate.spawn(serve));
                Some(front)
            }
            _ => None,
        };
        let admin = l.admin.map(|sock| {
            let state = admin::AdminState::new(
                Arc::clone(&publisher),
                Arc::clone(&status),
                Arc::clone(&metrics),
                admin_token,
            )
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
            source = %source_name(&cfg),
            version = env!("CARGO_PKG_VERSION"),
            "zerodown started"
        );
        Ok(Daemon {
            proxy,
            publisher,
            status,
            metrics,
            public_addr,
            admin_addr,
            tls_addr,
            hsms_addr,
            hsms,
            generation,
            offer,
            config: Mutex::new(cfg),
            source: Mutex::new(source),
            settings,
            permits,
            tls,
            drain,
            shutdown,
            listeners,
            admin,
        })
    }

    /// Applies a new, already validated config without dropping a connection. Listener addresses
    /// cannot change in place; a change is logged and needs a restart. A source that cannot be
    /// built rejects the whole reload, so nothing changes.
    pub fn reload(&self, new: Config) -> Result<(), SetupError> {
        let mut cur = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let source = if new.source != cur.source || new.pools != cur.pools {
            Some(discovery::from_config(&new.source, &new.pools)?)
        } else {
            None
        };
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
        self.proxy.reload(Settings::from_config(&new));
        self.publisher.set_single_version(new.pools.single_version);
        self.settings
            .send_replace(Arc::new(ListenerSettings::from_config(&new)));
        self.drain.send_replace(new.server.drain_timeout);
        if let Some(source) = source {
            let mut task = self.source.lock().unwrap_or_else(|p| p.into_inner());
            task.abort();
            *task = spawn_source(source, &self.publisher, &self.status, &self.metrics);
            tracing::info!(target: "zerodown::server", source = %source_name(&new), "upstream source restarted");
        }
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
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort();
        if let Some(a) = self.admin {
            a.abort();
        }
    }
}

impl Daemon {
    /// Copies of the listening sockets, for a successor (see [`crate::upgrade`]).
    pub fn offer(&self) -> Arc<Offer> {
        Arc::clone(&self.offer)
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

/// Runs `source`, reporting to the publisher, the source status and the metrics.
fn spawn_source(
    source: Box<dyn discovery::UpstreamSource>,
    publisher: &Arc<Publisher>,
    status: &Arc<SourceStatus>,
    metrics: &Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(source.run(Reports {
        publisher: Arc::clone(publisher),
        status: Arc::clone(status),
        metrics: Arc::clone(metrics),
    }))
}

/// Holds a listener back until the first pools are loaded (when `pools` is set).
struct Gate {
    pools: Option<watch::Receiver<u64>>,
    shutdown: watch::Receiver<bool>,
}

impl Gate {
    fn spawn(&self, serve: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        let (pools, mut shutdown) = (self.pools.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            if let Some(mut pools) = pools {
                tokio::select! {
                    _ = pools.wait_for(|g| *g >= 1) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
            serve.await
        })
    }
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

fn source_name(c: &Config) -> String {
    match &c.source {
        crate::config::SourceConfig::File(f) => format!("file {}", f.path.display()),
        crate::config::SourceConfig::Consul(s) => {
            format!("consul {} service {}", s.address, s.service)
        }
    }
}
