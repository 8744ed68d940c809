//! Lifecycle: health and readiness, JWKS outages, load shedding, slow headers, and the
//! SIGTERM drain.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

const SLOW_ROUTE: &str = r#"  slowok:
    upstream: "{UPSTREAM}"
    credential: { secret: "env:API_SECRET", inject: { header: { name: "X-Key" } } }
    timeout_seconds: 10
    allow:
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/**"]
"#;

#[tokio::test]
async fn health_is_200_and_ready_waits_for_the_jwks() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    jwks.set_failing(true);
    let upstream = FakeUpstream::start().await;
    let app = TestApp::spawn_with(
        &default_config(&jwks, &upstream, ""),
        &keys,
        &default_env(),
        &[],
    )
    .await;
    let health = app.get("/_credproxy/health").await;
    assert_eq!(health.status(), 200);
    let ready = app.get("/_credproxy/ready").await;
    assert_eq!(ready.status(), 503, "not ready before the JWKS was fetched");
    // Requests meanwhile are 401 (no keys), the process keeps running.
    let r = app.get_as(READER, "/api/v1/items").await;
    assert_eq!(r.status(), 401);
    assert!(app.stderr.text().contains("JWKS"), "the outage is logged");
    jwks.set_failing(false);
    app.wait_ready().await;
    assert_eq!(app.get_as(READER, "/api/v1/items").await.status(), 200);
}

#[tokio::test]
async fn sheds_load_over_max_in_flight_with_retry_after() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let config = default_config(&jwks, &upstream, SLOW_ROUTE)
        .replace("server:\n", "server:\n  max_in_flight: 1\n");
    let app = TestApp::spawn(&config, &keys).await;
    let token = keys.token(READER);
    let slow = {
        let client = app.client.clone();
        let url = app.url("/slowok/slow/2");
        let token = token.clone();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
    };
    upstream.wait_started(1).await;
    // On a connection of its own: left idle in the shared pool for the 2 s the slow request
    // takes, it would meet the server's 2 s header-read timeout (which also bounds idle
    // keep-alive) just as the last request below reused it.
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(app.url("/api/v1/items"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_body(r).await["error"], "overloaded");
    let first = slow.await.expect("join").expect("slow request");
    assert_eq!(first.status(), 200);
    assert_eq!(
        app.get_as(READER, "/api/v1/items").await.status(),
        200,
        "capacity is released"
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off_while_others_are_served() {
    let w = World::start().await;
    let mut slow = tokio::net::TcpStream::connect(w.app.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /api/v1/items HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    // Others are served meanwhile.
    assert_eq!(w.app.get_as(READER, "/api/v1/items").await.status(), 200);
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow connection was not closed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after the 2 s header timeout"
    );
    assert_eq!(w.upstream.requests().len(), 1);
}

/// Starts the app with `threads` serving threads, sends `n` slow requests on separate
/// connections, sends SIGTERM while they run, and checks every one finishes and the process
/// exits 0.
async fn drains_on_sigterm(threads: &str, n: usize) {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let mut env = default_env();
    env.push(("CREDPROXY_WORKER_THREADS".to_string(), threads.to_string()));
    let mut app = TestApp::spawn_with(
        &default_config(&jwks, &upstream, SLOW_ROUTE),
        &keys,
        &env,
        &[],
    )
    .await;
    app.wait_ready().await;
    let listening = app
        .stderr
        .text()
        .lines()
        .find(|l| l.contains("credproxy listening"))
        .map(str::to_string)
        .expect("listening line");
    assert!(
        listening.contains(&format!("\"servingThreads\":{threads}")),
        "{listening}"
    );
    let token = keys.token(READER);
    let in_flight: Vec<_> = (0..n)
        .map(|_| {
            // A client each: one connection each, spread over the serving threads.
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client");
            let url = app.url("/slowok/slow/1");
            let token = token.clone();
            tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
        })
        .collect();
    upstream.wait_started(n).await;
    app.sigterm();
    for request in in_flight {
        let response = request
            .await
            .expect("join")
            .expect("the in-flight request finished");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "slow answer");
    }
    assert_eq!(app.wait_exit(Duration::from_secs(9)).await, Some(0));
    // Once stopped, nothing listens there any more.
    assert!(tokio::net::TcpStream::connect(app.addr).await.is_err());
    assert!(app.stderr.text().contains("drained"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    drains_on_sigterm("1", 2).await;
}

#[tokio::test]
async fn sigterm_drains_every_serving_thread() {
    drains_on_sigterm("3", 6).await;
}
