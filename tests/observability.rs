//! The admin API: readiness, a `/metrics` exposition that parses and whose counters follow the test's
//! traffic, and a `/status` that shows swaps and gate holds made through the Consul double.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::consul::{register, start as start_consul};
use common::*;
use zerodown_testkit::ConsulDouble;

async fn admin_get(d: &zerodown::daemon::Daemon, path: &str) -> (u16, String) {
    get(d.admin_addr.unwrap(), path).await
}

/// One sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A strict parser of the OpenMetrics/Prometheus text format: every line must be a comment of a
/// known kind or a well-formed sample, and the exposition must end with `# EOF`.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut samples = Vec::new();
    let mut typed: HashMap<String, String> = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("missing # EOF".into());
    }
    for (n, line) in lines.iter().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            match kind {
                "EOF" => continue,
                "HELP" | "TYPE" | "UNIT" => {
                    let name = parts.next().ok_or_else(|| err("no metric name"))?;
                    if !valid_name(name) {
                        return Err(err("bad metric name"));
                    }
                    if kind == "TYPE" {
                        let t = parts.next().ok_or_else(|| err("no type"))?;
                        if ![
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "unknown",
                            "summary",
                            "stateset",
                            "gaugehistogram",
                        ]
                        .contains(&t)
                        {
                            return Err(err("unknown type"));
                        }
                        typed.insert(name.to_string(), t.to_string());
                    }
                }
                _ => return Err(err("unknown comment")),
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("bad value"))?,
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| err("unclosed labels"))?;
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if !valid_name(&key) || chars.next() != Some('"') {
                        return Err(err("bad label"));
                    }
                    let mut val = String::new();
                    loop {
                        match chars
                            .next()
                            .ok_or_else(|| err("unterminated label value"))?
                        {
                            '\\' => val.push(chars.next().ok_or_else(|| err("bad escape"))?),
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    labels.push((key, val));
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        Some(_) => return Err(err("expected ',' between labels")),
                    }
                }
                (name.to_string(), labels)
            }
        };
        if !valid_name(&name) {
            return Err(err("bad sample name"));
        }
        let family_known = typed.keys().any(|t| name.starts_with(t.as_str()));
        if !family_known {
            return Err(err("sample before its # TYPE"));
        }
        samples.push((name, labels, value));
    }
    Ok(samples)
}

fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
        .sum()
}

