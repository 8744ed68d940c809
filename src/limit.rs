//! Rate limits: `rate_limit` (per caller, per route) and `route_rate_limit` (all callers of a
//! route together), as a pure API over [`governor`]'s GCRA limiters.
//!
//! This module owns the limiter *state* and the *decision* (allowed, or limited with a
//! `Retry-After`). It does no I/O and knows nothing of HTTP, YAML or audit entries: the config
//! turns `{ per_second, burst }` into a [`RateSpec`] with [`RateSpec::parse`], the server keeps
//! one [`RouteLimits`] per route and calls [`RouteLimits::check`] per request, and maps
//! [`Limited`] to 429 `rate_limited` with `Retry-After: {retry_after_seconds}`.
//!
//! # Shape
//!
//! - **Reject, never queue.** [`RouteLimits::check`] is synchronous and never waits: a request
//!   over its limit is answered at once with the time after which a retry can succeed, rounded
//!   up to whole seconds and at least 1 (SPEC). Delaying instead would hold connections and
//!   in-flight slots (`server.max_in_flight`) for exactly the callers that misbehave.
//! - **GCRA.** `burst` requests may arrive at once from a rested state; after that one request
//!   per `1 / per_second` seconds is allowed. The state is one atomic `u64` per key (the
//!   theoretical arrival time), updated with a compare-and-swap: no lock for the route-wide
//!   limit, and for the per-caller limit a read lock on one shard of a `DashMap`
//!   ([`DashMapStateStore`]); there is no global lock, and a shard's write lock is taken only
//!   the first time a caller is seen and during [`RouteLimits::evict_idle`].
//! - **No allocation per check.** Keys are held inline ([`MAX_CALLER_LEN`] bytes on the
//!   stack), so checking an existing caller copies the email into a stack buffer and
//!   allocates nothing; only a caller's first request inserts an entry.
//! - **Order of the two checks.** The caller's own limit is checked first and the route-wide
//!   limit only if the caller passed, so a runaway caller rejected by its own limit never eats
//!   the budget that protects the upstream for everyone else. The converse costs a little:
//!   when the route-wide limit rejects a request, the caller's own limit has already counted it
//!   (governor has no refund). That only affects callers who keep sending while the route is
//!   saturated, and they are told to wait anyway.
//! - **Bounded keys.** Per-caller state is kept per email. [`RouteLimits::evict_idle`] drops
//!   the state of callers idle long enough to be back at their full burst (their state is then
//!   indistinguishable from a fresh one, so eviction never changes a decision); call it
//!   periodically, every [`EVICT_INTERVAL`] from a background task. Emails longer than
//!   [`MAX_CALLER_LEN`] bytes (not valid emails; verified identities never are) share one
//!   bucket, so no key is ever larger than that. Check limits *after* policy allowed the
//!   request, so that only callers the config names (or a wildcard project's service accounts)
//!   can create keys at all.
//! - **Testable time.** [`RouteLimits`] is generic over a [`governor::clock::Clock`]; the
//!   default ([`DefaultClock`], governor's monotonic clock) is what `serve` uses, and tests
//!   drive [`governor::clock::FakeRelativeClock`] instead of sleeping.
//!
//! # Limits are per instance
//!
//! The state lives in the memory of one credproxy process; instances do not share it, and a
//! new or restarted instance starts with full buckets. With `N` instances serving, a caller can
//! get up to `N` times its `rate_limit`, and a route up to `N` times its `route_rate_limit`
//! (Cloud Run spreads requests over instances, so a caller usually sees close to that once
//! several instances are up). To protect an upstream quota of `Q` requests per second, set
//! `route_rate_limit.per_second` to at most `Q / max_instances` (Cloud Run's `--max-instances`)
//! and `burst` to what the upstream tolerates divided the same way; keep `max_instances` small
//! for routes whose quota is tight. Per-caller limits are sized the same way: they bound one
//! pipeline's share per instance.

pub mod concurrency;
pub mod redis;
pub mod shared;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};

/// Longest caller key kept as is, in bytes: the longest valid email address. Longer callers
/// (never a verified email) are all limited together in one shared bucket.
pub const MAX_CALLER_LEN: usize = 254;

/// How often to call [`RouteLimits::evict_idle`]: often enough that idle callers do not pile
/// up, rarely enough that the sweep (which visits every key) costs nothing measurable.
pub const EVICT_INTERVAL: Duration = Duration::from_secs(60);

