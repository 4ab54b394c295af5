//! The `consul` source: one blocking `GET /v1/health/service/<name>?passing` (no `tag=`: two tagged
//! queries have independent indexes and can disagree), split into pools in the client — by tag, or
//! by the group a Consul KV key names (`active_selector = "kv"`, one atomic write switches every
//! proxy). Each watch runs under a watchdog; errors back off and the last good pools keep serving.

mod client;
mod parse;
mod tls;
pub mod watch;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use client::{ConsulClient, ConsulError, Reply};
pub use parse::{all_entries, health_entries, CheckState, Parsed, ParsedEntry, VersionRule};
use watch::{IndexEvent, Watch};

use super::source::{split_by_tags, Reports, UpstreamSource};
use crate::config::{
    process_env, ActiveSelector, Consistency, ConsulSourceConfig, PoolsConfig, SetupError,
};
use crate::core::{Candidates, Instance, SourceInfo};
use crate::telemetry::metrics::Lv;

/// A recovery probe that takes longer than this counts as Consul still down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds the client the source and the operator commands use: TLS and the ACL token resolved from
/// the config and the standard variables. Errors name the setting to fix.
pub fn client(cfg: &ConsulSourceConfig) -> Result<ConsulClient, SetupError> {
    client_with_token(cfg, resolve_token(cfg)?)
}

/// As [`client`], with the token given.
pub fn client_with_token(
    cfg: &ConsulSourceConfig,
    token: Option<String>,
) -> Result<ConsulClient, SetupError> {
    let tls = if cfg.address.https {
        Some(tls::build(&cfg.address, &cfg.tls)?)
    } else {
        None
    };
    ConsulClient::new(cfg.address.clone(), token, tls)
}

fn resolve_token(cfg: &ConsulSourceConfig) -> Result<Option<String>, SetupError> {
    Ok(match cfg
        .token_file
        .clone()
        .or_else(|| process_env("CONSUL_HTTP_TOKEN_FILE").map(Into::into))
    {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    let message = format!("cannot read the Consul token file {}: {e} (source.token_file / CONSUL_HTTP_TOKEN_FILE)", path.display());
                    SetupError::file("source.token_file", &path, message)
                })?
                .trim()
                .to_string(),
        ),
        None => process_env("CONSUL_HTTP_TOKEN"),
    })
}

pub struct ConsulSource {
    cfg: ConsulSourceConfig,
    pools: PoolsConfig,
    client: Arc<ConsulClient>,
    versions: VersionRule,
    /// Where the ACL token came from, for a 403's message.
    token_source: String,
}

/// Where the ACL token is taken from (the same order [`resolve_token`] follows).
fn token_source(cfg: &ConsulSourceConfig) -> String {
    if let Some(p) = &cfg.token_file {
        return format!("the token file {} (source.token_file)", p.display());
    }
    if let Some(p) = process_env("CONSUL_HTTP_TOKEN_FILE") {
        return format!("the token file {p} (CONSUL_HTTP_TOKEN_FILE)");
    }
    if process_env("CONSUL_HTTP_TOKEN").is_some() {
        return "CONSUL_HTTP_TOKEN".into();
    }
    "no token (the anonymous token; set CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE or source.token_file)".into()
}

impl ConsulSource {
    pub fn new(cfg: ConsulSourceConfig, pools: PoolsConfig) -> Result<ConsulSource, SetupError> {
        Ok(ConsulSource {
            client: Arc::new(client(&cfg)?),
            versions: VersionRule::new(&cfg.version_meta_key, &cfg.version_tag_pattern)
                .map_err(|e| SetupError::setting("source.version_tag_pattern", e))?,
            token_source: token_source(&cfg),
            cfg,
            pools,
        })
    }

    /// A 403 names where the token came from and the ACL rules the watch needs.
    fn explain(&self, e: ConsulError, key: bool) -> ConsulError {
        let ConsulError::Status { code: 403, message } = e else {
            return e;
        };
        let rules = if key {
            format!("key \"{}\" {{ policy = \"read\" }}", self.cfg.kv_key)
        } else {
            format!(
                "service \"{}\" {{ policy = \"read\" }} and node_prefix \"\" {{ policy = \"read\" }}",
                self.cfg.service
            )
        };
        ConsulError::Status {
            code: 403,
            message: format!(
                "{message}; token from {}; the watch needs a policy with {rules}",
                self.token_source
            ),
        }
    }

