//! File format → validated [`Config`]. Each check names the key, the problem and the fix.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::consul::{
    process_env, ActiveSelector, Consistency, ConsulAddress, ConsulSourceConfig, Env,
};
use super::duration;
use super::error::ConfigError;
use super::error::Source;
use super::file::{
    FileConfig, HsmsSection, Http2Section, LimitsSection, LogSection, PoolsSection, RouteSection,
    ServerSection, ServiceSection, SourceSection, UpstreamSection,
};
use super::hsms::{HsmsConfig, HsmsMode};
use super::limits::{Cidr, Http2Config, LimitsConfig, TlsConfig, Underscores};
use super::model::{
    Config, FileSourceConfig, LogConfig, LogFormat, PoolName, PoolsConfig, Route, ServerConfig,
    ServiceConfig, SourceConfig, UpstreamConfig,
};

type Opt<T> = Option<Spanned<T>>;

pub(super) fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
    let src = Source { origin, text };
    let raw: FileConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    let mut cfg = Config::default();
    server(&src, raw.server, base, &mut cfg.server)?;
    limits(&src, raw.limits, &mut cfg.limits)?;
    http2(&src, raw.http2, &mut cfg.http2)?;
    if let Some(t) = raw.tls {
        let t = t.into_inner();
        cfg.tls = Some(TlsConfig {
            listen: addr(&src, &t.listen, "tls.listen")?,
            cert: base.join(t.cert.get_ref()),
            key: base.join(t.key.get_ref()),
        });
    }

    if let Some(h) = raw.hsms {
        cfg.hsms = Some(hsms(&src, h)?);
    }
    log(&src, raw.log, &mut cfg.log)?;
    upstream(&src, raw.upstream, &mut cfg.upstream)?;
    pools(&src, raw.pools, &mut cfg.pools)?;
    if let Some(source) = raw.source {
        cfg.source = source_config(&src, source, base)?;
    }
    if let Some(services) = raw.services {
        cfg.services = services
            .into_iter()
            .map(|s| service(&src, s, &cfg, base))
            .collect::<Result<_, _>>()?;
    }
    if let Some(routes) = raw.routes {
        cfg.routes = route_table(&src, routes, &cfg.service_names())?;
    }
    every_service_routed(&src, &cfg)?;
    Ok(cfg)
}

/// `[[services]]`: a name no other service has; the rest follows `[source]` and `[pools]`.
fn service(
    src: &Source,
    s: ServiceSection,
    cfg: &Config,
    base: &Path,
) -> Result<ServiceConfig, ConfigError> {
    let span = Some(s.name.span());
    let name = s.name.get_ref().trim().to_string();
    if name.is_empty() || name.contains(['/', '?', '#', ' ', '"']) {
        return Err(src.at(
            span,
            format!("services.name: {name:?} is not a service name (non-empty; no '/', '?', '#', quote or space)"),
        ));
    }
    if cfg.service_names().contains(&name.as_str()) {
        return Err(src.at(
            span,
            format!(
                "services.name: {name:?} is already a service (the primary one comes from [source]): give each service its own name"
            ),
        ));
    }
    let source = match (&cfg.source, s.path, s.kv_key) {
        (SourceConfig::File(f), Some(path), None) => SourceConfig::File(FileSourceConfig {
            path: base.join(path.get_ref()),
            poll_interval: f.poll_interval,
        }),
        (SourceConfig::File(_), None, _) => {
            return Err(src.at(
                span,
                format!("services: {name:?} has no path: with the file source each service needs its own upstreams file (path = \"{name}-upstreams.toml\")"),
            ))
        }
        (SourceConfig::File(_), Some(_), Some(k)) => {
            return Err(src.at(
                Some(k.span()),
                "services.kv_key: does not apply to the file source",
            ))
        }
        (SourceConfig::Consul(_), Some(p), _) => {
            return Err(src.at(
                Some(p.span()),
                format!("services.path: does not apply to the consul source (zerodown watches the Consul service {name:?})"),
            ))
        }
        (SourceConfig::Consul(c), None, kv_key) => {
            let mut c = c.clone();
            c.kv_key = format!("zerodown/{name}/active");
            set(&mut c.kv_key, kv_key, |v| kv_key_value(src, v, "services.kv_key"))?;
            c.service = name.clone();
            SourceConfig::Consul(c)
        }
    };
    let mut pools = cfg.pools.clone();
    set(&mut pools.active_tag, s.active_tag, |v| {
        tag(src, v, "services.active_tag")
    })?;
    set(&mut pools.standby_tag, s.standby_tag, |v| {
        tag(src, v, "services.standby_tag")
    })?;
    if pools.active_tag.eq_ignore_ascii_case(&pools.standby_tag) {
        return Err(src.at(
            span,
            format!(
                "services: {name:?} has the same active and standby tag ({:?}): give the two pools different tags",
                pools.active_tag
            ),
        ));
    }
    Ok(ServiceConfig {
        name,
        source,
        pools,
    })
}