#[tokio::test]
async fn ready_only_after_the_first_pool() {
    let d = start(&[], |_| {}).await;
    assert_eq!(admin_get(&d.daemon, "/live").await.0, 200);
    let (status, body) = admin_get(&d.daemon, "/ready").await;
    assert_eq!(status, 503, "{body}");
    let v1 = backend("v1").await;
    write_upstreams(&d.upstreams, &[("a", v1.to_string(), "v1", "active")]);
    eventually("ready after the first pool", || async {
        admin_get(&d.daemon, "/ready").await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn metrics_parse_and_follow_the_traffic() {
    let v1 = backend("v1").await;
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    let addr = d.daemon.public_addr;
    let mut c = Conn::open(addr).await.unwrap();
    for _ in 0..5 {
        assert_eq!(c.get("/hello").await.unwrap().0, 200);
    }
    for _ in 0..2 {
        assert_eq!(c.get("/nope").await.unwrap().0, 404);
    }
    assert_eq!(c.get("/standby").await.unwrap().0, 503);
    assert_eq!(c.get("/health").await.unwrap().0, 200);
    drop(c);

    let (status, text) = admin_get(&d.daemon, "/metrics").await;
    assert_eq!(status, 200);
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let req = "zerodown_requests_total";
    assert_eq!(
        value(
            &samples,
            req,
            &[
                ("route", "/"),
                ("pool", "active"),
                ("status_class", "2xx"),
                ("version", "v1")
            ]
        ),
        5.0
    );
    assert_eq!(
        value(
            &samples,
            req,
            &[
                ("route", "/"),
                ("pool", "active"),
                ("status_class", "4xx"),
                ("version", "v1")
            ]
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            req,
            &[
                ("route", "/standby"),
                ("pool", "standby"),
                ("status_class", "5xx")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            req,
            &[("route", "health"), ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "zerodown_request_duration_seconds_count",
            &[("pool", "active")]
        ),
        7.0
    );
    assert_eq!(
        value(&samples, "zerodown_pool_instances", &[("pool", "active")]),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "zerodown_pool_serving_version",
            &[("pool", "active"), ("version", "v1")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "zerodown_swaps_total",
            &[("kind", "version_change")]
        ),
        1.0
    );
    assert_eq!(value(&samples, "zerodown_requests_in_flight", &[]), 0.0);
    assert!(
        value(
            &samples,
            "zerodown_watch_requests_total",
            &[("watch", "file")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &samples,
            "zerodown_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    eventually("client connection gauge back to zero", || async {
        let (_, text) = admin_get(&d.daemon, "/metrics").await;
        // This scrape's own connection is to the admin listener, not counted.
        let s = parse_exposition(&text).unwrap();
        value(&s, "zerodown_client_connections_open", &[]) == 0.0
    })
    .await;

    // A dead instance: connect errors, a retry onto the live one, then an ejection.
    let dead = dead_address();
    write_upstreams(
        &d.upstreams,
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("dead", dead.to_string(), "v1", "active"),
        ],
    );
    eventually("two instances", || async {
        d.daemon.publisher().load_full().active.members.len() == 2
    })
    .await;
    let mut c = Conn::open(addr).await.unwrap();
    for _ in 0..8 {
        assert_eq!(c.get("/hello").await.unwrap().0, 200);
    }
    let (_, text) = admin_get(&d.daemon, "/metrics").await;
    let s = parse_exposition(&text).unwrap();
    let errors = value(
        &s,
        "zerodown_upstream_connect_errors_total",
        &[("pool", "active")],
    );
    assert!(errors >= 1.0, "{errors}");
    assert_eq!(
        value(&s, "zerodown_upstream_retries_total", &[("pool", "active")]),
        errors
    );
    assert_eq!(
        value(
            &s,
            "zerodown_upstream_ejections_total",
            &[("pool", "active")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_gate_hold_and_the_swap_that_ends_it() {
    let consul = ConsulDouble::start().await.unwrap();
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    register(&consul, "v1-a", v1, "v1", &["active"]);
    register(&consul, "v2-a", v2, "v2", &["standby"]);
    let d = start_consul(&consul, |_, _| {}).await;
    // Half a tag flip: v2 is active too, so the active pool's candidates hold two versions.
    consul.set_tags("v2-a", ["active"]);
    eventually("version hold on the active pool", || async {
        let (_, body) = admin_get(&d, "/status").await;
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        s["pools"]["active"]["hold"]["kind"] == "version"
    })
    .await;
    let (_, body) = admin_get(&d, "/status").await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    let active = &s["pools"]["active"];
    assert_eq!(active["version"], "v1");
    assert_eq!(active["hold"]["serving"], "v1");
    assert_eq!(active["hold"]["waiting"], serde_json::json!(["v2"]));
    assert_eq!(active["instances"].as_array().unwrap().len(), 1);
    assert_eq!(s["source"]["kind"], "consul");
    assert!(s["source_status"]["last_index"].as_u64().unwrap() >= 1);
    assert_eq!(s["ready"], true);
    // Standby lost its only instance to the flip: it holds its last set.
    assert_eq!(s["pools"]["standby"]["hold"]["kind"], "empty");

    // The flip completes: v2 takes over the active pool in one swap.
    consul.set_tags("v1-a", ["standby"]);
    until_v2(&d).await;
    let (_, body) = admin_get(&d, "/status").await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(s["pools"]["active"]["hold"].is_null());
    let last = s["swaps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "version_change");
    assert_eq!(last["active"]["old_version"], "v1");
    assert_eq!(last["active"]["new_version"], "v2");
    let (_, text) = admin_get(&d, "/metrics").await;
    let m = parse_exposition(&text).unwrap();
    assert_eq!(
        value(
            &m,
            "zerodown_gate_holds_total",
            &[("pool", "active"), ("kind", "version")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "zerodown_gate_hold_active",
            &[("pool", "active"), ("kind", "version")]
        ),
        0.0
    );
    assert!(value(&m, "zerodown_watch_requests_total", &[("watch", "service")]) >= 2.0);
    let (status, body) = admin_get(&d, "/consul-status").await;
    assert_eq!(status, 200);
    let cs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        cs["upstreams"]["active"],
        serde_json::json!([format!("server {v2};")])
    );
}

async fn until_v2(d: &zerodown::daemon::Daemon) {
    common::load::until_version(d.public_addr, "/hello", "v2").await;
}

/// Every metric the Grafana dashboard queries exists in a real `/metrics` exposition.
#[tokio::test]
async fn dashboard_queries_only_existing_metrics() {
    let v1 = backend("v1").await;
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    assert_eq!(get(d.daemon.public_addr, "/hello").await.0, 200);
    let (_, text) = admin_get(&d.daemon, "/metrics").await;
    let exposed: std::collections::HashSet<String> = parse_exposition(&text)
        .unwrap()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("config/grafana/zerodown.json").unwrap())
            .unwrap();
    let mut names = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("zerodown_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.push(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() > 15, "{names:?}");
    for n in names {
        assert!(
            exposed.contains(&n),
            "the dashboard queries {n}, which /metrics does not expose"
        );
    }
}

#[tokio::test]
async fn admin_token_guards_the_sensitive_endpoints() {
    let v1 = backend("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let d = start(&[("a", v1.to_string(), "v1", "active")], |c| {
        c.server.admin_token_file = Some(token.clone());
    })
    .await;
    let admin = d.daemon.admin_addr.unwrap();
    for path in ["/status", "/metrics", "/consul-status"] {
        let (status, body) = get(admin, path).await;
        assert_eq!(status, 401, "{path}: {body}");
        let mut c = Conn::open(admin).await.unwrap();
        let (status, _) = c
            .send(
                http::Request::get(path).header("authorization", "Bearer s3cre7"),
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _) = c
            .send(
                http::Request::get(path).header("authorization", "Bearer s3cret"),
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{path} with the token");
    }
    assert_eq!(get(admin, "/live").await.0, 200);
    assert_eq!(get(admin, "/ready").await.0, 200);
    // The public listener never reaches the admin API.
    assert_eq!(get(d.daemon.public_addr, "/status").await.0, 404);
}

#[test]
fn the_parser_rejects_broken_expositions() {
    assert!(parse_exposition("# TYPE a counter\na_total 1\n# EOF").is_ok());
    assert!(
        parse_exposition("# TYPE a counter\na_total 1\n").is_err(),
        "no EOF"
    );
    assert!(parse_exposition("# TYPE a counter\na_total{x=\"1} 1\n# EOF").is_err());
    assert!(parse_exposition("b 1\n# EOF").is_err(), "untyped sample");
    assert!(parse_exposition("# TYPE a counter\na_total one\n# EOF").is_err());
}
