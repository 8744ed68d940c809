//! The pure half of shared rate limits (`rate_limits.backend: redis`): the key names, the
//! per-instance share of a limit, the over-limit memo, the breaker and the log throttle.
//! No I/O: [`crate::limit::redis`] does the Redis exchange and calls into these, and the
//! tests here drive them on tokio's paused clock.
//!
//! - **Keys** ([`route_key`], [`caller_key`]): `<prefix>{<route>}:route` and
//!   `<prefix>{<route>}:caller:<16 hex of SHA-256(email)>`. The braces are a hash tag, so the
//!   two keys of one request live in one cluster slot; the email is never in clear.
//! - **Memo** ([`Memo`]): a key Redis found over its limit is answered locally until the time
//!   its next request would be admitted, so a caller hammering a limit costs no round trips.
//! - **Breaker** ([`Breaker`]): after [`BREAKER_FAILURES`] consecutive failed calls, no call
//!   for [`BREAKER_OPEN`]; then one probe while the others take the failure mode.
//! - **Per-instance share** ([`per_instance`]): what `on_backend_failure: local` enforces.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::limit::RateSpec;

/// Consecutive failed calls that open the breaker.
pub const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker makes no call before one probe.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// At most one WARNING per kind of failure per this interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Default `rate_limits.redis.timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20);
/// Default `rate_limits.redis.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "credproxy:";

/// `rate_limits.on_backend_failure`: what a request gets while Redis fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Each instance enforces its share of each limit (`limit / max_instances`).
    Local,
    /// Admit.
    Open,
    /// 503 `rate_limiter_unavailable`.
    Closed,
}

impl FailureMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Local => "local",
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }

    /// Parses the config spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "local" => Some(FailureMode::Local),
            "open" => Some(FailureMode::Open),
            "closed" => Some(FailureMode::Closed),
            _ => None,
        }
    }
}

/// The route key: `<prefix>{<route>}:route`.
pub fn route_key(prefix: &str, route: &str) -> String {
    format!("{prefix}{{{route}}}:route")
}

/// The caller key: `<prefix>{<route>}:caller:<first 16 hex digits of SHA-256(email)>`.
pub fn caller_key(prefix: &str, route: &str, caller: &str) -> String {
    use std::fmt::Write as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, caller.as_bytes());
    let mut key = format!("{prefix}{{{route}}}:caller:");
    for byte in digest.as_ref().iter().take(8) {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// The GCRA parameters of a limit as the script takes them: the emission interval in whole
/// microseconds (at least 1) and the burst.
pub fn script_args(spec: &RateSpec) -> (u64, u64) {
    let interval = (1e6 / spec.per_second()).round().max(1.0) as u64;
    (interval, u64::from(spec.burst().get()))
}

/// One instance's share of a limit: `per_second / max_instances` (fractional) and
/// `ceil(burst / max_instances)`, at least 1.
pub fn per_instance(spec: &RateSpec, max_instances: u32) -> RateSpec {
    let n = max_instances.max(1);
    let per_second = (spec.per_second() / f64::from(n)).max(crate::limit::MIN_PER_SECOND);
    let burst = spec.burst().get().div_ceil(n).max(1);
    RateSpec::parse(per_second, i64::from(burst)).unwrap_or(*spec)
}

/// `Retry-After` from a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

// ------------------------------------------------------------------------------------------
// Memo

/// Keys found over their limit, each until the time its next request would be admitted.
#[derive(Debug, Default)]
pub struct Memo {
    until: DashMap<Box<str>, Instant>,
}

impl Memo {
    /// How long `key` is still over its limit, if it is memoised.
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let until = *self.until.get(key)?;
        (until > now).then(|| until - now)
    }

    /// Remembers that `key` is over its limit for `wait` from `now`.
    pub fn hold(&self, key: &str, now: Instant, wait: Duration) {
        self.until.insert(Box::from(key), now + wait);
    }

    /// Forgets every key whose time has passed. Call it periodically.
    pub fn sweep(&self, now: Instant) {
        self.until.retain(|_, until| *until > now);
    }

    /// Keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

// ------------------------------------------------------------------------------------------
// Breaker

/// What the breaker lets a request do.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Call Redis.
    Call,
    /// Call Redis as the one probe of an open breaker; report the outcome with
    /// [`Breaker::success`] or [`Breaker::failure`] with `probe: true`.
    Probe,
    /// Do not call: take the failure mode.
    Skip,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Per-instance breaker: [`BREAKER_FAILURES`] consecutive failures open it for
/// [`BREAKER_OPEN`]; then exactly one probe goes through, and a failed probe opens it again.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<BreakerState>,
}

impl Breaker {
    /// Whether a request may call Redis now.
    pub fn gate(&self, now: Instant) -> Gate {
        let Ok(mut s) = self.state.lock() else {
            return Gate::Call;
        };
        if s.failures < BREAKER_FAILURES {
            return Gate::Call;
        }
        if s.probing || s.open_until.is_some_and(|t| now < t) {
            return Gate::Skip;
        }
        s.probing = true;
        Gate::Probe
    }

