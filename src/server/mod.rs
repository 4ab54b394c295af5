//! The running daemon: wires config, source, publisher, proxy and listeners together, applies
//! reloads, and drains on shutdown. Signals are translated into calls here by the CLI, which keeps
//! this testable in-process.

pub mod listener;
pub mod strict;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::config::Config;
use crate::discovery;
use crate::pool::Publisher;
use crate::proxy::{Proxy, Settings};
pub use listener::ListenerSettings;

/// A started daemon.
pub struct Daemon {
    pub proxy: Arc<Proxy>,
    pub publisher: Arc<Publisher>,
    pub public_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
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
    /// Starts serving on already-bound listeners (bind `127.0.0.1:0` in tests). Fails when the
    /// source cannot be built (e.g. an unreadable CA or token file), naming it.
    pub fn start(
        cfg: Config,
        public: TcpListener,
        admin: Option<TcpListener>,
    ) -> Result<Daemon, String> {
        Daemon::start_with_tls(cfg, public, admin, None)
    }

    /// As [`Daemon::start`], plus the HTTPS listener `cfg.tls` asks for (bound by the caller).
    pub fn start_with_tls(
        cfg: Config,
        public: TcpListener,
        admin: Option<TcpListener>,
        tls_listener: Option<TcpListener>,
    ) -> Result<Daemon, String> {
        let public_addr = public.local_addr().map_err(|e| e.to_string())?;
        let tls_addr = tls_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|e| e.to_string())?;
        let tls = match (&cfg.tls, &tls_listener) {
            (Some(t), Some(_)) => Some(Arc::new(ArcSwap::from_pointee(tls::acceptor(t)?))),
            (Some(t), None) => {
                return Err(format!(
                    "tls is configured but nothing listens on {}",
                    t.listen
                ))
            }
            (None, _) => None,
        };
        let admin_addr = admin
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|e| e.to_string())?;
        let source = discovery::from_config(&cfg.source, &cfg.pools)?;
        let publisher = Arc::new(Publisher::new(cfg.pools.single_version));
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&publisher),
            Settings::from_config(&cfg),
        ));
        let source = tokio::spawn(source.run(Arc::clone(&publisher)));
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
        let mut listeners = vec![tokio::spawn(listener::serve(public, None, shared.clone()))];
        if let (Some(l), Some(t)) = (tls_listener, &tls) {
            listeners.push(tokio::spawn(listener::serve(
                l,
                Some(Arc::clone(t)),
                shared,
            )));
        }
        let admin_token = match &cfg.server.admin_token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        format!("server.admin_token_file: cannot read {}: {e}", p.display())
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let admin = admin.map(|l| {
            tokio::spawn(admin::serve(
                l,
                admin::AdminState::new(Arc::clone(&publisher), admin_token),
                shutdown_rx,
            ))
        });
        tracing::info!(
            target: "zerodown::server",
            listen = %public_addr,
            admin = ?admin_addr,
            tls = ?tls_addr,
            source = %source_name(&cfg),
            version = env!("CARGO_PKG_VERSION"),
            "zerodown started"
        );
        Ok(Daemon {
            proxy,
            publisher,
            public_addr,
            admin_addr,
            tls_addr,
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
    pub fn reload(&self, new: Config) -> Result<(), String> {
        let mut cur = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let source = if new.source != cur.source || new.pools != cur.pools {
            Some(discovery::from_config(&new.source, &new.pools)?)
        } else {
            None
        };
        // Certificates are re-read on every reload (renewals keep the same paths).
        let acceptor = match (&new.tls, &self.tls) {
            (Some(t), Some(_)) => Some(tls::acceptor(t)?),
            (Some(_), None) => {
                return Err(
                    "tls was added to the config: restart zerodown to open the HTTPS listener"
                        .into(),
                )
            }
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
        self.proxy.reload(Settings::from_config(&new));
        self.publisher.set_single_version(new.pools.single_version);
        self.settings
            .send_replace(Arc::new(ListenerSettings::from_config(&new)));
        self.drain.send_replace(new.server.drain_timeout);
        if let Some(source) = source {
            let mut task = self.source.lock().unwrap_or_else(|p| p.into_inner());
            task.abort();
            *task = tokio::spawn(source.run(Arc::clone(&self.publisher)));
            tracing::info!(target: "zerodown::server", source = %source_name(&new), "upstream source restarted");
        }
        *cur = new;
        tracing::info!(target: "zerodown::server", "configuration reloaded");
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish within the drain timeout, then stops.
    pub async fn shutdown(self) {
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

fn source_name(c: &Config) -> String {
    match &c.source {
        crate::config::SourceConfig::File(f) => format!("file {}", f.path.display()),
        crate::config::SourceConfig::Consul(s) => {
            format!("consul {} service {}", s.address, s.service)
        }
    }
}
