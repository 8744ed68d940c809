//! Prometheus metrics, served as text at `/_credproxy/metrics` when `metrics.enabled`
//! (on the main port, or on `metrics.listen` when set).
//!
//! One process-wide registry ([`metrics()`]), since every module reports into it. Families
//! keyed by labels take a read lock and need owned labels, so the request path never uses
//! them directly: each route holds [`RouteMetrics`], counter and histogram handles created
//! once at start, and a request only does atomic increments. Label values are route names,
//! secret references, decisions and status classes: never a caller-controlled string and
//! never a secret value.

use std::sync::LazyLock;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod sharded;
pub use sharded::{InFlightGauge, LatencyHistogram, ShardedCounter};

/// Labels of `credproxy_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name, or empty when no route was resolved.
    pub route: String,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// `2xx`, `3xx`, `4xx`, `5xx`.
    pub code_class: &'static str,
}

/// Labels naming a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route name.
    pub route: String,
}

/// Labels of `credproxy_shadow_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    /// Route name.
    pub route: String,
    /// The enforced decision, `allow` or `deny`.
    pub enforced: &'static str,
    /// What `shadow_allow` decided, `allow` or `deny`.
    pub shadow: &'static str,
}

/// Labels naming a route and a limit scope.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// Route name.
    pub route: String,
    /// `caller` or `route`.
    pub scope: &'static str,
}

/// Labels naming a secret reference (without version).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabel {
    /// `projects/P/secrets/S`, `env:NAME` or `file:/path`.
    pub secret: String,
}

/// Labels of an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric credproxy exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, decision and status class.
    pub requests: Family<RequestLabels, ShardedCounter>,
    /// Time to the upstream's response headers.
    pub upstream_seconds: Family<RouteLabel, LatencyHistogram>,
    /// Time credproxy itself spent on a request (total to response headers minus upstream).
    pub overhead_seconds: Family<RouteLabel, LatencyHistogram>,
    /// Requests refused by a rate limit.
    pub rate_limited: Family<LimitLabels, Counter>,
    /// Credential occurrences scrubbed from responses.
    pub scrubbed: Family<RouteLabel, Counter>,
    /// Requests served from the secret cache.
    pub secret_hits: Family<SecretLabel, Counter>,
    /// Requests that had to read the store (cold).
    pub secret_misses: Family<SecretLabel, Counter>,
    /// Failed refreshes.
    pub secret_refresh_failures: Family<SecretLabel, Counter>,
    /// Requests served a value whose last refresh failed (stale).
    pub secret_stale_serves: Family<SecretLabel, Counter>,
    /// JWKS fetches by result.
    pub jwks_refreshes: Family<ResultLabel, Counter>,
    /// Audit entries dropped because the queue was full.
    pub audit_dropped: Counter,
    /// Requests in flight (read from the servers' own counters when scraped).
    pub in_flight: InFlightGauge,
    /// Shadow decisions by route, enforced decision and shadow decision.
    pub shadow_decisions: Family<ShadowLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("credproxy");
    let requests = Family::default();
    registry.register(
        "requests",
        "Requests by route, decision and status class",
        requests.clone(),
    );
    let upstream_seconds = Family::default();
    registry.register(
        "upstream_duration_seconds",
        "Time until the upstream's response headers",
        upstream_seconds.clone(),
    );
    let overhead_seconds = Family::default();
    registry.register(
        "overhead_duration_seconds",
        "Time credproxy spent on a request, excluding the upstream",
        overhead_seconds.clone(),
    );
    let rate_limited = Family::default();
    registry.register(
        "rate_limited",
        "Requests refused by a rate limit",
        rate_limited.clone(),
    );
    let scrubbed = Family::default();
    registry.register(
        "scrubbed",
        "Credential occurrences scrubbed from responses",
        scrubbed.clone(),
    );
    let secret_hits = Family::default();
    registry.register(
        "secret_cache_hits",
        "Requests served from the secret cache",
        secret_hits.clone(),
    );
    let secret_misses = Family::default();
    registry.register(
        "secret_cache_misses",
        "Requests that read the secret store",
        secret_misses.clone(),
    );
    let secret_refresh_failures = Family::default();
    registry.register(
        "secret_refresh_failures",
        "Failed secret refreshes",
        secret_refresh_failures.clone(),
    );
    let secret_stale_serves = Family::default();
    registry.register(
        "secret_stale_serves",
        "Requests served a secret whose refresh is failing",
        secret_stale_serves.clone(),
    );
    let jwks_refreshes = Family::default();
    registry.register(
        "jwks_refreshes",
        "JWKS fetches by result",
        jwks_refreshes.clone(),
    );
    let audit_dropped = Counter::default();
    registry.register(
        "audit_dropped",
        "Audit entries dropped (queue full)",
        audit_dropped.clone(),
    );
    let in_flight = InFlightGauge::default();
    registry.register(
        "in_flight_requests",
        "Requests in flight",
        in_flight.clone(),
    );
    let shadow_decisions = Family::default();
    registry.register(
        "shadow_decisions",
        "Decisions of shadow_allow rules by route, enforced decision and shadow decision",
        shadow_decisions.clone(),
    );
    Metrics {
        registry,
        shadow_decisions,
        requests,
        upstream_seconds,
        overhead_seconds,
        rate_limited,
        scrubbed,
        secret_hits,
        secret_misses,
        secret_refresh_failures,
        secret_stale_serves,
        jwks_refreshes,
        audit_dropped,
        in_flight,
    }
});

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let backend = BACKEND.get().map(|(registry, _)| registry);
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| backend.map_or(Ok(()), |r| encode_registry(&mut out, r)))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }
}

