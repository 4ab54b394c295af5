//! A Prometheus histogram whose `observe` takes no lock. `prometheus_client`'s own holds a mutex
//! per series; every request records one, and with a worker per core the workers would take
//! turns on it (and bounce its cache line) for each request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Cumulative on export, as Prometheus wants; counted per bucket here.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending; the last bucket (+Inf) has none.
    bounds: Box<[f64]>,
    /// One count per bound, then +Inf.
    counts: Box<[AtomicU64]>,
    /// The sum's `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: impl Iterator<Item = f64>) -> Histogram {
        let bounds: Box<[f64]> = bounds.collect();
        Histogram {
            inner: Arc::new(Inner {
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                bounds,
                sum: AtomicU64::new(0f64.to_bits()),
            }),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = &self.inner;
        // `le` is inclusive: the first bound not below v (NaN lands in +Inf).
        let bucket = i.bounds.partition_point(|b| *b < v);
        i.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = i
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((f64::from_bits(s) + v).to_bits())
            });
    }

    /// (sum, count). The count is the buckets' total, so a scrape's `_count` always equals its
    /// `+Inf` bucket.
    pub fn totals(&self) -> (f64, u64) {
        let i = &self.inner;
        let count = i.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        (f64::from_bits(i.sum.load(Ordering::Relaxed)), count)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let i = &self.inner;
        let buckets: Vec<(f64, u64)> = i
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(i.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = f64::from_bits(i.sum.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_are_inclusive_and_exported_cumulative() {
        let h = Histogram::new([0.1, 1.0].into_iter());
        for v in [0.05, 0.1, 0.5, 1.0, 7.0] {
            h.observe(v);
        }
        assert_eq!(h.totals(), (8.65, 5));
        let mut r = Registry::default();
        type ByPool = Family<[(&'static str, &'static str); 1], Histogram, fn() -> Histogram>;
        let f: ByPool = Family::new_with_constructor(|| Histogram::new([0.1, 1.0].into_iter()));
        f.get_or_create(&[("pool", "active")]).observe(0.1);
        r.register("d", "d", h.clone());
        r.register("f", "f", f);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for line in [
            "d_bucket{le=\"0.1\"} 2",
            "d_bucket{le=\"1.0\"} 4",
            "d_bucket{le=\"+Inf\"} 5",
            "d_count 5",
            "d_sum 8.65",
            "f_bucket{le=\"0.1\",pool=\"active\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }
}
