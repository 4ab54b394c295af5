//! Admission and rewriting of a client request before any upstream is chosen: the checks that
//! refuse it (CONNECT, Host, underscores, transfer codings, no route, declared body too large)
//! and the head an upstream receives.

use std::sync::Arc;

use http::request::Parts;
use http::{header, HeaderValue, Method, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use super::headers::{self, Peer, X_REQUEST_ID};
use super::settings::Settings;
use crate::config::PoolName;
use crate::core::Service;
use crate::http::error::ProxyError;
use crate::telemetry::metrics::Lv;

/// Where an admitted request goes.
pub struct Routed {
    pub service: Arc<Service>,
    pub pool: PoolName,
    /// The matched route's prefix, as a metric label.
    pub route: Lv,
    /// The target to send, when it differs from the client's (rewritten or absolute form).
    pub uri: Option<Uri>,
    pub max_body: u64,
    pub body_min_rate: u64,
}

/// Refuses what must never reach an upstream, then routes. Returns the request's host too.
pub fn route(
    parts: &mut Parts,
    body: &Incoming,
    settings: &Settings,
) -> Result<(Option<HeaderValue>, Routed), ProxyError> {
    // A tunnel would carry bytes past every check here, and hyper would hand the connection
    // over after a 2xx: refused before anything else.
    if parts.method == Method::CONNECT {
        return Err(ProxyError::Connect);
    }
    // Exactly one valid Host (or the authority of an absolute/h2 target), before any routing.
    let host = request_host(parts)?;
    if !headers::underscores(&mut parts.headers, settings.underscores) {
        return Err(ProxyError::BadRequest(
            "header names with underscores are refused",
        ));
    }
    // hyper decodes only `chunked`; any other coding would reach the upstream undeclared.
    if let Some(coding) = other_transfer_coding(&parts.headers) {
        return Err(ProxyError::UnsupportedCoding(coding));
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let matched = settings
        .routes
        .find(host.as_ref().and_then(|h| h.to_str().ok()), path_and_query)
        .ok_or(ProxyError::NoRoute)?;
    // Origin form for HTTP/1.1 upstreams; rebuilt only when rewritten or absolute.
    let uri = if matches!(matched.path_and_query, std::borrow::Cow::Borrowed(_))
        && parts.uri.authority().is_none()
    {
        None
    } else {
        Some(
            Uri::try_from(matched.path_and_query.as_ref())
                .map_err(|_| ProxyError::BadRequest("rewritten path is not a valid URI"))?,
        )
    };
    let routed = Routed {
        service: Arc::clone(matched.target),
        pool: matched.pool,
        route: Lv::A(Arc::clone(matched.prefix)),
        uri,
        max_body: matched.max_body_bytes.unwrap_or(settings.max_body_bytes),
        body_min_rate: matched.body_min_rate.unwrap_or(settings.body_min_rate),
    };
    let declared = body.size_hint().exact().or_else(|| {
        parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    });
    if declared.is_some_and(|n| n > routed.max_body) {
        return Err(ProxyError::PayloadTooLarge);
    }
    Ok((host, routed))
}

/// The head an upstream receives: HTTP/1.1, no hop-by-hop headers, re-framed by hyper,
/// `X-Forwarded-*` set, the host and request id carried.
pub fn rewrite(
    parts: &mut Parts,
    host: Option<HeaderValue>,
    uri: Option<Uri>,
    settings: &Settings,
    peer: &Peer,
    request_id: &HeaderValue,
) {
    if let Some(uri) = uri {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    // Re-framed upstream: hyper writes one Content-Length (known size) or chunked, never the
    // client's framing verbatim.
    parts.headers.remove(header::CONTENT_LENGTH);
    let trusted = settings
        .trusted_proxies
        .iter()
        .any(|c| c.contains(peer.addr.ip()));
    headers::set_forwarded(&mut parts.headers, peer, host.as_ref(), trusted);
    if let Some(h) = host {
        parts.headers.insert(header::HOST, h);
    }
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), request_id.clone());
}

/// The request's host: the target's authority (absolute form, HTTP/2), else its one valid `Host`
/// header; HTTP/1.1 requires one (RFC 9112 §3.2).
fn request_host(parts: &Parts) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(a) = parts.uri.authority() {
        return Ok(HeaderValue::from_str(a.as_str()).ok());
    }
    match first {
        Some(h) => {
            let valid = h
                .to_str()
                .ok()
                .filter(|s| !s.contains('@'))
                .and_then(|s| s.parse::<http::uri::Authority>().ok())
                .is_some_and(|a| {
                    // `Authority` does not check the port; a port must be digits.
                    let s = a.as_str();
                    let port = match s.rfind(']') {
                        Some(i) => s[i + 1..].strip_prefix(':'),
                        None => s.rsplit_once(':').map(|(_, p)| p),
                    };
                    port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                });
            if !valid {
                return Err(ProxyError::BadRequest("invalid Host header"));
            }
            Ok(Some(h.clone()))
        }
        None if parts.version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        None => Ok(None),
    }
}

/// A transfer coding other than `chunked` in the request, if any.
fn other_transfer_coding(h: &http::HeaderMap) -> Option<String> {
    h.get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .find(|t| !t.is_empty() && t != "chunked")
}
