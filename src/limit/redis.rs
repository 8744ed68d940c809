//! Shared rate limits (`rate_limits.backend: redis`): every instance counts each route's
//! `rate_limit` and `route_rate_limit` in one Redis (Memorystore for Redis, Valkey), so a
//! limit holds across any number of instances.
//!
//! Per request ([`SharedLimits::check`]):
//! 1. The over-limit memo ([`Memo`]): a key Redis found over its limit is answered here,
//!    429 with the same `Retry-After`, until its next request would be admitted: no Redis
//!    call, whatever the backend's state.
//! 2. The breaker ([`Breaker`]): after 3 consecutive failed calls, no call for 1 s, then one
//!    probe while the other requests take the failure mode.
//! 3. One script call ([`client::SCRIPT`]) covering the caller key and the route key, on the
//!    server's clock, bounded as a whole by `timeout_ms`.
//! 4. On failure, `on_backend_failure`: `local` (this instance's share, `limit /
//!    max_instances`, in the same in-memory GCRA as `backend: local`), `open` or `closed`
//!    (503 `rate_limiter_unavailable`).
//!
//! Logs: a WARNING per kind of failure at most once per 10 s, one INFO on recovery.
//! Metrics: `credproxy_rate_limit_backend_errors_total`, `credproxy_rate_limit_backend_up`.

pub mod client;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{RedisSettings, RouteSpec};
use crate::limit::shared::{
    Breaker, FailureMode, Gate, Memo, Throttle, WARN_INTERVAL, caller_key, per_instance,
    retry_after_seconds, route_key, script_args,
};
use crate::limit::{LimitScope, Limited, RateSpec, RouteLimits};
use crate::secrets::SecretStore;
use client::{Failure, RedisClient};

/// Why a request may not go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over a limit: 429.
    Limited(Limited),
    /// Redis failing with `on_backend_failure: closed`: 503 `rate_limiter_unavailable`.
    Unavailable,
}

/// The limits of one route as Redis counts them.
#[derive(Debug)]
struct Route {
    caller: Option<RateSpec>,
    route: Option<RateSpec>,
    route_key: String,
    /// This instance's share, for `on_backend_failure: local`.
    fallback: Option<RouteLimits>,
}

/// Shared limits of every route, one per process.
pub struct SharedLimits {
    client: RedisClient,
    prefix: String,
    mode: FailureMode,
    routes: HashMap<String, Route>,
    memo: Memo,
    breaker: Breaker,
    warnings: Throttle,
    metrics: &'static crate::metrics::BackendMetrics,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("client", &self.client)
            .field("on_backend_failure", &self.mode)
            .finish()
    }
}

/// The breaker's probe, reported as failed if the request is dropped before it ends.
struct Probe<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.failure(Instant::now(), true);
        }
    }
}

impl SharedLimits {
    /// The shared limits of `routes` in the Redis of `settings`, the AUTH string and CA
    /// bundle read from `store`, one connection per serving thread.
    pub fn new(
        settings: &RedisSettings,
        routes: &[RouteSpec],
        store: Arc<SecretStore>,
        threads: usize,
    ) -> Result<Self, String> {
        let entry = |r: &crate::secrets::SecretRef| {
            store
                .entry(r)
                .ok_or_else(|| format!("no secret entry for {}", r.resource()))
        };
        let auth = settings.auth.as_ref().map(entry).transpose()?;
        let ca = settings.ca_bundle.as_ref().map(entry).transpose()?;
        let client = RedisClient::new(
            &settings.url,
            store.clone(),
            auth,
            ca,
            settings.timeout,
            threads,
        )?;
        let share = |spec: Option<RateSpec>| spec.map(|s| per_instance(&s, settings.max_instances));
        let routes = routes
            .iter()
            .filter(|r| r.rate_limit.is_some() || r.route_rate_limit.is_some())
            .map(|r| {
                let fallback = (settings.on_backend_failure == FailureMode::Local)
                    .then(|| RouteLimits::new(share(r.rate_limit), share(r.route_rate_limit)));
                (
                    r.name.clone(),
                    Route {
                        caller: r.rate_limit,
                        route: r.route_rate_limit,
                        route_key: route_key(&settings.key_prefix, &r.name),
                        fallback,
                    },
                )
            })
            .collect();
        let metrics = crate::metrics::rate_limit_backend();
        metrics.up.set(0);
        Ok(SharedLimits {
            client,
            prefix: settings.key_prefix.clone(),
            mode: settings.on_backend_failure,
            routes,
            memo: Memo::default(),
            breaker: Breaker::default(),
            warnings: Throttle::new(WARN_INTERVAL),
            metrics,
        })
    }

