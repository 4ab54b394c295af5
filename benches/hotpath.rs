//! Criterion micro-benchmarks of the request hot path (filled in by the benchmark work).
use criterion::{criterion_group, criterion_main, Criterion};

fn placeholder(c: &mut Criterion) {
    let table = zerodown::proxy::route::RouteTable::new(zerodown::config::default_routes());
    c.bench_function("route_match_hello", |b| b.iter(|| table.find(std::hint::black_box("/hello"))));
}

criterion_group!(benches, placeholder);
criterion_main!(benches);
