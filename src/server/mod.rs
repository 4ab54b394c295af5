//! The running daemon: wires config, source, publisher, proxy and listeners together, applies
//! reloads, and drains on shutdown. Signals are translated into calls here by the CLI, which keeps
//! this testable in-process.

pub mod listener;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::Config;
use crate::discovery;
use crate::pool::Publisher;
use crate::proxy::{Proxy, Settings};
pub use listener::ClientLimits;

/// A started daemon.
pub struct Daemon {
    pub proxy: Arc<Proxy>,
    pub publisher: Arc<Publisher>,
    pub public_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    config: Mutex<Config>,
    source: Mutex<JoinHandle<()>>,
    limits: watch::Sender<ClientLimits>,
    drain: watch::Sender<Duration>,
    shutdown: watch::Sender<bool>,
    public: JoinHandle<()>,
    admin: Option<JoinHandle<()>>,
}

fn client_limits(c: &Config) -> ClientLimits {
    ClientLimits {
        header_timeout: c.server.header_timeout,
        keepalive_timeout: c.server.keepalive_timeout,
    }
}

impl Daemon {
    /// Starts serving on already-bound listeners (bind `127.0.0.1:0` in tests). Fails when the
    /// source cannot be built (e.g. an unreadable CA or token file), naming it.
    pub fn start(
        cfg: Config,
        public: TcpListener,
        admin: Option<TcpListener>,
    ) -> Result<Daemon, String> {
        let public_addr = public.local_addr().map_err(|e| e.to_string())?;
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
        let (limits, limits_rx) = watch::channel(client_limits(&cfg));
        let (drain, drain_rx) = watch::channel(cfg.server.drain_timeout);
        let public = tokio::spawn(listener::serve(
            public,
            Arc::clone(&proxy),
            limits_rx,
            shutdown_rx.clone(),
            drain_rx,
        ));
        let admin = admin.map(|l| {
            tokio::spawn(admin::serve(
                l,
                admin::AdminState::new(Arc::clone(&publisher)),
                shutdown_rx,
            ))
        });
        tracing::info!(
            target: "zerodown::server",
            listen = %public_addr,
            admin = ?admin_addr,
            source = %source_name(&cfg),
            version = env!("CARGO_PKG_VERSION"),
            "zerodown started"
        );
        Ok(Daemon {
            proxy,
            publisher,
            public_addr,
            admin_addr,
            config: Mutex::new(cfg),
            source: Mutex::new(source),
            limits,
            drain,
            shutdown,
            public,
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
        if new.server.listen != cur.server.listen
            || new.server.admin_listen != cur.server.admin_listen
        {
            tracing::warn!(target: "zerodown::server", "listen addresses changed in the config: restart zerodown to apply them");
        }
        self.proxy.reload(Settings::from_config(&new));
        self.publisher.set_single_version(new.pools.single_version);
        self.limits.send_replace(client_limits(&new));
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
        let _ = self.public.await;
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
