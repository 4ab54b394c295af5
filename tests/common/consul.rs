//! A daemon watching the in-process Consul double.

use std::net::SocketAddr;
use std::time::Duration;

use zerodown::config::{Config, ConsulAddress, ConsulSourceConfig, SourceConfig};
use zerodown::daemon::Daemon;
use zerodown_testkit::{CheckStatus, ConsulDouble, ServiceSpec};

pub const SERVICE: &str = "hello-service";

/// Consul source settings for tests: short waits and backoffs so failures resolve fast.
pub fn source(consul: &ConsulDouble) -> ConsulSourceConfig {
    let mut c = ConsulSourceConfig::from_env(SERVICE, &|_| None).unwrap();
    c.address = ConsulAddress::parse(&consul.url(), false).unwrap();
    c.wait = Duration::from_secs(2);
    c.min_interval = Duration::from_millis(10);
    c.retry_max = Duration::from_millis(200);
    c
}

/// Registers a demo backend as an instance of the service, passing its health check.
pub fn register(consul: &ConsulDouble, id: &str, addr: SocketAddr, version: &str, tags: &[&str]) {
    consul.register(
        ServiceSpec::new(id, SERVICE)
            .address(addr.ip().to_string())
            .port(addr.port())
            .tags(tags.iter().copied())
            .meta([("version", version)])
            .node(format!("node-{id}"), "127.0.0.1")
            .check(CheckStatus::Passing),
    );
}

/// Starts a daemon on the double; waits until the first pools are published.
pub async fn start(
    consul: &ConsulDouble,
    tweak: impl FnOnce(&mut ConsulSourceConfig, &mut Config),
) -> Daemon {
    let mut cfg = Config::default();
    cfg.log.access_log = false;
    let mut src = source(consul);
    tweak(&mut src, &mut cfg);
    cfg.source = SourceConfig::Consul(src);
    start_config(cfg).await
}

/// Starts a daemon on `cfg` (public and admin on 127.0.0.1:0); waits until the first pools are
/// published.
pub async fn start_config(cfg: Config) -> Daemon {
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Daemon::start(cfg, public, Some(admin)).unwrap();
    let mut rx = daemon.publisher().subscribe();
    tokio::time::timeout(super::DEADLINE, rx.wait_for(|g| *g >= 1))
        .await
        .expect("first pool never loaded")
        .unwrap();
    daemon
}
