//! What every source implements and shares: the [`UpstreamSource`] trait, where it reports
//! ([`Reports`]), and the split of an instance set into pools by tag.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::status::SourceStatus;
use crate::config::PoolsConfig;
use crate::core::{Instance, Publisher};
use crate::telemetry::metrics::Metrics;

/// Where a running source reports: every new view to the publisher, its health to the status
/// `/status` shows, its calls to the metrics.
#[derive(Clone)]
pub struct Reports {
    pub publisher: Arc<Publisher>,
    pub status: Arc<SourceStatus>,
    pub metrics: Arc<Metrics>,
}

/// A source of upstream instances, run as one task until aborted.
pub trait UpstreamSource: Send + 'static {
    /// Watches the source forever, offering every new view to `out.publisher`. Errors are logged
    /// and retried inside; returning would leave the pools frozen, so implementations never return.
    fn run(self: Box<Self>, out: Reports) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Splits instances into (active, standby) by tag, compared case-insensitively as Consul does.
/// An instance carrying neither tag serves nowhere.
pub fn split_by_tags(
    instances: Vec<Instance>,
    pools: &PoolsConfig,
) -> (Vec<Instance>, Vec<Instance>) {
    let has = |i: &Instance, tag: &str| i.tags.iter().any(|t| t.eq_ignore_ascii_case(tag));
    let standby = instances
        .iter()
        .filter(|i| has(i, &pools.standby_tag))
        .cloned()
        .collect();
    let active = instances
        .into_iter()
        .filter(|i| has(i, &pools.active_tag))
        .collect();
    (active, standby)
}