    /// Counts one request of `caller` on `route` (served on `thread`). Never waits longer
    /// than `timeout_ms` on Redis, and not at all for a memoised key or an open breaker.
    pub async fn check(&self, route: &str, caller: &str, thread: usize) -> Result<(), Refusal> {
        let Some(r) = self.routes.get(route) else {
            return Ok(());
        };
        let caller_key = r.caller.map(|_| caller_key(&self.prefix, route, caller));
        let now = Instant::now();
        // 1. The memo, caller first (as the local limiter orders them).
        let memoised = [
            caller_key.as_deref().map(|k| (LimitScope::Caller, k)),
            r.route.map(|_| (LimitScope::Route, r.route_key.as_str())),
        ];
        for (scope, key) in memoised.into_iter().flatten() {
            if let Some(wait) = self.memo.wait(key, now) {
                return Err(Refusal::Limited(Limited {
                    scope,
                    retry_after_seconds: retry_after_seconds(wait),
                }));
            }
        }
        // 2. The breaker.
        let mut probe = match self.breaker.gate(now) {
            Gate::Skip => return self.failure_mode(r, caller),
            Gate::Call => None,
            Gate::Probe => Some(Probe {
                breaker: &self.breaker,
                armed: true,
            }),
        };
        // 3. One script call.
        let mut keys: Vec<(LimitScope, &str)> = Vec::with_capacity(2);
        let mut args: Vec<u64> = Vec::with_capacity(4);
        for (scope, key, spec) in [
            (LimitScope::Caller, caller_key.as_deref(), r.caller),
            (LimitScope::Route, Some(r.route_key.as_str()), r.route),
        ] {
            if let (Some(key), Some(spec)) = (key, spec) {
                let (interval, burst) = script_args(&spec);
                keys.push((scope, key));
                args.extend([interval, burst]);
            }
        }
        let names: Vec<&str> = keys.iter().map(|(_, k)| *k).collect();
        let result = self.client.eval(thread, &names, &args).await;
        if let Some(p) = probe.as_mut() {
            p.armed = false;
        }
        let reply = match result.and_then(|reply| parse(&reply, keys.len())) {
            Ok(reply) => reply,
            Err(failure) => {
                self.failed(&failure, probe.is_some());
                return self.failure_mode(r, caller);
            }
        };
        self.answered();
        if reply.admitted {
            return Ok(());
        }
        // 4. Over a limit: memoise every key that said no, answer with the first.
        let now = Instant::now();
        let mut refusal = None;
        for ((scope, key), wait) in keys.iter().zip(reply.waits) {
            if wait.is_zero() {
                continue;
            }
            self.memo.hold(key, now, wait);
            refusal.get_or_insert(Limited {
                scope: *scope,
                retry_after_seconds: retry_after_seconds(wait),
            });
        }
        Err(Refusal::Limited(refusal.unwrap_or(Limited {
            scope: keys.first().map_or(LimitScope::Route, |(s, _)| *s),
            retry_after_seconds: 1,
        })))
    }

    /// A start-up PING, so `credproxy_rate_limit_backend_up` and the log tell at once whether
    /// Redis answers. Never blocks readiness.
    pub async fn warm(&self) {
        match self.client.ping().await {
            Ok(()) => {
                self.answered();
                tracing::info!(
                    timeout_ms = self.client.timeout().as_millis() as u64,
                    "rate-limit backend answers"
                );
            }
            Err(failure) => self.failed(&failure, false),
        }
    }

    /// Forgets memoised keys whose time has passed and idle fallback state; call it
    /// periodically.
    pub fn sweep(&self) {
        self.memo.sweep(Instant::now());
        for r in self.routes.values() {
            if let Some(f) = &r.fallback {
                f.evict_idle();
            }
        }
    }

    /// Keys memoised right now (tests).
    pub fn memoised(&self) -> usize {
        self.memo.len()
    }

    fn answered(&self) {
        if self.breaker.success() {
            tracing::info!("rate-limit backend recovered: shared limits in force again");
        }
        self.metrics.up.set(1);
    }

    fn failed(&self, failure: &Failure, probe: bool) {
        self.metrics.errors.inc();
        self.metrics.up.set(0);
        self.breaker.failure(Instant::now(), probe);
        let kind = failure.kind();
        if self.warnings.claim(kind, Instant::now()) {
            tracing::warn!(
                kind,
                error = %failure,
                on_backend_failure = self.mode.as_str(),
                "rate-limit backend failed; requests take the failure mode"
            );
        }
    }

    fn failure_mode(&self, r: &Route, caller: &str) -> Result<(), Refusal> {
        match self.mode {
            FailureMode::Open => Ok(()),
            FailureMode::Closed => Err(Refusal::Unavailable),
            FailureMode::Local => match &r.fallback {
                Some(f) => f.check(caller).map_err(Refusal::Limited),
                None => Ok(()),
            },
        }
    }
}

/// The script's reply.
struct Reply {
    admitted: bool,
    waits: Vec<Duration>,
}

fn parse(reply: &[i64], keys: usize) -> Result<Reply, Failure> {
    match reply.split_first() {
        Some((&admitted, waits)) if waits.len() == keys && (admitted == 0 || admitted == 1) => {
            Ok(Reply {
                admitted: admitted == 1,
                waits: waits
                    .iter()
                    .map(|&us| Duration::from_micros(us.max(0) as u64))
                    .collect(),
            })
        }
        _ => Err(Failure::Reply(format!(
            "the script answered {} values for {keys} keys",
            reply.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_reply_is_read_per_key_and_a_wrong_shape_is_a_failure() {
        let r = parse(&[1, 0, 0], 2).expect("admitted");
        assert!(r.admitted);
        let r = parse(&[0, 0, 1_500_000], 2).expect("refused");
        assert!(!r.admitted);
        assert_eq!(r.waits, vec![Duration::ZERO, Duration::from_millis(1500)]);
        assert_eq!(retry_after_seconds(r.waits[1]), 2);
        for bad in [&[][..], &[1, 0][..], &[2, 0, 0][..], &[1, 0, 0, 0][..]] {
            assert!(matches!(parse(bad, 2), Err(Failure::Reply(_))), "{bad:?}");
        }
    }
}
