//! Shared rate limits (`rate_limits.backend: redis`) against a real `redis-server`: several
//! instances sharing one limit, the over-limit memo, kill -9 under load in each failure
//! mode, a Redis that never answers, restart and recovery, AUTH, TLS, and keys that never
//! hold an email.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::harness::redis::{RedisServer, Silent, other_ca_pem};
use crate::harness::*;

/// Another caller the route allows (the wildcard rule), for a second caller key.
const OTHER: &str = "other@pipelines.iam.gserviceaccount.com";

/// A timeout for tests where a slow moment of a loaded CI box must not look like a failing
/// Redis (the failure-mode tests set their own).
const SLOW_BOX: &str = "    timeout_ms: 500\n";

/// A route `shared` with `limits`, open to every pipelines service account.
fn route(limits: &str) -> String {
    format!(
        r#"  shared:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    {limits}
    allow:
      - callers: ["*@pipelines.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/**"]
"#
    )
}

/// The top-level blocks: `rate_limits` as given, and metrics readable by [`READER`].
fn blocks(rate_limits: &str) -> String {
    format!("{rate_limits}\nmetrics: {{ enabled: true, callers: [\"{READER}\"] }}\n")
}

fn redis_block(url: &str, extra_redis: &str, rest: &str) -> String {
    format!("rate_limits:\n  backend: redis\n  redis:\n    url: \"{url}\"\n{extra_redis}{rest}")
}

/// The first instance as a [`World`], plus `more` instances of the same config.
async fn cluster(
    limits: &str,
    rate_limits: &str,
    env: &[(String, String)],
    more: usize,
) -> (World, Vec<TestApp>) {
    let top = blocks(rate_limits);
    let w = World::custom(&route(limits), |c| format!("{top}{c}"), env).await;
    let config = format!(
        "{top}{}",
        default_config(&w.jwks, &w.upstream, &route(limits))
    );
    let mut others = Vec::new();
    for _ in 0..more {
        let app = TestApp::spawn_with(&config, &w.keys, env, &[]).await;
        app.wait_ready().await;
        others.push(app);
    }
    (w, others)
}

#[derive(Default)]
struct Stats {
    ok: usize,
    limited: usize,
    unavailable: usize,
    server_errors: usize,
    other: usize,
    latencies: Vec<Duration>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok {}, 429 {}, 503 rate_limiter_unavailable {}, other 5xx {}, other {}, {} requests",
            self.ok,
            self.limited,
            self.unavailable,
            self.server_errors,
            self.other,
            self.latencies.len()
        )
    }
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.ok += other.ok;
        self.limited += other.limited;
        self.unavailable += other.unavailable;
        self.server_errors += other.server_errors;
        self.other += other.other;
        self.latencies.extend(other.latencies);
    }

    fn p99(&mut self) -> Duration {
        self.latencies.sort();
        let at = (self.latencies.len() * 99 / 100).min(self.latencies.len().saturating_sub(1));
        self.latencies.get(at).copied().unwrap_or_default()
    }
}

/// One GET of `/shared/x` with `token`, classified.
async fn one(app: &TestApp, token: &str, stats: &mut Stats) {
    get(&app.client, &app.url("/shared/x"), token, stats).await;
}

/// One GET of `url` with `token`, classified by status and the error code of the body.
async fn get(client: &reqwest::Client, url: &str, token: &str, stats: &mut Stats) {
    let started = Instant::now();
    let r = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").cloned();
    let error_header = r.headers().get("x-credproxy-error").cloned();
    let body = r.bytes().await.unwrap_or_default();
    stats.latencies.push(started.elapsed());
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    if status != 200 {
        assert_eq!(
            error_header.as_ref().map(|v| v.as_bytes()),
            Some(code.as_bytes()),
            "credproxy's own {status} names its code in X-Credproxy-Error"
        );
    }
    match (status, code.as_str()) {
        (200, _) => stats.ok += 1,
        (429, "rate_limited") => {
            assert!(retry_after.is_some(), "429 without Retry-After");
            stats.limited += 1;
        }
        (503, "rate_limiter_unavailable") => {
            assert_eq!(
                retry_after.as_ref().map(|v| v.as_bytes()),
                Some(&b"1"[..]),
                "503 rate_limiter_unavailable carries Retry-After: 1"
            );
            stats.unavailable += 1;
        }
        (500..=599, _) => stats.server_errors += 1,
        _ => stats.other += 1,
    }
}

