//! Default-deny policy through the running server: who may call which route, methods and
//! paths; every denial is answered by credproxy and never reaches the upstream.

use crate::harness::*;

#[tokio::test]
async fn allows_exactly_what_a_rule_lists() {
    let w = World::start().await;
    assert_eq!(w.app.get_as(READER, "/api/v1/items").await.status(), 200);
    assert_eq!(
        w.app.get_as(READER, "/api/v1/items/42/sub").await.status(),
        200
    );
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/api/v1/items")
        .body("x")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(w.upstream.requests().len(), 3);
}

#[tokio::test]
async fn denies_everything_else_with_a_message_naming_caller_route_method_and_path() {
    let w = World::start().await;
    let cases = [
        (reqwest::Method::POST, READER, "/api/v1/items"),
        (reqwest::Method::DELETE, WRITER, "/api/v1/items/1"),
        (reqwest::Method::HEAD, READER, "/api/v1/items"),
        (reqwest::Method::GET, READER, "/api/v2/items"),
        (reqwest::Method::GET, STRANGER, "/api/public/x"),
        (
            reqwest::Method::GET,
            "reader@pipelines-evil.iam.gserviceaccount.com",
            "/api/public/x",
        ),
    ];
    for (method, caller, path) in cases {
        let r = w
            .app
            .request_as(method.clone(), caller, path)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 403, "{method} {path} as {caller}");
        if method != reqwest::Method::HEAD {
            let body = error_body(r).await;
            assert_eq!(body["error"], "forbidden");
            let message = body["message"].as_str().unwrap_or_default();
            let rest = path.trim_start_matches("/api");
            for part in [caller, "api", method.as_str(), rest] {
                assert!(message.contains(part), "{message} lacks {part}");
            }
        }
    }
    assert_eq!(
        w.upstream.started(),
        0,
        "a denied request reached the upstream"
    );
}

#[tokio::test]
async fn a_project_wildcard_covers_only_that_projects_service_accounts() {
    let w = World::start().await;
    let other = "someone@pipelines.iam.gserviceaccount.com";
    assert_eq!(w.app.get_as(other, "/api/public/a").await.status(), 200);
    assert_eq!(w.app.get_as(other, "/api/public/a/b").await.status(), 403);
    assert_eq!(w.app.get_as(other, "/api/public").await.status(), 403);
}

#[tokio::test]
async fn an_expired_grant_is_refused_and_says_so() {
    let w = World::start().await;
    let r = w.app.get_as(STRANGER, "/api/v1/items").await;
    assert_eq!(r.status(), 403);
    let body = error_body(r).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{body}"
    );
    assert_eq!(w.upstream.started(), 0);
}

#[tokio::test]
async fn unknown_routes_are_404_for_verified_callers_only() {
    let w = World::start().await;
    let r = w.app.get_as(READER, "/nope/v1/items").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_body(r).await["error"], "unknown_route");
    let r = w.app.get("/nope/v1/items").await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn reserved_paths_are_not_routes() {
    let w = World::start().await;
    for path in ["/_credproxy/nope", "/_credproxy/events/secret-manager"] {
        let r = w.app.get_as(READER, path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers().get("x-request-id").is_some());
    }
    assert_eq!(w.upstream.started(), 0);
}