/// Smallest accepted `per_second`: one request per hour.
pub const MIN_PER_SECOND: f64 = 1.0 / 3600.0;

/// Largest accepted `per_second`.
pub const MAX_PER_SECOND: f64 = 1_000_000.0;

/// Largest accepted `burst`. With [`MIN_PER_SECOND`] this keeps the time to refill a bucket
/// (at most about 114 years) inside governor's 64-bit nanosecond arithmetic.
pub const MAX_BURST: u32 = 1_000_000;

/// One validated `{ per_second, burst }` pair.
///
/// `per_second` may be fractional (`0.5` is one request every two seconds); integers from the
/// YAML are accepted as they are. The replenish interval is `1 / per_second` rounded to the
/// nanosecond.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSpec {
    per_second: f64,
    burst: NonZeroU32,
    quota: Quota,
}

impl RateSpec {
    /// Validates a `{ per_second, burst }` pair. The error is a sentence about the offending
    /// field (without its key path, which the config adds), e.g. "burst must be at least 1,
    /// got 0".
    ///
    /// `per_second` must be finite and between [`MIN_PER_SECOND`] and [`MAX_PER_SECOND`];
    /// `burst` between 1 and [`MAX_BURST`].
    pub fn parse(per_second: f64, burst: i64) -> Result<Self, String> {
        if !per_second.is_finite() {
            return Err(format!("per_second must be a number, got {per_second}"));
        }
        if per_second <= 0.0 {
            return Err(format!(
                "per_second must be greater than 0, got {per_second}"
            ));
        }
        if per_second < MIN_PER_SECOND {
            return Err(format!(
                "per_second must be at least 1/3600 (one request per hour), got {per_second}"
            ));
        }
        if per_second > MAX_PER_SECOND {
            return Err(format!(
                "per_second must be at most {MAX_PER_SECOND}, got {per_second}"
            ));
        }
        if burst < 1 {
            return Err(format!("burst must be at least 1, got {burst}"));
        }
        let burst = u32::try_from(burst)
            .ok()
            .filter(|b| *b <= MAX_BURST)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| format!("burst must be at most {MAX_BURST}, got {burst}"))?;
        // Within the bounds above the interval is between 1 µs and 1 h: never zero, never
        // out of range.
        let interval = Duration::from_nanos((1e9 / per_second).round() as u64);
        let quota = Quota::with_period(interval)
            .ok_or_else(|| format!("per_second is too large, got {per_second}"))?
            .allow_burst(burst);
        Ok(RateSpec {
            per_second,
            burst,
            quota,
        })
    }

    /// Requests per second, sustained.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Requests allowed at once from a rested state.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// How long an exhausted bucket takes to refill completely: the longest a caller must be
    /// idle (plus one interval) before [`RouteLimits::evict_idle`] drops its state.
    pub fn refill_time(&self) -> Duration {
        self.quota.burst_size_replenished_in()
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s, burst {}", self.per_second, self.burst)
    }
}

/// Which limit rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// The caller's own `rate_limit` on this route.
    Caller,
    /// The route's `route_rate_limit`, shared by all callers.
    Route,
}

impl LimitScope {
    /// `caller` or `route`, for logs and audit detail.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Caller => "caller",
            LimitScope::Route => "route",
        }
    }
}

/// A request over a limit: answer 429 `rate_limited` with `Retry-After: retry_after_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}; retry after {retry_after_seconds} s", match scope {
    LimitScope::Caller => "this caller is over its rate limit for this route",
    LimitScope::Route => "this route is over its rate limit for all callers together",
})]
pub struct Limited {
    /// Which limit said no.
    pub scope: LimitScope,
    /// Seconds until a retry can succeed (as far as this limit is concerned): whole seconds,
    /// rounded up, at least 1.
    pub retry_after_seconds: u64,
}

/// A caller email held inline, so that looking it up allocates nothing. Emails longer than
/// [`MAX_CALLER_LEN`] all map to one shared key ([`CallerKey::OVERLONG`]).
#[derive(Clone)]
struct CallerKey {
    len: u8,
    bytes: [u8; MAX_CALLER_LEN],
}

const _: () = assert!(MAX_CALLER_LEN < u8::MAX as usize);

impl CallerKey {
    /// The `len` of the shared key for over-long callers; no real key has it.
    const OVERLONG: u8 = u8::MAX;

