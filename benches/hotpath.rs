//! Criterion micro-benchmarks of the request hot path and of the publish path.
//!
//! Run (quick settings, ~2 minutes on 2 cores):
//!   cargo bench --bench hotpath -- --warm-up-time 1 --measurement-time 3
//! One group only, e.g.:
//!   cargo bench --bench hotpath -- publish
//!
//! Groups:
//! - `route_match`   `RouteTable::find` on the default routes (plain, rewritten, near-miss, with query).
//! - `pick`          `balance::pick` on pools of 2, 100 and 10,000 members (round-robin cursor moving).
//! - `headers`       the request-side rewrite the proxy does per request: `strip_hop_by_hop` +
//!   `set_forwarded` on a typical client header set (and the response-side strip),
//!   each including a clone of the map (`*_clone` alone is the baseline).
//! - `snapshot_load` `Publisher::load` (guard) and `load_full` (owned `Arc`, what the proxy uses).
//! - `publish`       building and publishing a snapshot (`Publisher::offer`) for pools of 2, 100 and
//!   10,000 instances; alternates between two candidate sets that differ in one
//!   instance id, so every offer really swaps (an unchanged offer is skipped).
//! - `publish_noop`  an offer identical to what is served (the "nothing changed" check).
//! - `file_parse`    parsing an upstreams file of 2, 100 and 10,000 instances (the file source's
//!   per-change cost before `offer`).
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::header::{self, HeaderMap, HeaderValue};

use std::sync::Arc;
use zerodown::config::default_routes;
use zerodown::core::balance::{pick, Tried};
use zerodown::core::{Candidates, Endpoint, Instance, Member, Pool, Publisher, SourceInfo};
use zerodown::http::proxy::headers::{set_forwarded, strip_hop_by_hop, Peer};
use zerodown::http::proxy::route::RouteTable;
use zerodown::telemetry::metrics::Metrics;

const SIZES: [usize; 3] = [2, 100, 10_000];

fn instance(i: usize, version: &str, tag: &str) -> Instance {
    Instance {
        id: format!("hello-{version}-{i:05}"),
        address: format!("10.{}.{}.{}:8080", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        version: version.to_string(),
        tags: vec![tag.to_string()],
        hsms: None,
    }
}

fn instances(n: usize, version: &str, tag: &str) -> Vec<Instance> {
    (0..n).map(|i| instance(i, version, tag)).collect()
}

fn source() -> SourceInfo {
    SourceInfo {
        kind: "file",
        origin: "/bench/upstreams.toml".into(),
        index: None,
    }
}

fn pool_of(n: usize) -> Pool {
    let members = instances(n, "v1", "active")
        .into_iter()
        .map(|i| Member {
            endpoint: std::sync::Arc::new(Endpoint::new(i.address.clone())),
            instance: std::sync::Arc::new(i),
        })
        .collect();
    Pool::new(members, None)
}

fn route_match(c: &mut Criterion) {
    let table = RouteTable::new(default_routes());
    let mut g = c.benchmark_group("route_match");
    for path in [
        "/hello",
        "/standby",
        "/standby/x?q=1",
        "/standbyx",
        "/hello?a=1&b=2",
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(path), path, |b, p| {
            b.iter(|| {
                table
                    .find(None, black_box(p))
                    .map(|m| m.path_and_query.len())
            })
        });
    }
    g.finish();
}

fn pick_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in SIZES {
        let pool = pool_of(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
            b.iter(|| {
                let tried = Tried::default();
                pick(pool, black_box(pool.next_start()), &tried)
            })
        });
    }
    // A retry: the first pick was tried already.
    let pool = pool_of(2);
    g.bench_function("2_retry", |b| {
        b.iter(|| {
            let start = pool.next_start();
            let mut tried = Tried::default();
            let first = pick(&pool, start, &tried).unwrap();
            tried.insert(first);
            pick(&pool, black_box(start), &tried)
        })
    });
    g.finish();
}

fn client_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
    h.insert(header::USER_AGENT, HeaderValue::from_static("wrk/4.2"));
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h
}

fn upstream_response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("62"));
    h.insert(
        header::DATE,
        HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
    );
    h.insert("x-version", HeaderValue::from_static("v1"));
    h
}