/// A service no route sends to would be watched for nothing: most likely a forgotten route.
fn every_service_routed(src: &Source, cfg: &Config) -> Result<(), ConfigError> {
    for s in &cfg.services {
        if !cfg
            .routes
            .iter()
            .any(|r| r.service.as_deref() == Some(&s.name))
        {
            return Err(src.at(
                None,
                format!(
                    "services: {:?} has no route: add [[routes]] with service = {:?} (and a prefix or host), or remove the service",
                    s.name, s.name
                ),
            ));
        }
    }
    Ok(())
}

/// `[server]`.
fn server(
    src: &Source,
    s: ServerSection,
    base: &Path,
    cfg: &mut ServerConfig,
) -> Result<(), ConfigError> {
    set(&mut cfg.listen, s.listen, |v| addr(src, v, "server.listen"))?;
    set(&mut cfg.admin_listen, s.admin_listen, |v| {
        addr(src, v, "server.admin_listen")
    })?;
    if let Some(v) = s.health_path {
        cfg.health_path = if v.get_ref().is_empty() {
            None
        } else {
            Some(path_prefix(src, &v, "server.health_path")?)
        };
    }
    set(&mut cfg.threads, s.threads, |v| Ok(*v.get_ref()))?;
    set(&mut cfg.drain_timeout, s.drain_timeout, |v| {
        dur(src, v, "server.drain_timeout")
    })?;
    set(&mut cfg.header_timeout, s.header_timeout, |v| {
        positive(src, v, "server.header_timeout")
    })?;
    set(&mut cfg.keepalive_timeout, s.keepalive_timeout, |v| {
        positive(src, v, "server.keepalive_timeout")
    })?;

    set(&mut cfg.admin_token_file, s.admin_token_file, |v| {
        Ok(Some(base.join(v.get_ref())))
    })?;
    set(&mut cfg.upgrade_socket, s.upgrade_socket, |v| {
        Ok(Some(base.join(v.get_ref())))
    })?;
    Ok(())
}

