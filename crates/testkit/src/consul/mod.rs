//! [`ConsulDouble`]: an in-process Consul agent HTTP API with real blocking-query
//! semantics and injectable faults. Control methods are synchronous and take `&self`, so a
//! test can change the catalog while a client is parked on a blocking query.

mod checks;
mod endpoints;
mod faults;
mod http;
mod kv;
mod params;
mod register;
mod render;
mod server;
mod shared;
mod spec;
mod state;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};

pub use faults::{Fault, Times, TRICKLE_CHUNK};
pub use kv::KvEntry;
pub use shared::{RecordedRequest, TokenPolicy};
pub use spec::{CheckSpec, CheckStatus, ServiceSpec, AGENT_ADDRESS, AGENT_NODE};

use crate::kit::server::AcceptTask;
use shared::{lock, Rng, Shared};

/// A running Consul double. Dropping it stops the listener and closes every connection.
pub struct ConsulDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The accept loop; stopped during an outage.
    accept: AcceptTask,
}

impl ConsulDouble {
    /// Starts on `127.0.0.1:0` (an ephemeral port).
    pub async fn start() -> io::Result<Self> {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on `addr`; must be called inside a Tokio runtime.
    pub async fn start_on(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let task = server::spawn_accept(shared.clone(), listener);
        let accept = AcceptTask::new(task);
        Ok(ConsulDouble {
            shared,
            addr,
            accept,
        })
    }

    /// The bound address (stable across outages).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, the value a client's Consul address setting takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers or updates (same ID: in place, one index bump) an instance, as the agent
    /// endpoint does with `replace-existing-checks`. Returns the write's index.
    pub fn register(&self, spec: ServiceSpec) -> u64 {
        self.shared.core.write(|s| s.register(spec, true))
    }

    /// Removes an instance; `false` (and no write) if the ID is unknown.
    pub fn deregister(&self, id: &str) -> bool {
        self.shared.core.write(|s| s.deregister(id)).is_some()
    }

    /// Replaces an instance's tags in place with one index bump; `false` if unknown.
    pub fn set_tags<I, S>(&self, id: &str, tags: I) -> bool
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tags = tags.into_iter().map(Into::into).collect();
        self.shared.core.write(|s| s.set_tags(id, tags)).is_some()
    }

    /// Sets the status of every service check of instance `id`; `false` if unknown.
    pub fn set_check(&self, id: &str, status: CheckStatus) -> bool {
        self.shared
            .core
            .write(|s| s.set_check(id, status))
            .is_some()
    }

    /// Puts instance `id` in maintenance mode (`Some(reason)`) or takes it out (`None`), like
    /// `consul maint -service=<id>`; `false` if the instance is unknown.
    pub fn set_maintenance(&self, id: &str, reason: Option<&str>) -> bool {
        self.shared
            .core
            .write(|s| s.set_service_maintenance(id, reason))
            .is_some()
    }

    /// Puts node `node` in maintenance mode or takes it out (`consul maint` on its agent);
    /// `false` if the node is unknown.
    pub fn set_node_maintenance(&self, node: &str, reason: Option<&str>) -> bool {
        self.shared
            .core
            .write(|s| s.set_node_maintenance(node, reason))
            .is_some()
    }

    /// Sets a node's `serfHealth`; `false` if the node is unknown.
    pub fn set_node_health(&self, node: &str, status: CheckStatus) -> bool {
        self.shared
            .core
            .write(|s| s.set_node_health(node, status))
            .is_some()
    }

    /// IDs of the instances of service `name`, ordered by node then ID.
    pub fn service_ids(&self, name: &str) -> Vec<String> {
        let all = self.shared.core.read(|s| s.instances(name));
        all.into_iter().map(|(_, i)| i.spec.id).collect()
    }

    /// Applies tag changes one instance at a time with `gap` between them, as Nomad clients
    /// do (use [`random_order`] for an arbitrary order). Returns how many IDs were known.
    pub async fn flip_tags<I>(&self, changes: I, gap: Duration) -> usize
    where
        I: IntoIterator<Item = (String, Vec<String>)>,
    {
        let mut applied = 0;
        for (n, (id, tags)) in changes.into_iter().enumerate() {
            if n > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            applied += usize::from(self.set_tags(&id, tags));
        }
        applied
    }

    /// Writes a KV key unconditionally; returns its new `ModifyIndex`.
    pub fn kv_put(&self, key: &str, value: impl Into<Vec<u8>>) -> u64 {
        let value = value.into();
        self.shared.core.write(|s| {
            s.kv_put(key, value, 0, None);
            s.index
        })
    }

