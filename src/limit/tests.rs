//! GCRA limits per caller and per route: bursts, refill, Retry-After, eviction.

use super::*;
use governor::clock::FakeRelativeClock;

fn spec(per_second: f64, burst: i64) -> RateSpec {
    RateSpec::parse(per_second, burst).unwrap()
}

fn limits(
    caller: Option<RateSpec>,
    route: Option<RateSpec>,
) -> (RouteLimits<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (RouteLimits::with_clock(caller, route, clock.clone()), clock)
}

const A: &str = "daily-sales@acme.iam.gserviceaccount.com";
const B: &str = "backfill@acme.iam.gserviceaccount.com";

#[test]
fn burst_is_allowed_exactly_then_one_over_is_limited() {
    let (limits, clock) = limits(Some(spec(1.0, 3)), None);
    for i in 0..3 {
        assert_eq!(limits.check(A), Ok(()), "request {i} of the burst");
    }
    let limited = limits.check(A).unwrap_err();
    assert_eq!(limited.scope, LimitScope::Caller);
    assert_eq!(limited.retry_after_seconds, 1);
    // One interval later exactly one more request conforms.
    clock.advance(Duration::from_secs(1));
    assert_eq!(limits.check(A), Ok(()));
    assert!(limits.check(A).is_err());
}

#[test]
fn a_rejected_request_does_not_use_up_the_budget() {
    let (limits, clock) = limits(Some(spec(1.0, 1)), None);
    assert_eq!(limits.check(A), Ok(()));
    for _ in 0..100 {
        assert!(limits.check(A).is_err());
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(limits.check(A), Ok(()));
}

#[test]
fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
    assert_eq!(whole_seconds(Duration::ZERO), 1);
    assert_eq!(whole_seconds(Duration::from_nanos(1)), 1);
    assert_eq!(whole_seconds(Duration::from_secs(1)), 1);
    assert_eq!(whole_seconds(Duration::new(1, 1)), 2);
    assert_eq!(whole_seconds(Duration::from_millis(2500)), 3);

    // 50/s: the next slot is 20 ms away, still "1".
    let (fast, _) = limits(Some(spec(50.0, 1)), None);
    assert_eq!(fast.check(A), Ok(()));
    assert_eq!(fast.check(A).unwrap_err().retry_after_seconds, 1);

    // 1 per 3 s: 3 s away, then 2.9 s away (rounded up to 3), then 0.5 s away (1).
    let (slow, clock) = limits(Some(spec(1.0 / 3.0, 1)), None);
    assert_eq!(slow.check(A), Ok(()));
    assert_eq!(slow.check(A).unwrap_err().retry_after_seconds, 3);
    clock.advance(Duration::from_millis(100));
    assert_eq!(slow.check(A).unwrap_err().retry_after_seconds, 3);
    clock.advance(Duration::from_millis(2400));
    assert_eq!(slow.check(A).unwrap_err().retry_after_seconds, 1);
    clock.advance(Duration::from_millis(500));
    assert_eq!(slow.check(A), Ok(()));
}

#[test]
fn fractional_rate_allows_one_request_per_period() {
    let (limits, clock) = limits(Some(spec(0.5, 2)), None);
    assert_eq!(limits.check(A), Ok(()));
    assert_eq!(limits.check(A), Ok(()));
    assert_eq!(limits.check(A).unwrap_err().retry_after_seconds, 2);
    clock.advance(Duration::from_millis(1999));
    assert_eq!(limits.check(A).unwrap_err().retry_after_seconds, 1);
    clock.advance(Duration::from_millis(1));
    assert_eq!(limits.check(A), Ok(()));
}

#[test]
fn one_callers_exhaustion_leaves_another_unaffected() {
    let (limits, _) = limits(Some(spec(1.0, 2)), None);
    assert_eq!(limits.check(A), Ok(()));
    assert_eq!(limits.check(A), Ok(()));
    assert_eq!(limits.check(A).unwrap_err().scope, LimitScope::Caller);
    assert_eq!(limits.check(B), Ok(()));
    assert_eq!(limits.check(B), Ok(()));
    assert_eq!(limits.check(B).unwrap_err().scope, LimitScope::Caller);
    assert_eq!(limits.tracked_callers(), 2);
}