/// `workers` concurrent request loops per app until `stop` is set.
async fn load(apps: &[&TestApp], token: &str, workers: usize, stop: Arc<AtomicBool>) -> Stats {
    let mut tasks = Vec::new();
    for app in apps {
        for _ in 0..workers {
            let (client, url, token, stop) = (
                app.client.clone(),
                app.url("/shared/x"),
                token.to_string(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut stats = Stats::default();
                let probe = Probe { client, url };
                while !stop.load(Ordering::SeqCst) {
                    probe.once(&token, &mut stats).await;
                }
                stats
            }));
        }
    }
    let mut total = Stats::default();
    for t in tasks {
        total.add(t.await.expect("load task"));
    }
    total
}

/// What a load task needs of a [`TestApp`] (which it cannot borrow across a spawn).
struct Probe {
    client: reqwest::Client,
    url: String,
}

impl Probe {
    async fn once(&self, token: &str, stats: &mut Stats) {
        get(&self.client, &self.url, token, stats).await;
    }
}

/// Runs [`load`] for `duration`; returns the stats and the time it really took.
async fn load_for(
    apps: &[&TestApp],
    token: &str,
    workers: usize,
    duration: Duration,
) -> (Stats, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let running = load(apps, token, workers, stop.clone());
    let stopper = async {
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::SeqCst);
    };
    let (stats, ()) = tokio::join!(running, stopper);
    (stats, started.elapsed())
}

