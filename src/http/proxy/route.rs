//! Route table: longest prefix first, matched on whole path segments, with an optional prefix rewrite.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::{PoolName, Route};

/// Routes to targets of type `T` (the proxy's services; `()` in tests).
#[derive(Debug, Clone)]
pub struct RouteTable<T = ()> {
    /// Sorted by prefix length, longest first; each with its prefix as a shared metrics label.
    routes: Vec<Entry<T>>,
    /// The hosts some route names (lowercase): a request for one of them uses only its routes.
    hosts: Vec<String>,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    route: Route,
    label: Arc<str>,
    target: T,
}

/// A matched route and the path-and-query to send upstream.
#[derive(Debug, PartialEq)]
pub struct Matched<'a, T = ()> {
    pub prefix: &'a Arc<str>,
    pub target: &'a T,
    pub pool: PoolName,
    pub path_and_query: Cow<'a, str>,
    /// The route's own body limit, if it sets one.
    pub max_body_bytes: Option<u64>,
    /// The route's own minimum body rate, if it sets one.
    pub body_min_rate: Option<u64>,
}

impl RouteTable {
    /// A table whose routes carry no target.
    pub fn new(routes: Vec<Route>) -> RouteTable {
        RouteTable::with_targets(routes, |_| ())
    }
}

impl<T> RouteTable<T> {
    /// `target` gives each route's target from the route (its service).
    pub fn with_targets(mut routes: Vec<Route>, target: impl Fn(&Route) -> T) -> RouteTable<T> {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let mut hosts: Vec<String> = routes.iter().filter_map(|r| r.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        let routes = routes
            .into_iter()
            .map(|route| Entry {
                label: Arc::from(route.prefix.as_str()),
                target: target(&route),
                route,
            })
            .collect();
        RouteTable { routes, hosts }
    }

    /// `path_and_query` is the request target in origin form (`/a/b?q`); `host` the request's
    /// Host (any case, with or without a port). A host some route names is served by its own
    /// routes only (as nginx's `server_name`); any other host by the routes that name none.
    pub fn find<'a>(
        &'a self,
        host: Option<&str>,
        path_and_query: &'a str,
    ) -> Option<Matched<'a, T>> {
        let path_end = path_and_query.find('?').unwrap_or(path_and_query.len());
        let path = &path_and_query[..path_end];
        let named = if self.hosts.is_empty() {
            None
        } else {
            host.and_then(|h| self.named_host(h))
        };
        let Entry {
            route,
            label,
            target,
        } = self
            .routes
            .iter()
            .find(|e| e.route.host.as_deref() == named && segment_prefix(path, &e.route.prefix))?;
        let path_and_query = match &route.rewrite {
            None => Cow::Borrowed(path_and_query),
            Some(to) => Cow::Owned(rewrite(path_and_query, &route.prefix, to)),
        };
        Some(Matched {
            prefix: label,
            target,
            max_body_bytes: route.max_body_bytes,
            body_min_rate: route.body_min_rate,
            pool: route.pool,
            path_and_query,
        })
    }

    /// The route host equal to `host` without its port, ignoring case.
    fn named_host(&self, host: &str) -> Option<&str> {
        let bare = match host.rsplit_once(':') {
            // An IPv6 literal keeps its brackets' content; a port follows the last ':' otherwise.
            _ if host.starts_with('[') => host
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or(host),
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        self.hosts
            .iter()
            .find(|h| h.eq_ignore_ascii_case(bare))
            .map(String::as_str)
    }
}

/// Replaces `prefix` with `to` at the start of `path_and_query`.
fn rewrite(path_and_query: &str, prefix: &str, to: &str) -> String {
    let rest = if prefix == "/" {
        path_and_query
    } else {
        &path_and_query[prefix.len()..]
    };
    let to = if to == "/" && rest.starts_with('/') {
        ""
    } else {
        to
    };
    let mut s = String::with_capacity(to.len() + rest.len());
    s.push_str(to);
    s.push_str(rest);
    if s.is_empty() || s.starts_with('?') {
        s.insert(0, '/');
    }
    s
}

fn segment_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_routes;

    fn find(t: &RouteTable, p: &str) -> Option<(PoolName, String)> {
        t.find(None, p)
            .map(|m| (m.pool, m.path_and_query.into_owned()))
    }

    #[test]
    fn default_routes_match_the_old_nginx_config() {
        let t = RouteTable::new(default_routes());
        let s = PoolName::Standby;
        let a = PoolName::Active;
        assert_eq!(find(&t, "/standby"), Some((s, "/hello".into())));
        assert_eq!(find(&t, "/standby/x?q=1"), Some((s, "/hello/x?q=1".into())));
        assert_eq!(find(&t, "/standby?q"), Some((s, "/hello?q".into())));
        assert_eq!(find(&t, "/hello"), Some((a, "/hello".into())));
        assert_eq!(find(&t, "/standbyx"), Some((a, "/standbyx".into())));
        assert_eq!(find(&t, "/"), Some((a, "/".into())));
    }

    #[test]
    fn longest_prefix_wins_and_rewrite_to_root() {
        let t = RouteTable::new(vec![
            Route {
                rewrite: Some("/".into()),
                ..Route::new("/api", PoolName::Active)
            },
            Route::new("/api/next", PoolName::Standby),
        ]);
        assert_eq!(
            find(&t, "/api/next/a"),
            Some((PoolName::Standby, "/api/next/a".into()))
        );
        assert_eq!(
            find(&t, "/api/users"),
            Some((PoolName::Active, "/users".into()))
        );
        assert_eq!(find(&t, "/api"), Some((PoolName::Active, "/".into())));
        assert_eq!(find(&t, "/api?x"), Some((PoolName::Active, "/?x".into())));
        assert_eq!(find(&t, "/other"), None);
    }

    #[test]
    fn a_named_host_uses_only_its_own_routes() {
        let on = |host: &str, prefix: &str, target: u8| Route {
            host: (!host.is_empty()).then(|| host.to_string()),
            service: Some(target.to_string()),
            ..Route::new(prefix, PoolName::Active)
        };
        let t = RouteTable::with_targets(
            vec![
                on("", "/", 0),
                on("users.example.com", "/", 1),
                on("users.example.com", "/admin", 2),
                on("api.example.com", "/v1", 3),
            ],
            |r| r.service.clone().unwrap_or_default(),
        );
        let target = |host: Option<&str>, path: &str| t.find(host, path).map(|m| m.target.clone());
        assert_eq!(target(None, "/x"), Some("0".into()));
        assert_eq!(target(Some("other.example.com"), "/x"), Some("0".into()));
        assert_eq!(
            target(Some("USERS.example.com:8080"), "/x"),
            Some("1".into())
        );
        assert_eq!(
            target(Some("users.example.com"), "/admin/a"),
            Some("2".into())
        );
        // api.example.com names only /v1: other paths do not fall back to the host-less routes.
        assert_eq!(target(Some("api.example.com"), "/v1/x"), Some("3".into()));
        assert_eq!(target(Some("api.example.com"), "/x"), None);
        assert_eq!(target(Some("[::1]:8080"), "/x"), Some("0".into()));
    }
}