    /// Check-and-set write with Consul's rules (`cas = 0`: only if absent).
    pub fn kv_cas(&self, key: &str, value: impl Into<Vec<u8>>, cas: u64) -> bool {
        let value = value.into();
        self.shared
            .core
            .write(|s| s.kv_put(key, value, 0, Some(cas)))
    }

    /// Deletes a key; `false` if it did not exist.
    pub fn kv_delete(&self, key: &str) -> bool {
        self.shared.core.write(|s| {
            let existed = s.kv.contains_key(key);
            s.kv_delete(key, None, false);
            existed
        })
    }

    pub fn kv_get(&self, key: &str) -> Option<KvEntry> {
        self.shared.core.read(|s| s.kv_get(key).1)
    }

    /// The global Raft index.
    pub fn index(&self) -> u64 {
        self.shared.core.read(|s| s.index)
    }

    /// The `X-Consul-Index` a health query for `name` would report now.
    pub fn service_index(&self, name: &str) -> u64 {
        self.shared.core.read(|s| s.index_for_service(name))
    }

    /// Adds a fault for requests on any path.
    pub fn inject(&self, fault: Fault, times: Times) {
        self.inject_on("/", fault, times);
    }

    /// Adds a fault for requests whose path starts with `prefix` (e.g. `/v1/health/`).
    /// Every matching request uses up one of `Times::Next(n)`, whatever its method; faults
    /// of different kinds combine (e.g. `LastContact` with `TrickleBody`).
    /// `IndexBackwards` and `SpuriousWakeup` act on the store at once instead.
    pub fn inject_on(&self, prefix: &str, fault: Fault, times: Times) {
        match fault {
            Fault::IndexBackwards(to) => self.snapshot_restore(to),
            Fault::SpuriousWakeup => {
                self.spurious_wakeup();
            }
            other => lock(&self.shared.faults).add(prefix, other, times),
        }
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Moves every service and missing-key index forward with no data change.
    pub fn spurious_wakeup(&self) -> u64 {
        self.shared.core.write(|s| s.touch_all())
    }

    /// A snapshot restore: the index drops to `to` and parked queries return at once.
    pub fn snapshot_restore(&self, to: u64) {
        self.shared.core.write(|s| s.restore(to));
    }

    /// Renders `TaggedAddresses` entries with lowercase `address`/`port` keys, as the docs
    /// samples do (servers send `Address`/`Port`).
    pub fn set_lowercase_tagged_addresses(&self, on: bool) {
        self.shared.lowercase_tagged.store(on, Ordering::Relaxed);
    }

    /// `true`: the listener is closed and every connection dropped, so connecting fails
    /// with ECONNREFUSED. `false`: the same port is bound again.
    pub async fn outage(&self, on: bool) -> io::Result<()> {
        if on {
            if let Some(task) = self.accept.stop() {
                let _ = task.await; // resolves once the listener has been dropped
            }
            self.shared.core.kill_connections();
            return Ok(());
        }
        if self.accept.is_running() {
            return Ok(());
        }
        let listener = server::rebind(self.addr).await?;
        let task = server::spawn_accept(self.shared.clone(), listener);
        self.accept.restart(task);
        Ok(())
    }

    /// Turns ACLs on with `token` as a full-access token, or off with `None`.
    pub fn set_required_token(&self, token: Option<&str>) {
        lock(&self.shared.acl).require(token, TokenPolicy::ALL);
    }

    /// Adds a token with limited rights (effective while ACLs are on).
    pub fn add_token(&self, token: &str, policy: TokenPolicy) {
        lock(&self.shared.acl).add(token, policy);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.all()
    }

    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// Requests received on `/v1/health/service/…`, whatever their outcome.
    pub fn health_queries(&self) -> usize {
        self.shared.health_queries.load(Ordering::Relaxed)
    }

    /// Blocking queries parked right now.
    pub fn parked(&self) -> usize {
        self.shared.core.parked()
    }

    /// Waits until at least `n` blocking queries are parked; `false` if `within` elapses.
    pub async fn wait_for_parked(&self, n: usize, within: Duration) -> bool {
        self.shared.core.wait_for_parked(n, within).await
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.accept.stop();
        self.shared.core.kill_connections();
    }
}

/// Shuffles `items` reproducibly from `seed`, to simulate Nomad's arbitrary sync order.
pub fn random_order<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
    let mut rng = Rng::new(seed);
    for i in (1..items.len()).rev() {
        let j = usize::try_from(rng.up_to(i as u64)).unwrap_or(0);
        items.swap(i, j);
    }
    items
}