/// `[limits]`.
fn limits(src: &Source, lim: LimitsSection, c: &mut LimitsConfig) -> Result<(), ConfigError> {
    set(&mut c.max_header_bytes, lim.max_header_bytes, |v| {
        between(src, v, "limits.max_header_bytes", 8192, 1 << 24)
    })?;
    set(&mut c.max_headers, lim.max_headers, |v| {
        between(src, v, "limits.max_headers", 1, 10_000)
    })?;
    set(&mut c.max_body_bytes, lim.max_body_bytes, |v| {
        Ok(*v.get_ref())
    })?;
    set(
        &mut c.max_upstream_header_bytes,
        lim.max_upstream_header_bytes,
        |v| between(src, v, "limits.max_upstream_header_bytes", 8192, 1 << 24),
    )?;
    set(&mut c.max_connections, lim.max_connections, |v| {
        between(src, v, "limits.max_connections", 1, 10_000_000)
    })?;
    set(&mut c.connection_wait, lim.connection_wait, |v| {
        dur(src, v, "limits.connection_wait")
    })?;
    set(&mut c.body_idle_timeout, lim.body_idle_timeout, |v| {
        positive(src, v, "limits.body_idle_timeout")
    })?;
    set(&mut c.body_timeout, lim.body_timeout, |v| {
        positive(src, v, "limits.body_timeout")
    })?;
    set(
        &mut c.body_min_rate,
        lim.body_min_rate,
        |v| Ok(*v.get_ref()),
    )?;
    set(&mut c.body_min_rate_grace, lim.body_min_rate_grace, |v| {
        dur(src, v, "limits.body_min_rate_grace")
    })?;
    set(
        &mut c.max_requests_per_connection,
        lim.max_requests_per_connection,
        |v| at_least_one(src, v, "limits.max_requests_per_connection"),
    )?;
    set(&mut c.max_connection_age, lim.max_connection_age, |v| {
        positive(src, v, "limits.max_connection_age")
    })?;
    set(&mut c.underscore_headers, lim.underscore_headers, |v| {
        match v.get_ref().as_str() {
        "drop" => Ok(Underscores::Drop),
        "reject" => Ok(Underscores::Reject),
        "allow" => Ok(Underscores::Allow),
        other => Err(src.at(
            Some(v.span()),
            format!("limits.underscore_headers: unknown choice {other:?} (use \"drop\", \"reject\" or \"allow\")"),
        )),
    }
    })?;
    if let Some(list) = lim.trusted_proxies {
        c.trusted_proxies = list
            .iter()
            .map(|v| {
                Cidr::parse(v.get_ref())
                    .map_err(|e| src.at(Some(v.span()), format!("limits.trusted_proxies: {e}")))
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(())
}

/// `[http2]`.
fn http2(src: &Source, h: Http2Section, c: &mut Http2Config) -> Result<(), ConfigError> {
    set(
        &mut c.max_concurrent_streams,
        h.max_concurrent_streams,
        |v| between(src, v, "http2.max_concurrent_streams", 1, 10_000),
    )?;
    set(
        &mut c.max_pending_accept_reset_streams,
        h.max_pending_accept_reset_streams,
        |v| between(src, v, "http2.max_pending_accept_reset_streams", 1, 10_000),
    )?;
    set(
        &mut c.max_local_error_reset_streams,
        h.max_local_error_reset_streams,
        |v| between(src, v, "http2.max_local_error_reset_streams", 1, 100_000),
    )?;
    set(&mut c.max_header_list_size, h.max_header_list_size, |v| {
        between(src, v, "http2.max_header_list_size", 16 * 1024, 1 << 20)
    })?;
    set(
        &mut c.initial_stream_window_size,
        h.initial_stream_window_size,
        |v| {
            between(
                src,
                v,
                "http2.initial_stream_window_size",
                65_535,
                (1 << 31) - 1,
            )
        },
    )?;
    set(
        &mut c.initial_connection_window_size,
        h.initial_connection_window_size,
        |v| {
            between(
                src,
                v,
                "http2.initial_connection_window_size",
                65_535,
                (1 << 31) - 1,
            )
        },
    )?;
    Ok(())
}

/// `[hsms]`: `listen` is required; the drain bound must leave queued primaries time to be
/// answered (at most half of T3).
fn hsms(src: &Source, h: HsmsSection) -> Result<HsmsConfig, ConfigError> {
    let Some(listen) = h.listen else {
        return Err(src.at(
            None,
            "hsms.listen is missing: give the equipment-facing address (e.g. listen = \"0.0.0.0:5000\")",
        ));
    };
    let mut c = HsmsConfig::new(addr(src, &listen, "hsms.listen")?);
    set(&mut c.mode, h.mode, |v| match v.get_ref().as_str() {
        "hsms" => Ok(HsmsMode::Hsms),
        "tcp" => Ok(HsmsMode::Tcp),
        other => Err(src.at(
            Some(v.span()),
            format!("hsms.mode: unknown mode {other:?} (use \"hsms\" or \"tcp\")"),
        )),
    })?;
    set(&mut c.t3, h.t3, |v| positive(src, v, "hsms.t3"))?;
    set(&mut c.t6, h.t6, |v| positive(src, v, "hsms.t6"))?;
    set(&mut c.t7, h.t7, |v| positive(src, v, "hsms.t7"))?;
    set(&mut c.t8, h.t8, |v| positive(src, v, "hsms.t8"))?;
    set(&mut c.tcp_drain, h.tcp_drain, |v| {
        dur(src, v, "hsms.tcp_drain")
    })?;
    set(&mut c.max_message_bytes, h.max_message_bytes, |v| {
        between(src, v, "hsms.max_message_bytes", 10, u32::MAX)
    })?;
    set(&mut c.max_sessions, h.max_sessions, |v| {
        between(src, v, "hsms.max_sessions", 1, 1_000_000)
    })?;
    set(&mut c.max_queued, h.max_queued, |v| {
        between(src, v, "hsms.max_queued", 1, 1_000_000)
    })?;
    let span = h.drain_bound.as_ref().map(|v| v.span());
    set(&mut c.drain_bound, h.drain_bound, |v| {
        positive(src, v, "hsms.drain_bound")
    })?;
    if c.drain_bound.saturating_mul(2) > c.t3 {
        return Err(src.at(
            span,
            format!(
                "hsms.drain_bound: {} is more than half of hsms.t3 ({}): queued primaries would come near their reply timeout (lower drain_bound or raise t3)",
                duration::render(c.drain_bound),
                duration::render(c.t3)
            ),
        ));
    }
    Ok(c)
}

/// `[log]`.
fn log(src: &Source, l: LogSection, cfg: &mut LogConfig) -> Result<(), ConfigError> {
    set(&mut cfg.format, l.format, |v| match v.get_ref().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        other => Err(src.at(
            Some(v.span()),
            format!("log.format: unknown format {other:?} (use \"json\" or \"text\")"),
        )),
    })?;
    set(&mut cfg.level, l.level, |v| {
        tracing_subscriber::EnvFilter::try_new(v.get_ref())
            .map(|_| v.get_ref().clone())
            .map_err(|e| {
                src.at(
                    Some(v.span()),
                    format!("log.level: invalid filter {:?}: {e} (use e.g. \"info\" or \"zerodown=debug\")", v.get_ref()),
                )
            })
    })?;
    set(&mut cfg.access_log, l.access_log, |v| Ok(*v.get_ref()))?;
    set(&mut cfg.access_sample, l.access_sample, |v| {
        let f = *v.get_ref();
        if (0.0..=1.0).contains(&f) {
            Ok(f)
        } else {
            Err(src.at(
                Some(v.span()),
                format!(
                    "log.access_sample: {f} is not a fraction (use 0.0 to 1.0, e.g. 0.1 for 10 %)"
                ),
            ))
        }
    })?;
    Ok(())
}

/// `[upstream]`.
fn upstream(src: &Source, u: UpstreamSection, cfg: &mut UpstreamConfig) -> Result<(), ConfigError> {
    set(&mut cfg.connect_timeout, u.connect_timeout, |v| {
        positive(src, v, "upstream.connect_timeout")
    })?;
    set(&mut cfg.response_timeout, u.response_timeout, |v| {
        positive(src, v, "upstream.response_timeout")
    })?;
    set(&mut cfg.first_chunk_wait, u.first_chunk_wait, |v| {
        dur(src, v, "upstream.first_chunk_wait")
    })?;
    set(&mut cfg.idle_timeout, u.idle_timeout, |v| {
        positive(src, v, "upstream.idle_timeout")
    })?;
    set(
        &mut cfg.max_idle_per_instance,
        u.max_idle_per_instance,
        |v| Ok(*v.get_ref()),
    )?;
    set(&mut cfg.max_attempts, u.max_attempts, |v| {
        at_least_one(src, v, "upstream.max_attempts").map(|n| n as usize)
    })?;
    set(&mut cfg.eject_after, u.eject_after, |v| {
        at_least_one(src, v, "upstream.eject_after").map(|n| n as u32)
    })?;
    set(&mut cfg.eject_for, u.eject_for, |v| {
        dur(src, v, "upstream.eject_for")
    })?;
    Ok(())
}

/// `[pools]`; the two tags must differ.
fn pools(src: &Source, p: PoolsSection, cfg: &mut PoolsConfig) -> Result<(), ConfigError> {
    set(&mut cfg.active_tag, p.active_tag, |v| {
        tag(src, v, "pools.active_tag")
    })?;
    set(&mut cfg.standby_tag, p.standby_tag, |v| {
        tag(src, v, "pools.standby_tag")
    })?;
    set(&mut cfg.single_version, p.single_version, |v| {
        Ok(*v.get_ref())
    })?;
    if cfg.active_tag.eq_ignore_ascii_case(&cfg.standby_tag) {
        return Err(src.at(
            None,
            format!(
                "pools.active_tag and pools.standby_tag are both {:?}: give the two pools different tags",
                cfg.active_tag
            ),
        ));
    }
    Ok(())
}

/// Applies an optional file value over a default.
fn set<T, R>(
    slot: &mut R,
    value: Opt<T>,
    check: impl FnOnce(&Spanned<T>) -> Result<R, ConfigError>,
) -> Result<(), ConfigError> {
    if let Some(v) = value {
        *slot = check(&v)?;
    }
    Ok(())
}

fn addr(src: &Source, v: &Spanned<String>, key: &str) -> Result<SocketAddr, ConfigError> {
    v.get_ref().parse().map_err(|_| {
        src.at(
            Some(v.span()),
            format!(
                "{key}: invalid address {:?} (expected IP:PORT, e.g. \"0.0.0.0:8080\")",
                v.get_ref()
            ),
        )
    })
}

fn dur(src: &Source, v: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
    duration::parse(v.get_ref()).map_err(|e| src.at(Some(v.span()), format!("{key}: {e}")))
}

fn positive(src: &Source, v: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
    let d = dur(src, v, key)?;
    if d.is_zero() {
        return Err(src.at(Some(v.span()), format!("{key}: must be greater than zero")));
    }
    Ok(d)
}

fn at_least_one<T: Copy + TryInto<u64>>(
    src: &Source,
    v: &Spanned<T>,
    key: &str,
) -> Result<u64, ConfigError> {
    let n: u64 = (*v.get_ref()).try_into().unwrap_or(u64::MAX);
    if n == 0 {
        return Err(src.at(Some(v.span()), format!("{key}: must be at least 1")));
    }
    Ok(n)
}

fn between<T: Copy + PartialOrd + std::fmt::Display>(
    src: &Source,
    v: &Spanned<T>,
    key: &str,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    let n = *v.get_ref();
    if n < lo || n > hi {
        return Err(src.at(
            Some(v.span()),
            format!("{key}: {n} is out of range ({lo} to {hi})"),
        ));
    }
    Ok(n)
}

fn tag(src: &Source, v: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let t = v.get_ref().trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(src.at(
            Some(v.span()),
            format!(
                "{key}: {:?} is not a usable tag (non-empty, no spaces)",
                v.get_ref()
            ),
        ));
    }
    Ok(t.to_string())
}

fn path_prefix(src: &Source, v: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let p = v.get_ref();
    if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
        return Err(src.at(
            Some(v.span()),
            format!(
                "{key}: {p:?} is not a path (it must start with '/' and hold no '?', '#' or space)"
            ),
        ));
    }
    // A trailing slash would make segment matching miss the bare prefix.
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

/// A route's host: a DNS name or IP, compared case-insensitively and without a port.
fn host_name(src: &Source, v: &Spanned<String>) -> Result<String, ConfigError> {
    let h = v.get_ref().trim().to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(src.at(
            Some(v.span()),
            format!(
                "routes.host: {:?} is not a host name (letters, digits, '.', '-'; no port, scheme or path: e.g. \"users.example.com\")",
                v.get_ref()
            ),
        ));
    }
    Ok(h)
}