    /// A call succeeded: closed again. Returns whether the backend had been failing.
    pub fn success(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let was_failing = s.failures > 0;
        *s = BreakerState::default();
        was_failing
    }

    /// A call failed (`probe`: it was the probe, or a probe given up).
    pub fn failure(&self, now: Instant, probe: bool) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.failures = s.failures.saturating_add(1);
        if probe {
            s.probing = false;
            s.open_until = Some(now + BREAKER_OPEN);
        } else if s.failures == BREAKER_FAILURES {
            s.open_until = Some(now + BREAKER_OPEN);
        }
    }

    /// Whether the breaker is open (no calls but a probe).
    pub fn is_open(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.failures >= BREAKER_FAILURES)
    }
}

// ------------------------------------------------------------------------------------------
// Log throttle

/// At most one log line per kind per interval.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Mutex<HashMap<&'static str, Instant>>,
}

impl Throttle {
    /// One line per kind per `interval`.
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line of `kind` may be written now (and claims it).
    pub fn claim(&self, kind: &'static str, now: Instant) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        match last.get(kind) {
            Some(t) if now.duration_since(*t) < self.interval => false,
            _ => {
                last.insert(kind, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(per_second: f64, burst: i64) -> RateSpec {
        RateSpec::parse(per_second, burst).expect("spec")
    }

    #[test]
    fn keys_share_the_route_hash_tag_and_hide_the_email() {
        let email = "daily-sales@acme.iam.gserviceaccount.com";
        assert_eq!(
            route_key("credproxy:", "stripe"),
            "credproxy:{stripe}:route"
        );
        let key = caller_key("credproxy:", "stripe", email);
        assert!(key.starts_with("credproxy:{stripe}:caller:"), "{key}");
        let hex = key.rsplit(':').next().expect("hex");
        assert_eq!(hex.len(), 16);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_uppercase())
        );
        assert!(!key.contains("daily-sales") && !key.contains('@'));
        // SHA-256("a@b") starts with these bytes.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"a@b");
        let want: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(caller_key("", "r", "a@b"), format!("{{r}}:caller:{want}"));
        assert_ne!(caller_key("", "r", "a@b"), caller_key("", "r", "a@c"));
    }

    #[test]
    fn the_per_instance_share_divides_rate_and_rounds_burst_up() {
        let s = per_instance(&spec(100.0, 15), 10);
        assert_eq!(s.per_second(), 10.0);
        assert_eq!(s.burst().get(), 2);
        let s = per_instance(&spec(1.0, 1), 4);
        assert_eq!(s.per_second(), 0.25, "fractional");
        assert_eq!(s.burst().get(), 1, "at least 1");
        assert_eq!(script_args(&spec(4.0, 7)), (250_000, 7));
        assert_eq!(script_args(&spec(1_000_000.0, 1)), (1, 1));
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_memo_answers_until_the_admission_time_then_forgets() {
        let memo = Memo::default();
        let now = Instant::now();
        assert_eq!(memo.wait("k", now), None);
        memo.hold("k", now, Duration::from_millis(1500));
        assert_eq!(memo.wait("k", now), Some(Duration::from_millis(1500)));
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(
            memo.wait("k", Instant::now()),
            Some(Duration::from_millis(500))
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            memo.wait("k", Instant::now()),
            None,
            "admitted again at the time"
        );
        memo.sweep(Instant::now());
        assert!(memo.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_three_failures_then_lets_one_probe_through() {
        let b = Breaker::default();
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.gate(now), Gate::Call);
            b.failure(now, false);
        }
        assert_eq!(b.gate(now), Gate::Call);
        b.failure(now, false);
        assert!(b.is_open());
        assert_eq!(b.gate(now), Gate::Skip, "open: no call");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(b.gate(Instant::now()), Gate::Skip);
        tokio::time::advance(Duration::from_millis(1)).await;
        let now = Instant::now();
        assert_eq!(b.gate(now), Gate::Probe, "one probe after 1 s");
        assert_eq!(b.gate(now), Gate::Skip, "and only one");
        b.failure(now, true);
        assert_eq!(
            b.gate(now),
            Gate::Skip,
            "a failed probe starts another second"
        );
        tokio::time::advance(BREAKER_OPEN).await;
        assert_eq!(b.gate(Instant::now()), Gate::Probe);
        assert!(b.success(), "it had been failing");
        assert_eq!(b.gate(Instant::now()), Gate::Call, "closed again");
        assert!(!b.success());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_of_calls_made_before_it_opened_do_not_extend_it() {
        let b = Breaker::default();
        let now = Instant::now();
        for _ in 0..3 {
            b.failure(now, false);
        }
        tokio::time::advance(Duration::from_millis(900)).await;
        b.failure(Instant::now(), false);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.gate(Instant::now()), Gate::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn the_throttle_allows_one_line_per_kind_per_interval() {
        let t = Throttle::new(WARN_INTERVAL);
        assert!(t.claim("timeout", Instant::now()));
        assert!(!t.claim("timeout", Instant::now()));
        assert!(t.claim("auth", Instant::now()), "another kind");
        tokio::time::advance(WARN_INTERVAL).await;
        assert!(t.claim("timeout", Instant::now()));
    }
}
