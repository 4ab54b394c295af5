//! Route table: longest prefix first, matched on whole path segments, with an optional prefix rewrite.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::{PoolName, Route};

#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Sorted by prefix length, longest first; each with its prefix as a shared metrics label.
    routes: Vec<(Route, Arc<str>)>,
}

/// A matched route and the path-and-query to send upstream.
#[derive(Debug, PartialEq)]
pub struct Matched<'a> {
    pub prefix: &'a Arc<str>,
    pub pool: PoolName,
    pub path_and_query: Cow<'a, str>,
    /// The route's own body limit, if it sets one.
    pub max_body_bytes: Option<u64>,
    /// The route's own minimum body rate, if it sets one.
    pub body_min_rate: Option<u64>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> RouteTable {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let routes = routes
            .into_iter()
            .map(|r| {
                let label = Arc::from(r.prefix.as_str());
                (r, label)
            })
            .collect();
        RouteTable { routes }
    }

    /// `path_and_query` is the request target in origin form (`/a/b?q`).
    pub fn find<'a>(&'a self, path_and_query: &'a str) -> Option<Matched<'a>> {
        let path_end = path_and_query.find('?').unwrap_or(path_and_query.len());
        let path = &path_and_query[..path_end];
        let (route, label) = self
            .routes
            .iter()
            .find(|(r, _)| segment_prefix(path, &r.prefix))?;
        let path_and_query = match &route.rewrite {
            None => Cow::Borrowed(path_and_query),
            Some(to) => {
                let rest = if route.prefix == "/" {
                    path_and_query
                } else {
                    &path_and_query[route.prefix.len()..]
                };
                let to = if to == "/" && rest.starts_with('/') {
                    ""
                } else {
                    to.as_str()
                };
                let mut s = String::with_capacity(to.len() + rest.len());
                s.push_str(to);
                s.push_str(rest);
                if s.is_empty() || s.starts_with('?') {
                    s.insert(0, '/');
                }
                Cow::Owned(s)
            }
        };
        Some(Matched {
            prefix: label,
            max_body_bytes: route.max_body_bytes,
            body_min_rate: route.body_min_rate,
            pool: route.pool,
            path_and_query,
        })
    }
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
        t.find(p).map(|m| (m.pool, m.path_and_query.into_owned()))
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
                prefix: "/api".into(),
                pool: PoolName::Active,
                rewrite: Some("/".into()),
                max_body_bytes: None,
                body_min_rate: None,
            },
            Route {
                prefix: "/api/next".into(),
                pool: PoolName::Standby,
                rewrite: None,
                max_body_bytes: None,
                body_min_rate: None,
            },
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
}