fn source_config(src: &Source, s: SourceSection, base: &Path) -> Result<SourceConfig, ConfigError> {
    let kind = s.kind.as_ref().map(|k| k.get_ref().clone());
    let kind_span = s.kind.as_ref().map(|k| k.span());
    match kind.as_deref().unwrap_or("file") {
        "file" => file_source(src, s, kind_span, base),
        "consul" => consul_source(src, s, kind_span, base, &process_env),
        other => Err(src.at(
            kind_span,
            format!("source.kind: unknown kind {other:?} (use \"file\" or \"consul\")"),
        )),
    }
}

/// Refuses keys that belong to the other source kind, naming the first one found.
fn refuse_keys(src: &Source, kind: &str, keys: &[(&str, &Opt<String>)]) -> Result<(), ConfigError> {
    match keys.iter().find(|(_, v)| v.is_some()) {
        Some((key, Some(v))) => Err(src.at(
            Some(v.span()),
            format!("source.{key}: does not apply to kind = \"{kind}\""),
        )),
        _ => Ok(()),
    }
}

fn file_source(
    src: &Source,
    s: SourceSection,
    kind_span: Option<std::ops::Range<usize>>,
    base: &Path,
) -> Result<SourceConfig, ConfigError> {
    refuse_keys(
        src,
        "file",
        &[
            ("address", &s.address),
            ("service", &s.service),
            ("datacenter", &s.datacenter),
            ("consistency", &s.consistency),
            ("wait", &s.wait),
            ("token_file", &s.token_file),
            ("version_meta_key", &s.version_meta_key),
            ("version_tag_pattern", &s.version_tag_pattern),
            ("active_selector", &s.active_selector),
            ("kv_key", &s.kv_key),
            ("ca_file", &s.ca_file),
            ("client_cert", &s.client_cert),
            ("client_key", &s.client_key),
            ("tls_server_name", &s.tls_server_name),
            ("retry_max", &s.retry_max),
            ("min_interval", &s.min_interval),
        ],
    )?;
    if let Some(v) = &s.cached {
        return Err(src.at(
            Some(v.span()),
            "source.cached: does not apply to kind = \"file\"",
        ));
    }
    let Some(path) = s.path else {
        return Err(src.at(
            kind_span,
            "source.path: missing (kind = \"file\" needs path = \"upstreams.toml\")",
        ));
    };
    let mut cfg = FileSourceConfig {
        path: base.join(path.get_ref()),
        poll_interval: Duration::from_secs(1),
    };
    set(&mut cfg.poll_interval, s.poll_interval, |v| {
        positive(src, v, "source.poll_interval")
    })?;
    Ok(SourceConfig::File(cfg))
}