    fn query_suffix(&self) -> String {
        let mut q = String::new();
        if let Some(dc) = &self.cfg.datacenter {
            q.push_str("&dc=");
            q.push_str(&encode(dc));
        }
        if self.cfg.consistency == Consistency::Stale {
            q.push_str("&stale");
        }
        q
    }

    fn service_watch(&self) -> Watch {
        let c = &self.cfg;
        Watch::new(
            format!(
                "/v1/health/service/{}?passing{}{}",
                encode(&c.service),
                self.query_suffix(),
                if c.cached { "&cached" } else { "" }
            ),
            format!("service {}", c.service),
            c.wait,
            c.request_timeout(),
            c.min_interval,
            c.retry_max,
            false,
        )
    }

    fn key_watch(&self) -> Watch {
        let c = &self.cfg;
        let key: Vec<String> = c.kv_key.split('/').map(encode).collect();
        Watch::new(
            format!("/v1/kv/{}?raw{}", key.join("/"), self.query_suffix()),
            format!("key {}", c.kv_key),
            c.wait,
            c.request_timeout(),
            c.min_interval,
            c.retry_max,
            true,
        )
    }

    fn info(&self, index: Option<u64>) -> SourceInfo {
        SourceInfo {
            kind: "consul",
            origin: format!("{} service {}", self.cfg.address, self.cfg.service),
            index,
        }
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What one watch reports to the combiner.
enum Update {
    Service {
        instances: Vec<Instance>,
        index: u64,
    },
    Key {
        group: Option<String>,
    },
}

/// Aborts a child task when its owner is dropped (the source task is aborted on reload/shutdown).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// When the watch last made progress (an answer or an error), on tokio's clock so tests can pause
/// it; `u64::MAX` marks a watch that finished because its consumer is gone.
#[derive(Default)]
struct Progress(AtomicU64);

fn now_ms() -> u64 {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(tokio::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl Progress {
    fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }
    fn done(&self) {
        self.0.store(u64::MAX, Ordering::Relaxed);
    }
    fn is_done(&self) -> bool {
        self.0.load(Ordering::Relaxed) == u64::MAX
    }
    fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

impl UpstreamSource for ConsulSource {
    fn run(self: Box<Self>, out: Reports) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let me = Arc::new(*self);
            out.status.reset("consul", me.info(None).origin);
            let (tx, mut rx) = mpsc::channel::<Update>(16);
            let _service = AbortOnDrop(tokio::spawn(supervise(
                Arc::clone(&me),
                out.clone(),
                tx.clone(),
                false,
            )));
            let _key = (me.cfg.active_selector == ActiveSelector::Kv).then(|| {
                AbortOnDrop(tokio::spawn(supervise(
                    Arc::clone(&me),
                    out.clone(),
                    tx.clone(),
                    true,
                )))
            });
            drop(tx);
            let mut service: Option<(Vec<Instance>, u64)> = None;
            let mut group: Option<Option<String>> = None;
            let mut missing_logged = false;
            while let Some(update) = rx.recv().await {
                match update {
                    Update::Service { instances, index } => service = Some((instances, index)),
                    Update::Key { group: g } => group = Some(g),
                }
                let Some((instances, index)) = &service else {
                    continue;
                };
                let (active, standby) = match me.cfg.active_selector {
                    ActiveSelector::Tags => split_by_tags(instances.clone(), &me.pools),
                    ActiveSelector::Kv => match &group {
                        None => continue,
                        Some(None) => {
                            if !missing_logged {
                                tracing::error!(target: "zerodown::source", key = %me.cfg.kv_key, "the selector key is missing or empty: the pools stay as they are until it names the active group (consul kv put {} <group>)", me.cfg.kv_key);
                                missing_logged = true;
                            }
                            continue;
                        }
                        Some(Some(g)) => {
                            missing_logged = false;
                            split_by_group(instances, g)
                        }
                    },
                };
                out.publisher.offer(Candidates {
                    active,
                    standby,
                    source: me.info(Some(*index)),
                });
            }
        })
    }
}

/// The active group is the instances carrying the tag the key names (case-insensitively) or
/// running the version it names; every other instance is standby.
fn split_by_group(instances: &[Instance], group: &str) -> (Vec<Instance>, Vec<Instance>) {
    instances
        .iter()
        .cloned()
        .partition(|i| i.version == group || i.tags.iter().any(|t| t.eq_ignore_ascii_case(group)))
}

/// Runs one watch under the [`watchdog`], with a limit longer than any call plus backoff can take.
async fn supervise(me: Arc<ConsulSource>, out: Reports, tx: mpsc::Sender<Update>, key: bool) {
    let limit = me.cfg.request_timeout() + me.cfg.retry_max + Duration::from_secs(30);
    let status = Arc::clone(&out.status);
    watchdog(
        limit,
        move || status.restarted(),
        |progress| {
            let span = if key {
                tracing::info_span!("watch", key = %me.cfg.kv_key)
            } else {
                tracing::info_span!("watch", service = %me.cfg.service)
            };
            run_watch(Arc::clone(&me), out.clone(), tx.clone(), key, progress).instrument(span)
        },
    )
    .await;
}

/// Runs the task `make` builds; when it has not touched its [`Progress`] for `limit`, or ends
/// unexpectedly, aborts it and starts a fresh one. Returns when the task ends on its own accord
/// after reporting [`Progress::done`] (its consumer is gone).
async fn watchdog<F, Fut>(limit: Duration, on_restart: impl Fn(), mut make: F)
where
    F: FnMut(Arc<Progress>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let check = (limit / 8).max(Duration::from_millis(10));
    loop {
        let progress = Arc::new(Progress::default());
        progress.touch();
        let mut task = AbortOnDrop(tokio::spawn(make(Arc::clone(&progress))));
        loop {
            tokio::select! {
                _ = &mut task.0 => {
                    if progress.is_done() {
                        return;
                    }
                    tracing::error!(target: "zerodown::source", "consul watch ended unexpectedly: restarting it");
                    break;
                }
                _ = tokio::time::sleep(check) => {
                    if progress.age() > limit {
                        tracing::error!(target: "zerodown::source", stalled_ms = progress.age().as_millis() as u64, "consul watch made no progress: restarting it");
                        on_restart();
                        break;
                    }
                }
            }
        }
    }
}

async fn run_watch(
    me: Arc<ConsulSource>,
    out: Reports,
    tx: mpsc::Sender<Update>,
    key: bool,
    progress: Arc<Progress>,
) {
    let mut w = if key {
        me.key_watch()
    } else {
        me.service_watch()
    };
    let metrics = Arc::clone(&out.metrics);
    let service = out.publisher.service_label().clone();
    let label = [
        ("service", service.clone()),
        ("watch", Lv::S(if key { "kv" } else { "service" })),
    ];
    let _ = metrics.watch_errors.get_or_create(&label);
    loop {
        progress.touch();
        let started = std::time::Instant::now();
        let result = w.poll(&me.client).await;
        progress.touch();
        metrics.watch_requests.get_or_create(&label).inc();
        metrics
            .watch_duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        let update = result.and_then(|(reply, event)| {
            log_index_event(&w.what, event);
            if reply.known_leader == Some(false) {
                tracing::warn!(target: "zerodown::source", watch = %w.what, "Consul answered without a known leader: data may be stale");
            }
            if key {
                let value = String::from_utf8_lossy(&reply.body).trim().to_string();
                let group = (reply.status == http::StatusCode::OK && !value.is_empty()).then_some(value);
                return Ok(Update::Key { group });
            }
            let parsed = parse::health_entries(&reply.body, &me.versions)
                .map_err(|e| ConsulError::Parse(e.to_string()))?;
            for s in &parsed.skipped {
                tracing::debug!(target: "zerodown::source", reason = %s, "instance left out");
            }
            if reply.filtered_by_acls && parsed.instances.is_empty() {
                tracing::warn!(target: "zerodown::source", service = %me.cfg.service, token = %me.token_source, "Consul filtered every instance out by ACLs: the token lacks service \"<service>\" {{ policy = \"read\" }} (and node_prefix \"\" {{ policy = \"read\" }})");
            }
            // Consul answers an unknown service with an empty list, as one with no instance.
            let unknown = parsed.instances.is_empty()
                && parsed.skipped.is_empty()
                && !reply.filtered_by_acls;
            let note = unknown.then(|| {
                format!(
                    "Consul lists no instance of service {:?}: check the service name and that its instances are registered",
                    me.cfg.service
                )
            });
            if out.status.set_note(note.clone()) {
                if let Some(n) = &note {
                    tracing::warn!(target: "zerodown::source", service = %me.cfg.service, "{n}");
                }
            }
            Ok(Update::Service {
                instances: parsed.instances,
                index: w.index,
            })
        });
        match update {
            Ok(u) => {
                if !key {
                    metrics
                        .watch_last_index
                        .get_or_create(&[("service", service.clone())])
                        .set(w.index as i64);
                }
                let errors = out.status.ok((!key).then_some(w.index));
                if errors > 0 {
                    tracing::info!(target: "zerodown::source", watch = %w.what, after_errors = errors, "consul watch recovered");
                }
                w.backoff.reset();
                if tx.send(u).await.is_err() {
                    progress.done();
                    return;
                }
            }
            Err(e) => {
                let e = me.explain(e, key);
                metrics.watch_errors.get_or_create(&label).inc();
                let delay = w.failed();
                let msg = format!("{}: {e}", w.what);
                if out.status.error(&msg) {
                    tracing::error!(target: "zerodown::source", watch = %w.what, error = %e, retry_in_ms = delay.as_millis() as u64, "consul watch failed: the last good pools keep serving");
                }
                if e.is_unavailable() {
                    watch::wait_for_recovery(&me.client, delay, PROBE_TIMEOUT).await;
                } else {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

fn log_index_event(what: &str, event: IndexEvent) {
    match event {
        IndexEvent::Normal => {}
        IndexEvent::Zero => {
            tracing::warn!(target: "zerodown::source", watch = %what, "Consul sent index 0: using 1 to avoid a busy loop")
        }
        IndexEvent::Backwards { from, to } => {
            tracing::warn!(target: "zerodown::source", watch = %what, from, to, "Consul index went backwards (snapshot restore?): re-reading from the start")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn watchdog_restarts_a_stalled_watch_and_stops_when_done() {
        use std::sync::atomic::AtomicUsize;
        let restarts = Arc::new(AtomicUsize::new(0));
        let starts = Arc::new(AtomicUsize::new(0));
        let (r, s) = (Arc::clone(&restarts), Arc::clone(&starts));
        watchdog(
            Duration::from_secs(60),
            move || {
                r.fetch_add(1, Ordering::SeqCst);
            },
            move |progress: Arc<Progress>| {
                let n = s.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        // Stalls without ever reporting progress.
                        std::future::pending::<()>().await;
                    }
                    progress.done();
                }
            },
        )
        .await;
        assert_eq!(restarts.load(Ordering::SeqCst), 2);
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn encodes_path_parts() {
        assert_eq!(encode("hello-service"), "hello-service");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn group_split_by_tag_or_version() {
        let i = |id: &str, v: &str, t: &[&str]| Instance {
            id: id.into(),
            address: format!("{id}:1"),
            version: v.into(),
            tags: t.iter().map(|s| s.to_string()).collect(),
            hsms: None,
        };
        let all = vec![
            i("a", "v1", &["Blue"]),
            i("b", "v2", &["green"]),
            i("c", "v3", &[]),
        ];
        let (a, s) = split_by_group(&all, "blue");
        assert_eq!((a.len(), s.len()), (1, 2));
        let (a, _) = split_by_group(&all, "v3");
        assert_eq!(a[0].id, "c");
    }
}
