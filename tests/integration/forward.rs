//! Forwarding: streaming both ways, redirects passed back, timeouts, body limits and
//! unreachable upstreams, each with the SPEC's status and error code.

use std::time::Duration;

use futures_util::StreamExt;

use crate::harness::*;

#[tokio::test]
async fn passes_upstream_statuses_and_redirects_back_without_following() {
    let w = World::start().await;
    let r = w.app.get_as(READER, "/api/v1/status/503").await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.expect("body"),
        "status 503 Service Unavailable"
    );
    let r = w.app.get_as(READER, "/api/v1/redirect").await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://elsewhere.example/landing");
    assert_eq!(
        w.upstream.requests().len(),
        2,
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn a_slow_upstream_gets_504_after_timeout_seconds() {
    let w = World::start().await;
    let started = tokio::time::Instant::now();
    let r = w.app.get_as(READER, "/api/v1/slow/5").await;
    assert_eq!(r.status(), 504);
    assert_eq!(error_body(r).await["error"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut after the 1 s timeout"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502() {
    let w = World::with_routes(&format!(
        r#"  down:
    upstream: "http://127.0.0.1:1"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
"#
    ))
    .await;
    let r = w.app.get_as(READER, "/down/x").await;
    assert_eq!(r.status(), 502);
    assert_eq!(error_body(r).await["error"], "upstream_unreachable");
}

#[tokio::test]
async fn streams_a_slow_flowing_body_past_the_idle_timeout() {
    let w = World::start().await;
    // 5 chunks 300 ms apart: 1.5 s in all, longer than the 1 s idle timeout, never idle.
    let r = w.app.get_as(READER, "/api/v1/drip/5").await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut chunks = 0;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.expect("the body was not cut"));
        chunks += 1;
    }
    assert_eq!(
        String::from_utf8_lossy(&body),
        "chunk0;chunk1;chunk2;chunk3;chunk4;"
    );
    assert!(
        chunks >= 2,
        "the body streamed in pieces, not buffered whole"
    );
}

#[tokio::test]
async fn a_stalled_body_is_cut_after_the_idle_timeout() {
    let w = World::start().await;
    let r = w.app.get_as(READER, "/api/v1/stall").await;
    assert_eq!(r.status(), 200);
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), r.bytes()).await;
    let body = result.expect("the stalled body was cut well before 60 s");
    assert!(body.is_err(), "a cut body is an error, not a clean end");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_small_body_of_known_length_that_stalls_is_a_504_not_a_cut_answer() {
    let w = World::start().await;
    let started = tokio::time::Instant::now();
    // Content-Length 100, 11 bytes sent, then nothing: read whole, so nothing was answered
    // yet and the caller gets a clean 504 after the 1 s idle timeout.
    let r = w.app.get_as(READER, "/api/v1/stall-sized").await;
    assert_eq!(r.status(), 504);
    assert_eq!(error_body(r).await["error"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_and_never_sent() {
    let w = World::start().await;
    for size in [1024usize, 1025] {
        let r = w
            .app
            .request_as(reqwest::Method::POST, WRITER, "/api/v1/items")
            .body(vec![b'a'; size])
            .send()
            .await
            .expect("request");
        if size <= 1024 {
            assert_eq!(r.status(), 200, "exactly at the limit");
            assert_eq!(w.upstream.last().body.len(), 1024);
        } else {
            assert_eq!(r.status(), 413, "one over the limit");
            assert_eq!(error_body(r).await["error"], "body_too_large");
        }
    }
    assert_eq!(w.upstream.started(), 1);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_and_the_upstream_never_completes_it() {
    let w = World::start().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'z'; 200])).collect();
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/api/v1/items")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    assert_eq!(error_body(r).await["error"], "body_too_large");
    assert!(
        w.upstream
            .requests()
            .iter()
            .all(|r| !r.completed || r.body.len() <= 1024),
        "the upstream received an oversized body completely"
    );
    // A chunked body within the limit streams through.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(vec![b'y'; 256])).collect();
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/api/v1/items")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let last = w.upstream.last();
    assert!(last.completed);
    assert_eq!(last.body.len(), 1024);
}

#[tokio::test]
async fn get_requests_carry_no_body_framing_upstream() {
    let w = World::start().await;
    assert_eq!(w.app.get_as(READER, "/api/v1/items").await.status(), 200);
    let seen = w.upstream.last();
    assert!(seen.headers.get("transfer-encoding").is_none());
    assert!(seen.headers.get("content-length").is_none());
}
