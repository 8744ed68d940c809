//! Audit entries: one Cloud Logging JSON line per request on stdout, with the SPEC's fields,
//! severities and trace correlation.

use crate::harness::*;

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string()
}

fn assert_shape(e: &serde_json::Value) {
    for key in [
        "severity",
        "message",
        "time",
        "httpRequest",
        "request_id",
        "caller",
        "route",
        "decision",
        "reason",
        "secret",
        "secret_version",
        "upstream_status",
        "environment",
    ] {
        assert!(e.get(key).is_some(), "audit entry lacks {key}: {e}");
    }
    let h = &e["httpRequest"];
    assert!(h["requestMethod"].is_string());
    assert!(h["requestUrl"].is_string());
    assert!(h["status"].is_u64());
    let latency = h["latency"].as_str().expect("latency");
    assert!(
        latency.ends_with('s') && latency[..latency.len() - 1].parse::<f64>().is_ok(),
        "{latency}"
    );
    assert!(
        h["responseSize"]
            .as_str()
            .expect("size")
            .parse::<u64>()
            .is_ok()
    );
    assert!(chrono::DateTime::parse_from_rfc3339(e["time"].as_str().expect("time")).is_ok());
    assert_eq!(e["environment"], "test");
}

#[tokio::test]
async fn an_allowed_request_logs_one_info_entry_with_caller_route_and_secret() {
    let w = World::start().await;
    let r = w
        .app
        .request_as(reqwest::Method::GET, READER, "/api/v1/items?page=2")
        .header("User-Agent", "airflow-task/1.0")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let body = r.bytes().await.expect("body");
    let e = w.app.audit_for(&id).await;
    assert_shape(&e);
    assert_eq!(e["severity"], "INFO");
    assert_eq!(e["decision"], "allow");
    assert!(e["reason"].is_null());
    assert_eq!(e["caller"], READER);
    assert_eq!(e["route"], "api");
    assert_eq!(e["secret"], "env:API_SECRET");
    assert_eq!(e["upstream_status"], 200);
    assert_eq!(e["httpRequest"]["requestMethod"], "GET");
    assert_eq!(e["httpRequest"]["requestUrl"], "/api/v1/items?page=2");
    assert_eq!(e["httpRequest"]["status"], 200);
    assert_eq!(e["httpRequest"]["userAgent"], "airflow-task/1.0");
    assert_eq!(e["httpRequest"]["remoteIp"], "127.0.0.1");
    assert_eq!(e["httpRequest"]["responseSize"], body.len().to_string());
}

#[tokio::test]
async fn refusals_log_warning_entries_with_their_reason() {
    let w = World::start().await;
    let expired = {
        let mut claims = w.keys.claims(READER);
        claims["exp"] = serde_json::json!(chrono::Utc::now().timestamp() - 600);
        claims["iat"] = serde_json::json!(chrono::Utc::now().timestamp() - 4000);
        w.keys.sign(&claims)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, serde_json::Value)> = vec![
        (
            w.app.client.get(w.app.url("/api/v1/items")),
            401,
            "unauthenticated",
            serde_json::Value::Null,
        ),
        (
            w.app
                .client
                .get(w.app.url("/api/v1/items"))
                .bearer_auth(expired),
            401,
            "token_expired",
            serde_json::Value::Null,
        ),
        (
            w.app
                .request_as(reqwest::Method::DELETE, READER, "/api/v1/items"),
            403,
            "forbidden",
            READER.into(),
        ),
        (
            w.app
                .request_as(reqwest::Method::GET, STRANGER, "/api/v1/items"),
            403,
            "grant_expired",
            STRANGER.into(),
        ),
        (
            w.app.request_as(reqwest::Method::GET, READER, "/nope/x"),
            404,
            "unknown_route",
            READER.into(),
        ),
        (
            w.app
                .request_as(reqwest::Method::POST, WRITER, "/api/v1/items")
                .body(vec![0u8; 2048]),
            413,
            "body_too_large",
            WRITER.into(),
        ),
    ];
    for (request, status, reason, caller) in cases {
        let r = request.send().await.expect("request");
        assert_eq!(r.status().as_u16(), status, "{reason}");
        let e = w.app.audit_for(&request_id(&r)).await;
        assert_shape(&e);
        assert_eq!(e["reason"], reason);
        assert_eq!(e["httpRequest"]["status"], status);
        assert_eq!(e["caller"], caller, "{reason}");
        assert!(e["upstream_status"].is_null());
        if status == 413 {
            // Policy allowed it; the body limit refused it.
            assert_eq!(e["decision"], "allow");
            assert_eq!(e["severity"], "WARNING");
        } else {
            assert_eq!(e["decision"], "deny", "{reason}");
            assert_eq!(e["severity"], "WARNING", "{reason}");
        }
    }
}