fn headers_bench(c: &mut Criterion) {
    // Each case clones a template map and rewrites it inside the timed loop (inputs stay hot in
    // cache, as on the request path); subtract `*_clone` to get the rewrite alone.
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let req = client_headers();
    let mut req_xff = client_headers();
    req_xff.insert(
        "x-forwarded-for",
        HeaderValue::from_static("10.0.0.1, 10.0.0.2"),
    );
    let resp = upstream_response_headers();
    let peer_info = Peer::new(std::net::SocketAddr::new(peer, 40000), "http");
    let mut g = c.benchmark_group("headers");
    g.bench_function("request_clone", |b| b.iter(|| black_box(&req).clone()));
    g.bench_function("request_clone_strip", |b| {
        b.iter(|| {
            let mut h = black_box(&req).clone();
            strip_hop_by_hop(&mut h);
            h
        })
    });
    g.bench_function("request_clone_set_forwarded", |b| {
        b.iter(|| {
            let mut h = black_box(&req).clone();
            let host = h.get(header::HOST).cloned();
            set_forwarded(&mut h, &peer_info, host.as_ref(), false);
            h
        })
    });
    g.bench_function("request_clone_rewrite", |b| {
        b.iter(|| {
            let mut h = black_box(&req).clone();
            let host = h.get(header::HOST).cloned();
            strip_hop_by_hop(&mut h);
            set_forwarded(&mut h, &peer_info, host.as_ref(), false);
            h
        })
    });
    g.bench_function("request_clone_rewrite_trusted_xff", |b| {
        b.iter(|| {
            let mut h = black_box(&req_xff).clone();
            let host = h.get(header::HOST).cloned();
            strip_hop_by_hop(&mut h);
            set_forwarded(&mut h, &peer_info, host.as_ref(), true);
            h
        })
    });
    g.bench_function("response_clone", |b| b.iter(|| black_box(&resp).clone()));
    g.bench_function("response_clone_strip", |b| {
        b.iter(|| {
            let mut h = black_box(&resp).clone();
            strip_hop_by_hop(&mut h);
            h
        })
    });
    g.bench_function("peer_to_string", |b| b.iter(|| black_box(peer).to_string()));
    g.finish();
}

fn snapshot_load(c: &mut Criterion) {
    let p = Publisher::new("hello-service", true, Arc::new(Metrics::new()));
    p.offer(Candidates {
        active: instances(2, "v1", "active"),
        standby: instances(2, "v2", "standby"),
        source: source(),
    });
    let mut g = c.benchmark_group("snapshot_load");
    g.bench_function("load_guard", |b| {
        b.iter(|| black_box(p.load()).active.members.len())
    });
    g.bench_function("load_full_arc", |b| {
        b.iter(|| black_box(p.load_full()).active.members.len())
    });
    g.finish();
}

fn publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish");
    for n in SIZES {
        if n >= 10_000 {
            g.sample_size(10);
            g.measurement_time(Duration::from_secs(10));
        }
        let p = Publisher::new("hello-service", true, Arc::new(Metrics::new()));
        let a = instances(n, "v1", "active");
        let mut b_set = a.clone();
        b_set[0].id.push_str("-b");
        let standby = instances(n.min(2), "v2", "standby");
        let sets = [a, b_set];
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    k += 1;
                    Candidates {
                        active: sets[k % 2].clone(),
                        standby: standby.clone(),
                        source: source(),
                    }
                },
                |cands| assert!(p.offer(cands)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("publish_noop");
    for n in SIZES {
        if n >= 10_000 {
            g.sample_size(10);
        }
        let p = Publisher::new("hello-service", true, Arc::new(Metrics::new()));
        let a = instances(n, "v1", "active");
        let standby = instances(n.min(2), "v2", "standby");
        let cands = Candidates {
            active: a,
            standby,
            source: source(),
        };
        p.offer(cands.clone());
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || cands.clone(),
                |c| assert!(!p.offer(c)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn file_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("file_parse");
    for n in SIZES {
        if n >= 10_000 {
            g.sample_size(10);
            g.measurement_time(Duration::from_secs(10));
        }
        let mut text = String::new();
        for i in instances(n, "v1", "active") {
            text.push_str(&format!(
                "[[instances]]\nid = \"{}\"\naddress = \"{}\"\nversion = \"{}\"\ntags = [\"active\"]\n\n",
                i.id, i.address, i.version
            ));
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, t| {
            b.iter(|| {
                zerodown::core::discovery::file::parse(black_box(t), "bench")
                    .unwrap()
                    .len()
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    route_match,
    pick_bench,
    headers_bench,
    snapshot_load,
    publish,
    file_parse
);
criterion_main!(benches);