/// The shared rate limiter's metrics, exported only once [`rate_limit_backend`] was called
/// (`rate_limits.backend: redis`).
#[derive(Debug)]
pub struct BackendMetrics {
    /// Failed Redis calls (calls the breaker skipped are not counted).
    pub errors: Counter,
    /// 1 while the last call succeeded, 0 after a failure (or before any answer).
    pub up: Gauge<i64, AtomicI64>,
}

static BACKEND: std::sync::OnceLock<(Registry, BackendMetrics)> = std::sync::OnceLock::new();

/// The shared rate limiter's metrics; the first call adds them to the exposition.
pub fn rate_limit_backend() -> &'static BackendMetrics {
    &BACKEND
        .get_or_init(|| {
            let mut registry = Registry::with_prefix("credproxy");
            let errors = Counter::default();
            registry.register(
                "rate_limit_backend_errors",
                "Failed calls to the shared rate-limit backend (calls skipped by the breaker are not counted)",
                errors.clone(),
            );
            let up = Gauge::default();
            registry.register(
                "rate_limit_backend_up",
                "1 while the shared rate-limit backend answers, else 0",
                up.clone(),
            );
            (registry, BackendMetrics { errors, up })
        })
        .1
}

/// Handles for one route, created once so the request path only increments atomics.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// `[decision][class]`: decision 0 allow, 1 deny; class 0..4 for 2xx..5xx (1xx counts as 2xx).
    requests: [[ShardedCounter; 4]; 2],
    /// Upstream latency.
    pub upstream: LatencyHistogram,
    /// Proxy overhead.
    pub overhead: LatencyHistogram,
    /// Scrubbed occurrences.
    pub scrubbed: Counter,
    /// `[enforced][shadow]`, 0 allow and 1 deny, on routes with `shadow_allow`.
    shadow: Option<[[Counter; 2]; 2]>,
}

const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

impl RouteMetrics {
    /// Creates (or finds) the handles of `route` (empty for requests without a route).
    pub fn new(route: &str) -> Self {
        let m = metrics();
        let counter = |decision: &'static str, code_class: &'static str| {
            m.requests.get_or_create_owned(&RequestLabels {
                route: route.to_string(),
                decision,
                code_class,
            })
        };
        let row = |decision: &'static str| CLASSES.map(|class| counter(decision, class));
        let label = RouteLabel {
            route: route.to_string(),
        };
        RouteMetrics {
            requests: [row("allow"), row("deny")],
            upstream: m.upstream_seconds.get_or_create_owned(&label),
            overhead: m.overhead_seconds.get_or_create_owned(&label),
            scrubbed: m.scrubbed.get_or_create_owned(&label),
            shadow: None,
        }
    }

    /// Adds the shadow decision handles (for a route with `shadow_allow`).
    pub fn with_shadow(mut self, route: &str, shadow: bool) -> Self {
        if shadow {
            let m = metrics();
            let counter = |enforced: &'static str, shadow: &'static str| {
                m.shadow_decisions.get_or_create_owned(&ShadowLabels {
                    route: route.to_string(),
                    enforced,
                    shadow,
                })
            };
            self.shadow = Some([
                [counter("allow", "allow"), counter("allow", "deny")],
                [counter("deny", "allow"), counter("deny", "deny")],
            ]);
        }
        self
    }

    /// Counts one shadow decision.
    pub fn count_shadow(&self, enforced_allow: bool, shadow_allow: bool) {
        if let Some(shadow) = &self.shadow {
            shadow[usize::from(!enforced_allow)][usize::from(!shadow_allow)].inc();
        }
    }

    /// Counts one finished request, on serving thread `shard`'s part.
    pub fn count(&self, shard: usize, allowed: bool, status: u16) {
        let class = match status {
            300..=399 => 1,
            400..=499 => 2,
            500..=599 => 3,
            _ => 0,
        };
        self.requests[usize::from(!allowed)][class].inc(shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_decision_and_class() {
        let r = RouteMetrics::new("metrics-test-route");
        r.count(0, true, 200);
        r.count(1, false, 403);
        r.count(0, false, 403);
        r.upstream.observe(1, std::time::Duration::from_millis(10));
        let text = metrics().encode();
        assert!(
            text.contains(r#"credproxy_requests_total{route="metrics-test-route",decision="deny",code_class="4xx"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"credproxy_requests_total{route="metrics-test-route",decision="allow",code_class="2xx"} 1"#));
        assert!(text.contains("credproxy_upstream_duration_seconds_bucket"));
    }
}
