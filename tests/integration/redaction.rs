//! Nothing leaks: response scrubbing of the injected credential, and secrets kept out of
//! logs on failure paths (every TestApp also greps its whole output on drop).

use crate::harness::*;

const QUERY_DOWN: &str = r#"  qdown:
    upstream: "http://127.0.0.1:1"
    credential: { secret: "env:API_SECRET", inject: { query: { name: "key" } } }
    allow:
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/**"]
"#;

#[tokio::test]
async fn a_query_credential_never_reaches_the_logs_when_the_upstream_fails() {
    let w = World::with_routes(QUERY_DOWN).await;
    let r = w.app.get_as(READER, "/qdown/x?a=1").await;
    assert_eq!(r.status(), 502);
    let _ = r.bytes().await;
    w.app.wait_audit(1).await;
    assert!(
        w.app.stderr.text().contains("upstream request failed"),
        "the failure is logged"
    );
    w.app.assert_nothing_leaked();
}

#[tokio::test]
async fn an_echoing_upstream_never_hands_the_credential_back() {
    let w = World::start().await;
    for path in ["/api/v1/echo", "/q/v1/echo?a=1", "/basic/v1/echo"] {
        let r = w.app.get_as(READER, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let id = r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        let headers = format!("{:?}", r.headers());
        let length = r.headers().get("content-length").cloned();
        let body = r.text().await.expect("body");
        // A small answer of known length is scrubbed whole and sent with its new length.
        assert_eq!(
            length.as_ref().map(|v| v.to_str().expect("ascii")),
            Some(body.len().to_string().as_str()),
            "{path}: {headers}"
        );
        for leak in [SECRET, "pw_SECRET_93ad"] {
            assert!(!body.contains(leak), "{path}: body leaks: {body}");
            assert!(!headers.contains(leak), "{path}: headers leak: {headers}");
        }
        assert!(body.contains("[redacted]"), "{path}: {body}");
        let e = w.app.audit_for(&id).await;
        assert!(e["scrubbed"].as_u64().unwrap_or(0) >= 1, "{path}: {e}");
    }
    // The basic-auth form is scrubbed whole (base64 of user:password).
    let last = w.upstream.last();
    assert!(
        last.headers["authorization"]
            .to_str()
            .expect("ascii")
            .starts_with("Basic ")
    );
}

#[tokio::test]
async fn scrubbing_can_be_turned_off_per_route() {
    let w = World::with_routes(&format!(
        r#"  raw:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "Authorization", format: "Bearer {{secret}}" }} }} }}
    scrub_responses: false
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
"#
    ))
    .await;
    let r = w.app.get_as(READER, "/raw/echo").await;
    let body = r.text().await.expect("body");
    assert!(
        body.contains(&format!("authorization: Bearer {SECRET}\n")),
        "scrubbing was off: {body}"
    );
}

#[tokio::test]
async fn path_and_method_override_vectors_never_reach_the_upstream() {
    let w = World::start().await;
    let r = w
        .app
        .request_as(
            reqwest::Method::POST,
            WRITER,
            "/api/v1/items?_method=DELETE&a=1",
        )
        .header("X-Original-URL", "/admin")
        .header("X-Rewrite-URL", "/admin")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen = w.upstream.last();
    assert_eq!(seen.query.as_deref(), Some("a=1"));
    assert!(seen.headers.get("x-original-url").is_none());
    assert!(seen.headers.get("x-rewrite-url").is_none());
}

#[tokio::test]
async fn streaming_responses_hold_their_in_flight_slot_until_done() {
    let w = World::custom(
        "",
        |config| config.replace("server:\n", "server:\n  max_in_flight: 1\n"),
        &default_env(),
    )
    .await;
    let app = &w.app;
    // Headers arrive at once, the body takes ~1.5 s.
    let first = app.get_as(READER, "/q/v1/drip/5").await;
    assert_eq!(first.status(), 200);
    let second = app.get_as(READER, "/api/v1/items").await;
    assert_eq!(
        second.status(),
        503,
        "a streaming download still counts as in flight"
    );
    let _ = first.bytes().await.expect("body");
    assert_eq!(app.get_as(READER, "/api/v1/items").await.status(), 200);
}

#[tokio::test]
async fn a_caller_asking_for_gzip_still_gets_a_scrubbed_response() {
    let w = World::start().await;
    let r = w
        .app
        .request_as(reqwest::Method::GET, READER, "/api/v1/gzip-echo")
        .header("Accept-Encoding", "gzip, deflate")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    let body = r.text().await.expect("body");
    assert!(body.starts_with("accept-encoding=identity;"), "{body}");
    assert!(
        body.contains("[redacted]") && !body.contains(SECRET),
        "{body}"
    );
}

#[tokio::test]
async fn a_compressed_body_that_cannot_be_scrubbed_is_refused() {
    let w = World::start().await;
    let r = w.app.get_as(READER, "/api/v1/force-gzip").await;
    assert_eq!(r.status(), 502);
    assert_eq!(error_body(r).await["error"], "upstream_unreachable");
}