/// A metric's value from `/_credproxy/metrics`.
async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app
        .get_as(READER, "/_credproxy/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[tokio::test]
async fn three_instances_share_one_limit() {
    let redis = RedisServer::start(&[]).await;
    let (per_second, burst) = (20.0, 10.0);
    let (w, others) = cluster(
        "route_rate_limit: { per_second: 20, burst: 10 }",
        // A generous timeout: on a loaded box a call slower than 20 ms would take the local
        // fallback, which this test is not about.
        &redis_block(
            &redis.url(),
            "    timeout_ms: 1000\n",
            "  max_instances: 3\n",
        ),
        &default_env(),
        2,
    )
    .await;
    let apps: Vec<&TestApp> = std::iter::once(&w.app).chain(others.iter()).collect();
    let token = w.keys.token(READER);
    let (stats, took) = load_for(&apps, &token, 4, Duration::from_secs(2)).await;
    let allowed = burst + per_second * took.as_secs_f64();
    eprintln!("three instances: {stats:?} in {took:?}; burst + per_second x T = {allowed:.1}");
    for app in &apps {
        assert_eq!(
            metric(app, "credproxy_rate_limit_backend_errors_total").await,
            Some(0.0),
            "every call answered: the counts are Redis's alone"
        );
    }
    assert_eq!(
        stats.server_errors + stats.other + stats.unavailable,
        0,
        "{stats:?}"
    );
    assert!(
        (stats.ok as f64) <= allowed + 3.0,
        "{} admitted in {took:?}: more than burst + per_second × T ({allowed:.0}) plus one race per instance; {stats:?}",
        stats.ok
    );
    assert!(
        (stats.ok as f64) >= 0.75 * (burst + per_second * 2.0),
        "only {} admitted in {took:?} (limit {allowed:.0}); {stats:?}",
        stats.ok
    );
    assert!(
        stats.limited > stats.ok,
        "the load went well past the limit: {stats:?}"
    );
    // Per instance, the same load would have admitted three times as much.
    assert_eq!(w.upstream.requests().len(), stats.ok);
    assert_eq!(
        metric(&w.app, "credproxy_rate_limit_backend_up").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_key_over_its_limit_is_answered_locally_and_keys_hold_no_email() {
    let redis = RedisServer::start(&[]).await;
    let (w, _) = cluster(
        "rate_limit: { per_second: 0.2, burst: 2 }\n    route_rate_limit: { per_second: 1, burst: 100 }",
        &redis_block(&redis.url(), SLOW_BOX, "  on_backend_failure: closed\n"),
        &default_env(),
        0,
    )
    .await;
    let token = w.keys.token(READER);
    let mut stats = Stats::default();
    one(&w.app, &token, &mut stats).await;
    redis.query(None, &["CONFIG", "RESETSTAT"]);
    let first_limited = {
        one(&w.app, &token, &mut stats).await;
        let r = w
            .app
            .client
            .get(w.app.url("/shared/x"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 429);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        let id = r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        let e = w.app.audit_for(&id).await;
        assert_eq!(e["reason"], "rate_limited");
        retry
    };
    assert_eq!(
        first_limited, 5,
        "one request per 5 s: the exact wait, rounded up"
    );
    let calls_after_first_refusal = redis.calls(None, "evalsha");
    for _ in 0..40 {
        one(&w.app, &token, &mut stats).await;
    }
    assert_eq!(stats.ok, 2);
    assert_eq!(stats.limited, 40);
    assert_eq!(
        redis.calls(None, "evalsha"),
        calls_after_first_refusal,
        "40 requests over the limit, answered from the memo without a Redis call"
    );
    // Another caller has its own key and is not held by the first one's memo.
    let other = w.keys.token(OTHER);
    one(&w.app, &other, &mut stats).await;
    assert_eq!(stats.ok, 3);
    assert!(redis.calls(None, "evalsha") > calls_after_first_refusal);
    // Keys: the route's and one per caller, hashed; no email in clear.
    let mut keys = redis.keys(None);
    keys.sort();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys.contains(&"credproxy:{shared}:route".to_string()),
        "{keys:?}"
    );
    for key in &keys {
        assert!(
            !key.contains('@') && !key.contains("reader") && !key.contains("other@"),
            "{key}"
        );
        if let Some(hex) = key.strip_prefix("credproxy:{shared}:caller:") {
            assert!(
                hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()),
                "{key}"
            );
        }
    }
    // Keys expire when their bucket would be full again: the route's after 3 admissions at
    // 1/s within 3 s, the first caller's (2 admissions at one per 5 s) within 10 s.
    let pttl = |key: &str| match redis.query(None, &["PTTL", key]) {
        ::redis::Value::Int(ms) => ms,
        other => panic!("PTTL {other:?}"),
    };
    let ttl = pttl("credproxy:{shared}:route");
    assert!(ttl > 1000 && ttl <= 3000, "{ttl}");
    let reader = keys
        .iter()
        .any(|k| k.contains(":caller:") && pttl(k) > 5000 && pttl(k) <= 10_000);
    assert!(
        reader,
        "the first caller's key lives until its bucket is full: {keys:?}"
    );
}

/// Load, kill -9 of redis-server, more load: what each failure mode gives.
async fn kill_mid_load(mode: &str) -> (Stats, Stats, World, RedisServer) {
    let mut redis = RedisServer::start(&[]).await;
    let (w, _) = cluster(
        "route_rate_limit: { per_second: 5000, burst: 5000 }",
        &redis_block(
            &redis.url(),
            "    timeout_ms: 100\n",
            &format!("  on_backend_failure: {mode}\n  max_instances: 2\n"),
        ),
        &default_env(),
        0,
    )
    .await;
    let token = w.keys.token(READER);
    let (before, _) = load_for(&[&w.app], &token, 4, Duration::from_millis(400)).await;
    assert_eq!(
        before.ok,
        before.latencies.len(),
        "all admitted while Redis runs: {before:?}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let apps = [&w.app];
    let running = load(&apps, &token, 4, stop.clone());
    let killer = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        redis.kill();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        stop.store(true, Ordering::SeqCst);
    };
    let (mut during, ()) = tokio::join!(running, killer);
    eprintln!("kill -9 with {mode}: {during:?}, p99 {:?}", during.p99());
    (before, during, w, redis)
}

/// Generous for a loaded 2-core box, yet far below a request waiting on a dead Redis for
/// seconds.
const LATENCY_BOUND: Duration = Duration::from_millis(100 + 400);

#[tokio::test]
async fn kill_9_under_load_with_local_fails_nothing() {
    let (_, mut during, w, _redis) = kill_mid_load("local").await;
    assert_eq!(
        during.server_errors + during.unavailable + during.other,
        0,
        "{during:?}"
    );
    assert_eq!(
        during.limited, 0,
        "the local share (2500/s) is not reached: {during:?}"
    );
    assert!(during.p99() < LATENCY_BOUND, "p99 {:?}", during.p99());
    w.app
        .wait_log("rate-limit backend failed", Duration::from_secs(2))
        .await;
    let log = w.app.stderr.text();
    assert!(log.contains("\"onBackendFailure\":\"local\""), "{log}");
    assert!(metric(&w.app, "credproxy_rate_limit_backend_errors_total").await > Some(0.0));
    assert_eq!(
        metric(&w.app, "credproxy_rate_limit_backend_up").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn kill_9_under_load_with_open_fails_nothing() {
    let (_, mut during, _w, _redis) = kill_mid_load("open").await;
    assert_eq!(
        during.server_errors + during.unavailable + during.other + during.limited,
        0,
        "{during:?}"
    );
    assert!(during.p99() < LATENCY_BOUND, "p99 {:?}", during.p99());
}

#[tokio::test]
async fn kill_9_under_load_with_closed_answers_503() {
    let (_, mut during, w, _redis) = kill_mid_load("closed").await;
    assert_eq!(during.server_errors + during.other, 0, "{during:?}");
    assert!(during.unavailable > 0, "{during:?}");
    assert!(during.ok > 0, "admitted before the kill: {during:?}");
    assert!(during.p99() < LATENCY_BOUND, "p99 {:?}", during.p99());
    let entries = w.app.audit_entries_settled("/api/v1/x").await;
    let refused = entries
        .iter()
        .find(|e| e["reason"] == "rate_limiter_unavailable")
        .expect("an audit entry of a 503");
    assert_eq!(refused["severity"], "ERROR");
    assert_eq!(refused["httpRequest"]["status"], 503);
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_at_most_the_timeout_and_the_breaker_stops_calls() {
    let silent = Silent::start().await;
    let (w, _) = cluster(
        "route_rate_limit: { per_second: 1, burst: 1 }",
        &redis_block(
            &format!("redis://127.0.0.1:{}", silent.port),
            "    timeout_ms: 50\n",
            "  on_backend_failure: open\n",
        ),
        &default_env(),
        0,
    )
    .await;
    let token = w.keys.token(READER);
    let mut stats = Stats::default();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        one(&w.app, &token, &mut stats).await;
    }
    assert_eq!(stats.ok, stats.latencies.len(), "open admits: {stats:?}");
    let slowest = stats.latencies.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(50 + 400),
        "a request waited {slowest:?}"
    );
    // 3 failures, 1 s without calls, a probe, 1 s more: a handful of calls, not one per
    // request; only calls are counted as errors.
    let errors = metric(&w.app, "credproxy_rate_limit_backend_errors_total")
        .await
        .expect("errors metric");
    assert!(
        (3.0..=6.0).contains(&errors),
        "{errors} failed calls for {} requests",
        stats.ok
    );
    assert!(stats.ok > 20, "{stats:?}");
    let log = w.app.stderr.text();
    assert_eq!(
        count(&log, "rate-limit backend failed"),
        1,
        "one WARNING per 10 s per kind:\n{log}"
    );
    assert!(log.contains("\"kind\":\"timeout\""), "{log}");
}

#[tokio::test]
async fn serve_is_ready_with_redis_down_and_local_enforces_the_share() {
    let port = crate::harness::redis::free_port();
    let (w, _) = cluster(
        "route_rate_limit: { per_second: 1, burst: 10 }",
        &redis_block(
            &format!("redis://127.0.0.1:{port}"),
            "",
            "  max_instances: 5\n",
        ),
        &default_env(),
        0,
    )
    .await;
    let token = w.keys.token(READER);
    let mut stats = Stats::default();
    for _ in 0..10 {
        one(&w.app, &token, &mut stats).await;
    }
    // ceil(10 / 5) = 2 at once, then 0.2/s.
    assert_eq!((stats.ok, stats.limited), (2, 8), "{stats:?}");
    assert_eq!(
        metric(&w.app, "credproxy_rate_limit_backend_up").await,
        Some(0.0)
    );
    assert!(w.app.stderr.text().contains("\"kind\":\"connection\""));
}

#[tokio::test]
async fn restart_recovers_within_two_seconds_without_a_restart_of_credproxy() {
    let mut redis = RedisServer::start(&[]).await;
    let (w, _) = cluster(
        "route_rate_limit: { per_second: 0.5, burst: 3 }",
        &redis_block(&redis.url(), "", "  on_backend_failure: open\n"),
        &default_env(),
        0,
    )
    .await;
    let token = w.keys.token(READER);
    let mut stats = Stats::default();
    redis.kill();
    for _ in 0..10 {
        one(&w.app, &token, &mut stats).await;
    }
    assert_eq!(stats.ok, 10, "open admits while Redis is down");
    redis.restart().await;
    let back = Instant::now();
    // Shared limiting resumes: the empty Redis admits the burst of 3, then 429.
    let mut stats = Stats::default();
    while stats.limited == 0 {
        assert!(
            back.elapsed() < Duration::from_millis(3500),
            "not recovered: {stats:?}"
        );
        one(&w.app, &token, &mut stats).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = back.elapsed();
    assert!(
        recovered < Duration::from_millis(2000 + 1000),
        "{recovered:?}"
    );
    w.app
        .wait_log("rate-limit backend recovered", Duration::from_secs(1))
        .await;
    assert_eq!(
        count(&w.app.stderr.text(), "rate-limit backend recovered"),
        1
    );
    assert_eq!(
        metric(&w.app, "credproxy_rate_limit_backend_up").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn auth_right_wrong_and_rotated_never_in_the_log() {
    let password = "pw-REDIS-SECRET-7d41c0";
    let redis = RedisServer::start(&["--requirepass", password]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let auth_file = dir.path().join("redis-auth");
    std::fs::write(&auth_file, "wrong-REDIS-SECRET-5e6f").expect("write");
    let mut env = default_env();
    env.push(("REDIS_AUTH_SECRET".to_string(), password.to_string()));
    env.push((
        "WRONG_REDIS_SECRET".to_string(),
        "wrong-REDIS-SECRET-5e6f".to_string(),
    ));
    // Right: shared limiting works.
    let (right, _) = cluster(
        "route_rate_limit: { per_second: 0.5, burst: 2 }",
        &redis_block(
            &redis.url(),
            "    auth: \"env:REDIS_AUTH_SECRET\"\n    timeout_ms: 500\n",
            "  on_backend_failure: closed\n",
        ),
        &env,
        0,
    )
    .await;
    let token = right.keys.token(READER);
    let mut stats = Stats::default();
    for _ in 0..4 {
        one(&right.app, &token, &mut stats).await;
    }
    assert_eq!((stats.ok, stats.limited), (2, 2), "{stats:?}");
    assert!(
        redis
            .keys(Some(password))
            .iter()
            .any(|k| k.ends_with(":route"))
    );
    // Wrong, from a file that is then corrected: 503 until the re-read value is used.
    let (wrong, _) = cluster(
        "route_rate_limit: { per_second: 100, burst: 100 }",
        &format!(
            "secrets: {{ cache_ttl_seconds: 1 }}\n{}",
            redis_block(
                &redis.url(),
                &format!(
                    "    auth: \"file:{}\"\n    timeout_ms: 500\n",
                    auth_file.display()
                ),
                "  on_backend_failure: closed\n",
            )
        ),
        &env,
        0,
    )
    .await;
    let token = wrong.keys.token(READER);
    let mut stats = Stats::default();
    one(&wrong.app, &token, &mut stats).await;
    assert_eq!(stats.unavailable, 1, "{stats:?}");
    wrong
        .app
        .wait_log("\"kind\":\"auth\"", Duration::from_secs(2))
        .await;
    std::fs::write(&auth_file, password).expect("rotate");
    let rotated = Instant::now();
    let mut stats = Stats::default();
    while stats.ok == 0 {
        assert!(
            rotated.elapsed() < Duration::from_secs(5),
            "the new AUTH string was never used: {stats:?}"
        );
        one(&wrong.app, &token, &mut stats).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for app in [&right.app, &wrong.app] {
        let out = app.output();
        assert!(
            !out.contains(password) && !out.contains("wrong-REDIS-SECRET"),
            "the AUTH string was logged"
        );
    }
}

#[tokio::test]
async fn tls_with_a_private_ca_and_an_untrusted_certificate() {
    let (redis, ca) = RedisServer::start_tls(&[]).await;
    let mut env = default_env();
    env.push(("REDIS_CA".to_string(), ca));
    env.push(("OTHER_CA".to_string(), other_ca_pem()));
    let (trusted, _) = cluster(
        "route_rate_limit: { per_second: 0.5, burst: 2 }",
        &redis_block(
            &redis.url(),
            "    ca_bundle: \"env:REDIS_CA\"\n    timeout_ms: 500\n",
            "  on_backend_failure: closed\n",
        ),
        &env,
        0,
    )
    .await;
    let token = trusted.keys.token(READER);
    let mut stats = Stats::default();
    for _ in 0..3 {
        one(&trusted.app, &token, &mut stats).await;
    }
    assert_eq!(
        (stats.ok, stats.limited, stats.unavailable),
        (2, 1, 0),
        "{stats:?}"
    );
    let (untrusted, _) = cluster(
        "route_rate_limit: { per_second: 0.5, burst: 2 }",
        &redis_block(
            &redis.url(),
            "    ca_bundle: \"env:OTHER_CA\"\n    timeout_ms: 500\n",
            "  on_backend_failure: closed\n",
        ),
        &env,
        0,
    )
    .await;
    let token = untrusted.keys.token(READER);
    let mut stats = Stats::default();
    one(&untrusted.app, &token, &mut stats).await;
    assert_eq!(stats.unavailable, 1, "{stats:?}");
    untrusted
        .app
        .wait_log("\"kind\":\"tls\"", Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn with_the_local_backend_there_are_no_backend_metrics_and_no_redis() {
    let (w, _) = cluster(
        "route_rate_limit: { per_second: 0.5, burst: 2 }",
        "rate_limits: { backend: local }",
        &default_env(),
        0,
    )
    .await;
    let token = w.keys.token(READER);
    let mut stats = Stats::default();
    for _ in 0..3 {
        one(&w.app, &token, &mut stats).await;
    }
    assert_eq!((stats.ok, stats.limited), (2, 1), "{stats:?}");
    let text = w
        .app
        .get_as(READER, "/_credproxy/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    assert!(text.contains("credproxy_rate_limited_total"), "{text}");
    assert!(!text.contains("rate_limit_backend"), "{text}");
}

/// Runs `credproxy ARGS` with an empty environment; returns (exit code, stderr).
fn run_cli(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run credproxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CLI_CONFIG: &str = r#"identity: { audiences: ["https://credproxy.test"] }
rate_limits:
  backend: redis
  redis:
    url: "redis://redis.example.com:6379"
    timeout_ms: 20
routes: {}
"#;

#[test]
fn check_names_the_key_of_a_plaintext_public_redis_and_a_missing_max_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, CLI_CONFIG).expect("write");
    let (code, stderr) = run_cli(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{stderr}");
    let url = stderr
        .lines()
        .find(|l| l.starts_with("error: rate_limits.redis.url (line 5): "))
        .unwrap_or_else(|| panic!("no problem at rate_limits.redis.url:\n{stderr}"));
    assert!(url.contains("plaintext"), "{url}");
    assert!(
        stderr.contains(
            "error: rate_limits.max_instances (line 2): required with `on_backend_failure: local`"
        ),
        "{stderr}"
    );
    // The same block over TLS, with the instance count, is valid.
    let fixed = CLI_CONFIG
        .replace("redis://redis.example.com", "rediss://redis.example.com")
        .replace(
            "    timeout_ms: 20\n",
            "    timeout_ms: 20\n  max_instances: 4\n",
        );
    std::fs::write(&path, fixed).expect("write");
    let (code, stderr) = run_cli(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn serve_fails_at_start_naming_an_unset_auth_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let config = CLI_CONFIG
        .replace("redis://redis.example.com:6379", "redis://127.0.0.1:1")
        .replace(
            "    timeout_ms: 20\n",
            "    auth: \"env:REDIS_AUTH_UNSET\"\n  on_backend_failure: open\n",
        )
        .replace("routes: {}", "listen: \"127.0.0.1:0\"\nroutes: {}");
    std::fs::write(&path, config).expect("write");
    let (code, stderr) = run_cli(&["serve", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("rate_limits.redis"), "{stderr}");
    assert!(stderr.contains("REDIS_AUTH_UNSET"), "{stderr}");
    assert!(!stderr.contains("credproxy listening"), "{stderr}");
}

#[tokio::test]
async fn after_noscript_one_eval_answers_and_caches_the_script() {
    let redis = RedisServer::start(&[]).await;
    let (w, _) = cluster(
        "rate_limit: { per_second: 100, burst: 100 }",
        &redis_block(&redis.url(), SLOW_BOX, "  on_backend_failure: closed\n"),
        &default_env(),
        0,
    )
    .await;
    let token = w.keys.token(READER);
    let mut stats = Stats::default();
    one(&w.app, &token, &mut stats).await;
    // A restarted or failed-over Redis has no scripts: what SCRIPT FLUSH leaves behind.
    redis.query(None, &["SCRIPT", "FLUSH"]);
    redis.query(None, &["CONFIG", "RESETSTAT"]);
    one(&w.app, &token, &mut stats).await;
    assert_eq!(redis.calls(None, "evalsha"), 1, "EVALSHA first");
    assert_eq!(redis.calls(None, "eval"), 1, "then one EVAL after NOSCRIPT");
    assert_eq!(
        redis.calls(None, "script|load"),
        0,
        "no SCRIPT LOAD round trip"
    );
    one(&w.app, &token, &mut stats).await;
    assert_eq!(
        redis.calls(None, "evalsha"),
        2,
        "the EVAL cached the script"
    );
    assert_eq!(redis.calls(None, "eval"), 1);
    assert_eq!(stats.ok, 3, "{stats:?}");
}