#[tokio::test]
async fn proxy_side_failures_log_errors_and_upstream_5xx_logs_a_warning() {
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
    for (path, status, reason, severity, upstream) in [
        ("/down/x", 502, Some("upstream_unreachable"), "ERROR", None),
        (
            "/api/v1/slow/5",
            504,
            Some("upstream_timeout"),
            "ERROR",
            None,
        ),
        ("/api/v1/status/503", 503, None, "WARNING", Some(503)),
    ] {
        let r = w.app.get_as(READER, path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let e = w.app.audit_for(&request_id(&r)).await;
        assert_shape(&e);
        assert_eq!(e["decision"], "allow", "{path}");
        assert_eq!(e["severity"], severity, "{path}");
        assert_eq!(e["reason"].as_str(), reason, "{path}");
        assert_eq!(
            e["upstream_status"].as_u64(),
            upstream.map(|u: u64| u),
            "{path}"
        );
    }
}

#[tokio::test]
async fn every_request_logs_exactly_one_entry_and_health_is_not_audited() {
    let w = World::start().await;
    let mut ids = Vec::new();
    for path in ["/api/v1/a", "/api/v1/b", "/api/v2/c", "/nope"] {
        ids.push(request_id(&w.app.get_as(READER, path).await));
    }
    for path in ["/_credproxy/health", "/_credproxy/ready"] {
        let r = w.app.get(path).await;
        assert!(r.headers().get("x-request-id").is_some(), "{path}");
    }
    let r = w
        .app
        .client
        .post(w.app.url("/_credproxy/health"))
        .send()
        .await
        .expect("request");
    assert!(r.headers().get("x-request-id").is_some());
    let entries = w.app.wait_audit(4).await;
    // A stray extra entry would be written before a later request's.
    let entries_after = w.app.audit_entries_settled("/api/v1/barrier").await;
    assert_eq!(entries_after.len(), entries.len());
    assert_eq!(entries_after.len(), 4, "{entries_after:?}");
    for id in ids {
        assert_eq!(
            entries_after
                .iter()
                .filter(|e| e["request_id"] == id.as_str())
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_body_still_gets_one_entry() {
    let w = World::start().await;
    let r = w.app.get_as(READER, "/api/v1/drip/10").await;
    let id = request_id(&r);
    drop(r);
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["upstream_status"], 200);
}

#[tokio::test]
async fn trace_ids_come_from_traceparent_or_x_cloud_trace_context() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let config = format!(
        "project_id: acme-prod\n{}",
        default_config(&jwks, &upstream, "")
    );
    let app = TestApp::spawn(&config, &keys).await;
    let r = app
        .request_as(reqwest::Method::GET, READER, "/api/v1/items")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .expect("request");
    let e = app.audit_for(&request_id(&r)).await;
    assert_eq!(
        e["logging.googleapis.com/trace"],
        "projects/acme-prod/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(e["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    // traceparent is propagated so the upstream call joins the trace.
    assert_eq!(
        upstream.last().headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    let r = app
        .request_as(reqwest::Method::GET, READER, "/api/v1/items")
        .header(
            "X-Cloud-Trace-Context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )
        .send()
        .await
        .expect("request");
    let e = app.audit_for(&request_id(&r)).await;
    assert_eq!(
        e["logging.googleapis.com/trace"],
        "projects/acme-prod/traces/105445aa7843bc8bf206b12000100000"
    );
    assert_eq!(e["logging.googleapis.com/spanId"], "0000000000000001");
}

#[tokio::test]
async fn request_urls_in_the_audit_never_carry_the_injected_parameter() {
    let w = World::start().await;
    let r = w
        .app
        .get_as(READER, "/q/v1/items?key=callers-own&a=1")
        .await;
    assert_eq!(r.status(), 200);
    let e = w.app.audit_for(&request_id(&r)).await;
    assert_eq!(e["httpRequest"]["requestUrl"], "/q/v1/items?a=1");
}