    fn new(caller: &str) -> Self {
        let mut bytes = [0; MAX_CALLER_LEN];
        let len = match (bytes.get_mut(..caller.len()), u8::try_from(caller.len())) {
            (Some(head), Ok(len)) => {
                head.copy_from_slice(caller.as_bytes());
                len
            }
            _ => Self::OVERLONG,
        };
        CallerKey { len, bytes }
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl PartialEq for CallerKey {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CallerKey {}

impl Hash for CallerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.len);
        state.write(self.as_bytes());
    }
}

type CallerLimiter<C> =
    RateLimiter<CallerKey, DashMapStateStore<CallerKey>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type SharedLimiter<C> =
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The rate limits of one route: an optional per-caller limit and an optional route-wide one.
///
/// Build one per route when the config is loaded and keep it for the life of the process
/// (replacing it resets its state). It is `Send + Sync`; share it by reference or `Arc`.
pub struct RouteLimits<C: Clock = DefaultClock> {
    caller_spec: Option<RateSpec>,
    route_spec: Option<RateSpec>,
    per_caller: Option<CallerLimiter<C>>,
    route: Option<SharedLimiter<C>>,
    clock: C,
}

impl RouteLimits {
    /// The limits of a route: `rate_limit` (per caller) and `route_rate_limit` (all callers),
    /// each optional, on the real monotonic clock.
    pub fn new(per_caller: Option<RateSpec>, route: Option<RateSpec>) -> Self {
        Self::with_clock(per_caller, route, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RouteLimits<C> {
    /// As [`RouteLimits::new`], on the given clock (tests use
    /// [`governor::clock::FakeRelativeClock`]).
    pub fn with_clock(per_caller: Option<RateSpec>, route: Option<RateSpec>, clock: C) -> Self {
        RouteLimits {
            caller_spec: per_caller,
            route_spec: route,
            per_caller: per_caller
                .map(|spec| RateLimiter::dashmap_with_clock(spec.quota, clock.clone())),
            route: route.map(|spec| RateLimiter::direct_with_clock(spec.quota, clock.clone())),
            clock,
        }
    }
}

impl<C: Clock> RouteLimits<C> {
    /// Counts one request of `caller` (the verified email) against the caller's limit and,
    /// if that allowed it, against the route-wide limit. `Ok` means go ahead; [`Limited`]
    /// says which limit refused and when to retry. Never blocks, never allocates for a caller
    /// seen before.
    pub fn check(&self, caller: &str) -> Result<(), Limited> {
        if let Some(limiter) = &self.per_caller {
            limiter
                .check_key(&CallerKey::new(caller))
                .map_err(|not_until| self.limited(LimitScope::Caller, &not_until))?;
        }
        if let Some(limiter) = &self.route {
            limiter
                .check()
                .map_err(|not_until| self.limited(LimitScope::Route, &not_until))?;
        }
        Ok(())
    }

    /// Drops the state of callers idle long enough to be back at their full burst, then
    /// returns freed capacity. Eviction never changes a decision. Call it every
    /// [`EVICT_INTERVAL`] from a background task; it visits every key, taking each shard's
    /// write lock briefly.
    pub fn evict_idle(&self) {
        if let Some(limiter) = &self.per_caller {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many callers have state right now (for metrics and tests).
    pub fn tracked_callers(&self) -> usize {
        self.per_caller.as_ref().map_or(0, |limiter| limiter.len())
    }

    /// Whether this route has any limit at all (if not, [`RouteLimits::check`] always allows
    /// and there is nothing to evict).
    pub fn is_limited(&self) -> bool {
        self.per_caller.is_some() || self.route.is_some()
    }

    /// The per-caller limit (`rate_limit`), if any.
    pub fn caller_spec(&self) -> Option<&RateSpec> {
        self.caller_spec.as_ref()
    }

    /// The route-wide limit (`route_rate_limit`), if any.
    pub fn route_spec(&self) -> Option<&RateSpec> {
        self.route_spec.as_ref()
    }

    fn limited(&self, scope: LimitScope, not_until: &NotUntil<C::Instant>) -> Limited {
        Limited {
            scope,
            retry_after_seconds: whole_seconds(not_until.wait_time_from(self.clock.now())),
        }
    }
}

impl<C: Clock> fmt::Debug for RouteLimits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLimits")
            .field("rate_limit", &self.caller_spec)
            .field("route_rate_limit", &self.route_spec)
            .field("tracked_callers", &self.tracked_callers())
            .finish()
    }
}

/// `Retry-After` from a wait: whole seconds, rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests;