fn consul_source(
    src: &Source,
    mut s: SourceSection,
    kind_span: Option<std::ops::Range<usize>>,
    base: &Path,
    env: Env,
) -> Result<SourceConfig, ConfigError> {
    refuse_keys(
        src,
        "consul",
        &[("path", &s.path), ("poll_interval", &s.poll_interval)],
    )?;
    let Some(service) = s.service.take() else {
        return Err(src.at(
            kind_span,
            "source.service: missing (kind = \"consul\" needs service = \"hello-service\", or pass --service)",
        ));
    };
    let name = service.get_ref().trim();
    if name.is_empty() || name.contains(['/', '?', '#', ' ']) {
        return Err(src.at(
            Some(service.span()),
            format!(
                "source.service: {:?} is not a Consul service name",
                service.get_ref()
            ),
        ));
    }
    let mut c = ConsulSourceConfig::from_env(name, env).map_err(|e| src.at(None, e))?;
    consul_query(src, &mut s, &mut c)?;
    consul_tls(src, &mut s, base, kind_span, &mut c)?;
    consul_selection(src, s, &mut c)?;
    Ok(SourceConfig::Consul(c))
}

/// Where and how the watch queries: address, datacenter, consistency, wait.
fn consul_query(
    src: &Source,
    s: &mut SourceSection,
    c: &mut ConsulSourceConfig,
) -> Result<(), ConfigError> {
    set(&mut c.cached, s.cached.take(), |v| Ok(*v.get_ref()))?;
    let ssl = c.address.https;
    set(&mut c.address, s.address.take(), |v| {
        ConsulAddress::parse(v.get_ref(), ssl)
            .map_err(|e| src.at(Some(v.span()), format!("source.address: {e}")))
    })?;
    c.datacenter = s.datacenter.take().map(|v| v.into_inner());
    set(&mut c.consistency, s.consistency.take(), |v| {
        match v.get_ref().as_str() {
            "default" => Ok(Consistency::Default),
            "stale" => Ok(Consistency::Stale),
            other => Err(src.at(
                Some(v.span()),
                format!(
                    "source.consistency: unknown mode {other:?} (use \"default\" or \"stale\")"
                ),
            )),
        }
    })?;
    set(&mut c.wait, s.wait.take(), |v| {
        let d = positive(src, v, "source.wait")?;
        if d > Duration::from_secs(600) {
            return Err(src.at(
                Some(v.span()),
                "source.wait: Consul caps blocking queries at 10m; use \"10m\" or less",
            ));
        }
        Ok(d)
    })
}

