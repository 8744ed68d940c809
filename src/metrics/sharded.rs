//! Request-path metrics without a shared write: one shard per serving thread, summed only
//! when `/_credproxy/metrics` is scraped.
//!
//! prometheus-client's `Histogram` takes a mutex per observation, and its `Counter` is one
//! atomic: both serving threads writing the same route's metrics bounce those cache lines
//! between cores on every request. Here a serving thread writes only its own shard (its
//! own cache line), with relaxed atomic adds; the exposition is the same text.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per metric: the serving threads (one per core), at most 64. A thread index
/// beyond them wraps around, which is still correct, only shared.
fn shard_count() -> usize {
    static COUNT: LazyLock<usize> =
        LazyLock::new(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(64)));
    *COUNT
}

/// One default shard per serving thread.
fn new_shards<T: Default>() -> Arc<[T]> {
    (0..shard_count()).map(|_| T::default()).collect()
}

/// Serving thread `shard`'s part (wrapping around past the last).
fn part<T>(shards: &[T], shard: usize) -> &T {
    &shards[shard % shards.len()]
}

/// Upper bounds of the latency buckets, in seconds: 100 µs doubling to about 52 s (as
/// `exponential_buckets(0.0001, 2.0, 20)`), then `+Inf`.
const BOUNDS: usize = 20;
const FIRST_BOUND_NANOS: u64 = 100_000;

/// The bucket of an observation of `nanos`: the first bound at or above it.
fn bucket(nanos: u64) -> usize {
    // The smallest i with nanos <= 100 µs × 2^i is ceil(log2(ceil(nanos / 100 µs))).
    let units = nanos.div_ceil(FIRST_BOUND_NANOS);
    if units <= 1 {
        return 0;
    }
    ((u64::BITS - (units - 1).leading_zeros()) as usize).min(BOUNDS)
}

/// One serving thread's part of a histogram, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct HistogramShard {
    buckets: [AtomicU64; BOUNDS + 1],
    sum_nanos: AtomicU64,
}

/// A latency histogram (seconds) with one shard per serving thread.
#[derive(Clone)]
pub struct LatencyHistogram {
    shards: Arc<[HistogramShard]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            shards: new_shards(),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sum, count, _) = self.snapshot();
        f.debug_struct("LatencyHistogram")
            .field("count", &count)
            .field("sum", &sum)
            .finish()
    }
}

impl LatencyHistogram {
    /// Records `elapsed`, on serving thread `shard`'s part.
    pub fn observe(&self, shard: usize, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let part = part(&self.shards, shard);
        part.buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        part.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Sum (seconds), count, and each bucket's own count with its upper bound.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        static UPPER: LazyLock<Vec<f64>> = LazyLock::new(|| {
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, BOUNDS as u16)
                .chain([f64::INFINITY])
                .collect()
        });
        let mut buckets: Vec<(f64, u64)> = UPPER.iter().map(|&b| (b, 0)).collect();
        let mut sum_nanos = 0u64;
        for part in self.shards.iter() {
            for (total, count) in buckets.iter_mut().zip(&part.buckets) {
                total.1 += count.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(part.sum_nanos.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        (sum_nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One serving thread's part of a counter, alone on its cache line.
#[repr(align(128))]
#[derive(Default)]
struct CounterShard(AtomicU64);

/// A counter with one shard per serving thread.
#[derive(Clone)]
pub struct ShardedCounter {
    shards: Arc<[CounterShard]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter {
            shards: new_shards(),
        }
    }
}

impl std::fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedCounter").field(&self.get()).finish()
    }
}

impl ShardedCounter {
    /// Adds one, on serving thread `shard`'s part.
    pub fn inc(&self, shard: usize) {
        part(&self.shards, shard).0.fetch_add(1, Ordering::Relaxed);
    }

    /// The total over every shard.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// `credproxy_in_flight_requests`, read at scrape time from the in-flight counters the
/// request path keeps anyway (one per running server), instead of a second shared atomic
/// written twice per request.
#[derive(Clone, Default)]
pub struct InFlightGauge {
    sources: Arc<Mutex<Vec<Weak<AtomicUsize>>>>,
}

impl std::fmt::Debug for InFlightGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("InFlightGauge").field(&self.get()).finish()
    }
}

impl InFlightGauge {
    /// Counts `in_flight` into the gauge while it lives.
    pub fn track(&self, in_flight: &Arc<AtomicUsize>) {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sources.retain(|s| s.strong_count() > 0);
        sources.push(Arc::downgrade(in_flight));
    }

    /// Requests in flight now, over every live server.
    pub fn get(&self) -> i64 {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = sources
            .iter()
            .filter_map(Weak::upgrade)
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        i64::try_from(total).unwrap_or(i64::MAX)
    }
}

impl TypedMetric for InFlightGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for InFlightGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    use proptest::prelude::*;

    fn text_of(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(name, "help", metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        out
    }

    proptest! {
        /// The same observations give the same buckets as prometheus-client's histogram
        /// (away from a bound by a microsecond, where f64 seconds and integer nanoseconds
        /// may round a value to different sides).
        #[test]
        fn buckets_match_prometheus_client(nanos in proptest::collection::vec(0u64..120_000_000_000, 1..40)) {
            let bounds: Vec<f64> = exponential_buckets(0.0001, 2.0, 20).collect();
            let near_bound = |n: u64| bounds.iter().any(|b| ((b * 1e9) - n as f64).abs() < 1000.0);
            let nanos: Vec<u64> = nanos.into_iter().filter(|&n| !near_bound(n)).collect();
            let ours = LatencyHistogram::default();
            let theirs = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
            for (i, &n) in nanos.iter().enumerate() {
                ours.observe(i, Duration::from_nanos(n));
                theirs.observe(n as f64 / 1e9);
            }
            let buckets = |text: String| -> Vec<String> {
                text.lines().filter(|l| l.contains("_bucket") || l.ends_with("_count") || l.contains("_count ")).map(str::to_string).collect()
            };
            prop_assert_eq!(buckets(text_of("h", ours.clone())), buckets(text_of("h", theirs)));
            let (sum, count, _) = ours.snapshot();
            prop_assert_eq!(count, nanos.len() as u64);
            let expected: f64 = nanos.iter().map(|&n| n as f64 / 1e9).sum();
            prop_assert!((sum - expected).abs() < 1e-6);
        }
    }

    #[test]
    fn bucket_bounds_are_inclusive() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(100_000), 0);
        assert_eq!(bucket(100_001), 1);
        assert_eq!(bucket(200_000), 1);
        assert_eq!(bucket(200_001), 2);
        assert_eq!(bucket(u64::MAX), BOUNDS);
    }

    #[test]
    fn counters_sum_their_shards() {
        let c = ShardedCounter::default();
        for shard in 0..200 {
            c.inc(shard);
        }
        assert_eq!(c.get(), 200);
        assert!(text_of("c", c).contains("c_total 200"));
    }

    #[test]
    fn the_gauge_follows_live_counters_only() {
        let g = InFlightGauge::default();
        let a = Arc::new(AtomicUsize::new(3));
        g.track(&a);
        {
            let b = Arc::new(AtomicUsize::new(4));
            g.track(&b);
            assert_eq!(g.get(), 7);
        }
        assert_eq!(g.get(), 3);
        assert!(text_of("g", g).contains("g 3"));
    }
}