#[test]
fn route_limit_covers_all_callers_together() {
    let (limits, clock) = limits(None, Some(spec(1.0, 3)));
    assert_eq!(limits.check(A), Ok(()));
    assert_eq!(limits.check(B), Ok(()));
    assert_eq!(limits.check("c@acme.iam.gserviceaccount.com"), Ok(()));
    let limited = limits.check("d@acme.iam.gserviceaccount.com").unwrap_err();
    assert_eq!(limited.scope, LimitScope::Route);
    assert_eq!(limited.retry_after_seconds, 1);
    assert_eq!(
        limits.tracked_callers(),
        0,
        "no per-caller state without rate_limit"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(limits.check(A), Ok(()));
}

#[test]
fn a_caller_rejected_by_its_own_limit_does_not_consume_the_route_budget() {
    let (limits, _) = limits(Some(spec(1.0, 1)), Some(spec(1.0, 2)));
    assert_eq!(limits.check(A), Ok(()));
    for _ in 0..50 {
        assert_eq!(limits.check(A).unwrap_err().scope, LimitScope::Caller);
    }
    // The route still has exactly one request left, which B gets.
    assert_eq!(limits.check(B), Ok(()));
    assert_eq!(
        limits
            .check("c@acme.iam.gserviceaccount.com")
            .unwrap_err()
            .scope,
        LimitScope::Route
    );
}

#[test]
fn route_limit_reports_its_own_retry_after() {
    let (limits, _) = limits(Some(spec(100.0, 10)), Some(spec(0.25, 1)));
    assert_eq!(limits.check(A), Ok(()));
    assert_eq!(
        limits.check(A),
        Err(Limited {
            scope: LimitScope::Route,
            retry_after_seconds: 4
        })
    );
}

#[test]
fn idle_callers_are_evicted_once_back_at_full_burst() {
    // 4 requests at 2/s: an exhausted bucket is full again 2 s later. governor keeps a key
    // one more interval (0.5 s) before it counts as idle.
    let spec = spec(2.0, 4);
    assert_eq!(spec.refill_time(), Duration::from_secs(2));
    let (limits, clock) = limits(Some(spec), None);
    let exhaust = |caller: &str| {
        for _ in 0..4 {
            assert_eq!(limits.check(caller), Ok(()));
        }
        assert!(limits.check(caller).is_err());
    };
    for i in 0..10 {
        exhaust(&format!("p{i}@acme.iam.gserviceaccount.com"));
    }
    assert_eq!(limits.tracked_callers(), 10);
    limits.evict_idle();
    assert_eq!(limits.tracked_callers(), 10, "nobody is idle yet");

    clock.advance(Duration::from_secs(1));
    exhaust(A);
    limits.evict_idle();
    assert_eq!(
        limits.tracked_callers(),
        11,
        "nobody is back at full burst yet"
    );

    clock.advance(Duration::from_millis(1500));
    limits.evict_idle();
    assert_eq!(
        limits.tracked_callers(),
        1,
        "only A, still refilling, is kept"
    );

    clock.advance(Duration::from_secs(1));
    limits.evict_idle();
    assert_eq!(limits.tracked_callers(), 0);
}

#[test]
fn a_caller_that_used_little_is_evictable_soon() {
    let (limits, clock) = limits(Some(spec(2.0, 4)), None);
    assert_eq!(limits.check(A), Ok(()));
    clock.advance(Duration::from_millis(999));
    limits.evict_idle();
    assert_eq!(limits.tracked_callers(), 1);
    clock.advance(Duration::from_millis(1));
    limits.evict_idle();
    assert_eq!(
        limits.tracked_callers(),
        0,
        "one request refills in 0.5 s, plus 0.5 s"
    );
}

#[test]
fn eviction_does_not_change_decisions() {
    let (limits, clock) = limits(Some(spec(1.0, 2)), None);
    assert_eq!(limits.check(A), Ok(()));
    assert_eq!(limits.check(A), Ok(()));
    limits.evict_idle();
    assert!(
        limits.check(A).is_err(),
        "an exhausted caller is not evicted"
    );
    clock.advance(Duration::from_secs(10));
    limits.evict_idle();
    assert_eq!(limits.tracked_callers(), 0);
    assert_eq!(limits.check(A), Ok(()));
    assert_eq!(limits.check(A), Ok(()));
    assert!(limits.check(A).is_err());
}

#[test]
fn overlong_callers_share_one_bucket_and_cannot_grow_the_map() {
    let (limits, _) = limits(Some(spec(1.0, 1)), None);
    let longest = format!("{}@x", "a".repeat(MAX_CALLER_LEN - 2));
    assert_eq!(longest.len(), MAX_CALLER_LEN);
    assert_eq!(limits.check(&longest), Ok(()));
    assert!(limits.check(&longest).is_err());

    let over_1 = "a".repeat(MAX_CALLER_LEN + 1);
    let over_2 = "b".repeat(10_000);
    assert_eq!(limits.check(&over_1), Ok(()));
    assert_eq!(limits.check(&over_2).unwrap_err().scope, LimitScope::Caller);
    assert_eq!(limits.tracked_callers(), 2);
}

#[test]
fn keys_compare_by_content() {
    assert!(CallerKey::new("a@x") == CallerKey::new("a@x"));
    assert!(CallerKey::new("a@x") != CallerKey::new("a@y"));
    assert!(CallerKey::new("") != CallerKey::new(&"z".repeat(300)));
    assert!(CallerKey::new(&"y".repeat(300)) == CallerKey::new(&"z".repeat(300)));
    assert_eq!(CallerKey::new("a@x").as_bytes(), b"a@x");
}

#[test]
fn no_limits_allow_everything() {
    let (limits, _) = limits(None, None);
    assert!(!limits.is_limited());
    for _ in 0..1000 {
        assert_eq!(limits.check(A), Ok(()));
    }
    limits.evict_idle();
    assert_eq!(limits.tracked_callers(), 0);
}

#[test]
fn concurrent_checks_never_exceed_the_burst() {
    let (limits, _) = limits(Some(spec(1.0, 1000)), Some(spec(1.0, 1500)));
    let allowed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (limits, allowed) = (&limits, &allowed);
            scope.spawn(move || {
                let caller = if t % 2 == 0 { A } else { B };
                for _ in 0..1000 {
                    if limits.check(caller).is_ok() {
                        allowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // A and B each get at most 1000; together they are capped at 1500 by the route.
    assert_eq!(allowed.into_inner(), 1500);
}

#[test]
fn invalid_specs_are_rejected_with_the_field_named() {
    let cases: &[(f64, i64, &str)] = &[
        (0.0, 10, "per_second must be greater than 0, got 0"),
        (-1.0, 10, "per_second must be greater than 0, got -1"),
        (f64::NAN, 10, "per_second must be a number"),
        (f64::INFINITY, 10, "per_second must be a number"),
        (0.0001, 10, "per_second must be at least 1/3600"),
        (2_000_000.0, 10, "per_second must be at most 1000000"),
        (10.0, 0, "burst must be at least 1, got 0"),
        (10.0, -5, "burst must be at least 1, got -5"),
        (
            10.0,
            1_000_001,
            "burst must be at most 1000000, got 1000001",
        ),
        (10.0, i64::MAX, "burst must be at most 1000000"),
    ];
    for (per_second, burst, message) in cases {
        let err = RateSpec::parse(*per_second, *burst).unwrap_err();
        assert!(
            err.starts_with(message),
            "parse({per_second}, {burst}) = {err:?}, expected {message:?}"
        );
    }
}

#[test]
fn valid_specs_keep_their_values() {
    let s = spec(50.0, 100);
    assert_eq!(s.per_second(), 50.0);
    assert_eq!(s.burst().get(), 100);
    assert_eq!(s.refill_time(), Duration::from_secs(2));
    assert_eq!(s.to_string(), "50/s, burst 100");
    assert_eq!(spec(0.5, 1).to_string(), "0.5/s, burst 1");
    assert!(RateSpec::parse(MIN_PER_SECOND, i64::from(MAX_BURST)).is_ok());
    assert!(RateSpec::parse(MAX_PER_SECOND, 1).is_ok());
}

#[test]
fn limited_explains_itself() {
    let caller = Limited {
        scope: LimitScope::Caller,
        retry_after_seconds: 2,
    };
    assert_eq!(
        caller.to_string(),
        "this caller is over its rate limit for this route; retry after 2 s"
    );
    assert_eq!(LimitScope::Route.as_str(), "route");
}

#[test]
fn route_limits_are_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<RouteLimits>();
    let real = RouteLimits::new(Some(spec(1.0, 1)), None);
    assert_eq!(real.check(A), Ok(()));
    assert!(real.check(A).is_err());
    assert!(format!("{real:?}").contains("tracked_callers: 1"));
}

/// Cost of a check on the real clock. Prints figures; asserts nothing about time.
/// `cargo test --release --lib limit::tests::timing -- --ignored --nocapture`
#[test]
#[ignore = "prints timings; run by hand"]
fn timing() {
    const N: u32 = 2_000_000;
    let limits = RouteLimits::new(
        Some(spec(MAX_PER_SECOND, i64::from(MAX_BURST))),
        Some(spec(MAX_PER_SECOND, i64::from(MAX_BURST))),
    );
    let callers: Vec<String> = (0..64)
        .map(|i| format!("pipeline-{i}@acme-data.iam.gserviceaccount.com"))
        .collect();
    let started = tokio::time::Instant::now();
    for i in 0..N {
        let _ = limits.check(&callers[i as usize % callers.len()]);
    }
    println!("1 thread: {:?} per check", started.elapsed() / N);

    let started = tokio::time::Instant::now();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (limits, callers) = (&limits, &callers);
            scope.spawn(move || {
                for i in 0..N / 8 {
                    let _ = limits.check(&callers[(i as usize + t) % callers.len()]);
                }
            });
        }
    });
    println!(
        "8 threads: {:?} per check (wall / total)",
        started.elapsed() / N
    );
}