/// The ACL token file and TLS files, relative to the config's directory.
fn consul_tls(
    src: &Source,
    s: &mut SourceSection,
    base: &Path,
    kind_span: Option<std::ops::Range<usize>>,
    c: &mut ConsulSourceConfig,
) -> Result<(), ConfigError> {
    c.token_file = s.token_file.take().map(|v| base.join(v.get_ref()));
    let path = |v: Opt<String>| v.map(|v| base.join(v.get_ref()));
    if s.ca_file.is_some() {
        c.tls.ca_file = path(s.ca_file.take());
    }
    if s.client_cert.is_some() {
        c.tls.client_cert = path(s.client_cert.take());
    }
    if s.client_key.is_some() {
        c.tls.client_key = path(s.client_key.take());
    }
    if let Some(v) = s.tls_server_name.take() {
        c.tls.server_name = Some(v.into_inner());
    }
    if c.tls.client_cert.is_some() != c.tls.client_key.is_some() {
        return Err(src.at(
            kind_span,
            "source.client_cert and source.client_key (or CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY) must be set together",
        ));
    }
    Ok(())
}

/// How versions are read and the active group chosen, and the watch's pacing.
fn consul_selection(
    src: &Source,
    s: SourceSection,
    c: &mut ConsulSourceConfig,
) -> Result<(), ConfigError> {
    set(&mut c.version_meta_key, s.version_meta_key, |v| {
        Ok(v.get_ref().clone())
    })?;
    set(&mut c.version_tag_pattern, s.version_tag_pattern, |v| {
        regex_lite::Regex::new(v.get_ref())
            .map(|_| v.get_ref().clone())
            .map_err(|e| {
                src.at(
                    Some(v.span()),
                    format!("source.version_tag_pattern: invalid pattern: {e}"),
                )
            })
    })?;
    set(&mut c.active_selector, s.active_selector, |v| {
        match v.get_ref().as_str() {
            "tags" => Ok(ActiveSelector::Tags),
            "kv" => Ok(ActiveSelector::Kv),
            other => Err(src.at(
                Some(v.span()),
                format!(
                    "source.active_selector: unknown selector {other:?} (use \"tags\" or \"kv\")"
                ),
            )),
        }
    })?;
    set(&mut c.kv_key, s.kv_key, |v| {
        kv_key_value(src, v, "source.kv_key")
    })?;
    set(&mut c.retry_max, s.retry_max, |v| {
        positive(src, v, "source.retry_max")
    })?;
    set(&mut c.min_interval, s.min_interval, |v| {
        positive(src, v, "source.min_interval")
    })?;
    Ok(())
}

