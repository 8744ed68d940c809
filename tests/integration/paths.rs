//! Path handling, tested as attacks: traversal and encoding tricks are 400 before policy,
//! never reach the upstream, and the upstream host can never be changed by the request.

use crate::harness::*;

#[tokio::test]
async fn rejects_traversal_and_encoding_tricks_before_policy() {
    let w = World::start().await;
    let token = w.keys.token(WRITER);
    for target in [
        "/api/v1/../admin",
        "/api/v1/./items",
        "/api/v1/%2e%2e/admin",
        "/api/v1/%2E%2e/admin",
        "/api/v1/.%2e/admin",
        "/api/v1/..;/admin",
        "/api/v1%2f..%2fadmin",
        "/api/v1%2Fadmin",
        "/api/v1/%5c..%5cadmin",
        "/api/v1/items%00",
        "/api/v1/a%0d%0aX-Injected:%20yes",
        "/api//v1/items",
        "/api/v1//items",
        "/api/v1/%ff%fe",
        "/%2e%2e/api/v1/items",
    ] {
        let r = w
            .app
            .raw(&format!(
                "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{target}: {r}");
        assert!(r.contains("\"error\":\"bad_request\""), "{target}: {r}");
        assert!(r.to_ascii_lowercase().contains("x-request-id:"), "{target}");
    }
    assert_eq!(w.upstream.started(), 0, "the upstream saw a rejected path");
}

#[tokio::test]
async fn a_raw_backslash_is_refused() {
    let w = World::start().await;
    let token = w.keys.token(WRITER);
    let r = w
        .app
        .raw(&format!(
            "GET /api/v1\\..\\admin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert_eq!(w.upstream.started(), 0);
}

#[tokio::test]
async fn absolute_form_targets_cannot_pick_another_host() {
    let w = World::start().await;
    let token = w.keys.token(WRITER);
    for target in [
        "http://evil.example/api/v1/items".to_string(),
        format!("http://{}/api/v1/items", w.upstream.addr),
    ] {
        let r = w
            .app
            .raw(&format!(
                "GET {target} HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{target}: {r}");
    }
    assert_eq!(w.upstream.started(), 0);
}

#[tokio::test]
async fn host_header_and_userinfo_tricks_stay_on_the_route_upstream() {
    let w = World::start().await;
    let token = w.keys.token(WRITER);
    let r = w
        .app
        .raw(&format!(
            "GET /api/v1/@evil.example/x HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = w.upstream.last();
    assert_eq!(seen.path, "/base/v1/@evil.example/x");
    assert_eq!(seen.headers["host"], w.upstream.addr.to_string());
}

#[tokio::test]
async fn policy_judges_the_decoded_path_and_the_upstream_gets_the_same_one() {
    let w = World::start().await;
    // `/public/*` is allowed for the whole project; %70 is `p`.
    let r = w.app.get_as(READER, "/api/%70ublic/a%20b").await;
    assert_eq!(r.status(), 200);
    assert_eq!(w.upstream.last().path, "/base/public/a%20b");
    // `*` is one segment: an encoded slash cannot stretch it over two.
    let r = w.app.get_as(READER, "/api/public/a%2Fb").await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn route_without_rest_means_the_base_path() {
    let w = World::with_routes(&format!(
        r#"  root:
    upstream: "{}/base"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/"]
"#,
        "http://127.0.0.1:1"
    ))
    .await;
    // Allowed (path `/`), then the upstream on port 1 refuses the connection: 502.
    for path in ["/root", "/root/"] {
        let r = w.app.get_as(READER, path).await;
        assert_eq!(r.status(), 502, "{path}");
        assert_eq!(error_body(r).await["error"], "upstream_unreachable");
    }
    let r = w.app.get_as(READER, "/root/x").await;
    assert_eq!(r.status(), 403);
}
