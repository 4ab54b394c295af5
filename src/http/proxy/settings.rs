//! The parts of the config the request path reads.

use std::sync::Arc;
use std::time::Duration;

use super::route::RouteTable;
use crate::config::{Cidr, Config, Underscores};
use crate::core::Service;
use crate::http::upstream::ConnLimits;

/// The parts of the config the request path reads, swapped whole on reload.
#[derive(Debug)]
pub struct Settings {
    pub routes: RouteTable<Arc<Service>>,
    pub health_path: Option<String>,
    pub limits: ConnLimits,
    pub response_timeout: Duration,
    pub first_chunk_wait: Duration,
    pub max_attempts: usize,
    pub eject_after: u32,
    pub eject_for: Duration,
    pub access_log: bool,
    pub access_sample: f64,
    pub max_body_bytes: u64,
    pub body_idle_timeout: Duration,
    pub body_timeout: Duration,
    pub body_min_rate: u64,
    pub body_min_rate_grace: Duration,
    pub underscores: Underscores,
    pub trusted_proxies: Vec<Cidr>,
}

impl Settings {
    /// `services` holds every service the config names, the primary first.
    pub fn from_config(c: &Config, services: &[Arc<Service>]) -> Settings {
        let primary = c.primary_service();
        let service_of = |r: &crate::config::Route| {
            let name = r.service.as_deref().unwrap_or(primary);
            // The config was validated and the daemon built a service for every name in it, so
            // the primary is only a fallback that cannot be reached.
            let found = services.iter().find(|s| s.name() == name);
            Arc::clone(found.unwrap_or(&services[0]))
        };
        Settings {
            routes: RouteTable::with_targets(c.routes.clone(), service_of),
            health_path: c.server.health_path.clone(),
            limits: ConnLimits {
                connect_timeout: c.upstream.connect_timeout,
                idle_timeout: c.upstream.idle_timeout,
                max_idle: c.upstream.max_idle_per_instance,
                max_response_head: c.limits.max_upstream_header_bytes,
            },
            response_timeout: c.upstream.response_timeout,
            first_chunk_wait: c.upstream.first_chunk_wait,
            max_attempts: c.upstream.max_attempts,
            eject_after: c.upstream.eject_after,
            eject_for: c.upstream.eject_for,
            access_log: c.log.access_log,
            access_sample: c.log.access_sample,
            max_body_bytes: c.limits.max_body_bytes,
            body_idle_timeout: c.limits.body_idle_timeout,
            body_timeout: c.limits.body_timeout,
            body_min_rate: c.limits.body_min_rate,
            body_min_rate_grace: c.limits.body_min_rate_grace,
            underscores: c.limits.underscore_headers,
            trusted_proxies: c.limits.trusted_proxies.clone(),
        }
    }
}