fn kv_key_value(src: &Source, v: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let k = v.get_ref().trim_matches('/');
    if k.is_empty() {
        return Err(src.at(Some(v.span()), format!("{key}: empty key")));
    }
    Ok(k.to_string())
}

/// `[[routes]]`: one service per (host, prefix); every service named must exist.
fn route_table(
    src: &Source,
    routes: Spanned<Vec<RouteSection>>,
    services: &[&str],
) -> Result<Vec<Route>, ConfigError> {
    let span = routes.span();
    let mut out: Vec<Route> = Vec::new();
    for r in routes.into_inner() {
        let prefix = path_prefix(src, &r.prefix, "routes.prefix")?;
        let host = r.host.as_ref().map(|h| host_name(src, h)).transpose()?;
        let service = match &r.service {
            None => None,
            Some(v) if services.contains(&v.get_ref().as_str()) => Some(v.get_ref().clone()),
            Some(v) => {
                return Err(src.at(
                    Some(v.span()),
                    format!(
                        "routes.service: unknown service {:?} (the services are {}): add a [[services]] entry named {:?} or fix the name",
                        v.get_ref(),
                        services.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "),
                        v.get_ref()
                    ),
                ))
            }
        };
        if let Some(o) = out.iter().find(|o| o.prefix == prefix && o.host == host) {
            let on = host
                .as_ref()
                .map_or(String::new(), |h| format!(" on host {h:?}"));
            let (a, b) = (
                o.service.as_deref().unwrap_or(services[0]),
                service.as_deref().unwrap_or(services[0]),
            );
            let message = if a == b {
                format!("routes.prefix: {prefix:?}{on} is listed twice: keep one route per prefix")
            } else {
                format!("routes.prefix: {prefix:?}{on} is claimed by two services, {a:?} and {b:?}: give each its own prefix or host")
            };
            return Err(src.at(Some(r.prefix.span()), message));
        }
        let pool = match r.pool.get_ref().as_str() {
            "active" => PoolName::Active,
            "standby" => PoolName::Standby,
            other => {
                return Err(src.at(
                    Some(r.pool.span()),
                    format!("routes.pool: unknown pool {other:?} (use \"active\" or \"standby\")"),
                ))
            }
        };
        let rewrite = match r.rewrite {
            Some(v) => Some(path_prefix(src, &v, "routes.rewrite")?),
            None => None,
        };
        out.push(Route {
            host,
            service,
            prefix,
            pool,
            rewrite,
            max_body_bytes: r.max_body_bytes.map(|v| *v.get_ref()),
            body_min_rate: r.body_min_rate.map(|v| *v.get_ref()),
        });
    }
    if out.is_empty() {
        return Err(src.at(
            Some(span),
            "routes: the list is empty, so nothing would be proxied (remove the key to use the defaults)",
        ));
    }
    Ok(out)
}
