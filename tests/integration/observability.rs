//! Metrics and decoys.

use crate::harness::*;

const OLD_ETL: &str = "old-etl@pipelines.iam.gserviceaccount.com";

async fn world_with(top: &str) -> World {
    World::custom("", |config| format!("{top}{config}"), &default_env()).await
}

#[tokio::test]
async fn metrics_are_404_unless_enabled() {
    let w = World::start().await;
    let r = w.app.get("/_credproxy/metrics").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn metrics_count_requests_secrets_and_jwks_without_leaking() {
    let w = world_with(&format!(
        "metrics: {{ enabled: true, callers: [\"{WRITER}\"] }}\n"
    ))
    .await;
    assert_eq!(w.app.get_as(READER, "/api/v1/items").await.status(), 200);
    assert_eq!(w.app.get_as(READER, "/api/v1/echo").await.status(), 200);
    assert_eq!(w.app.get_as(STRANGER, "/api/v1/items").await.status(), 403);
    assert_eq!(w.app.get("/api/v1/x").await.status(), 401);
    // The series name routes and secrets: only a listed, verified caller may read them.
    assert_eq!(w.app.get("/_credproxy/metrics").await.status(), 401);
    assert_eq!(
        w.app.get_as(READER, "/_credproxy/metrics").await.status(),
        403
    );
    let r = w.app.get_as(WRITER, "/_credproxy/metrics").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    for want in [
        r#"credproxy_requests_total{route="api",decision="allow",code_class="2xx"} 2"#,
        r#"credproxy_requests_total{route="api",decision="deny",code_class="4xx"} 1"#,
        r#"credproxy_requests_total{route="",decision="deny",code_class="4xx"} 1"#,
        r#"credproxy_secret_cache_hits_total{secret="env:API_SECRET"}"#,
        r#"credproxy_jwks_refreshes_total{result="ok"} 1"#,
        r#"credproxy_upstream_duration_seconds_count{route="api"} 2"#,
        r#"credproxy_scrubbed_total{route="api"}"#,
        "credproxy_in_flight_requests",
        "credproxy_audit_dropped_total 0",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    for leak in [SECRET, "pw_SECRET_93ad"] {
        assert!(!text.contains(leak));
    }
    // The metrics endpoint itself is not audited: exactly the four requests above are.
    assert_eq!(
        w.app.audit_entries_settled("/api/v1/barrier").await.len(),
        4
    );
}

#[tokio::test]
async fn metrics_can_listen_on_their_own_port() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let w = world_with(&format!(
        "metrics: {{ enabled: true, listen: \"127.0.0.1:{port}\" }}\n"
    ))
    .await;
    let main = w.app.get("/_credproxy/metrics").await;
    assert_eq!(main.status(), 404, "not on the main port");
    let own = w
        .app
        .client
        .get(format!("http://127.0.0.1:{port}/_credproxy/metrics"))
        .send()
        .await
        .expect("own port");
    assert_eq!(own.status(), 200);
}

fn decoy_config() -> String {
    format!("decoys:\n  routes: [\"billing-admin\"]\n  callers: [\"{OLD_ETL}\"]\n")
}

#[tokio::test]
async fn decoys_are_refused_as_usual_and_raise_an_alert() {
    let w = world_with(&decoy_config()).await;
    // A decoy route: the same 404 as any unknown route.
    let normal = w.app.get_as(READER, "/no-such-route/x").await;
    let normal_body = error_body(normal).await;
    let r = w.app.get_as(READER, "/billing-admin/invoices").await;
    assert_eq!(r.status(), 404);
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let body = error_body(r).await;
    assert_eq!(body["error"], normal_body["error"]);
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["severity"], "ALERT");
    assert_eq!(e["reason"], "decoy");
    assert_eq!(e["decision"], "deny");

    // A decoy caller, on a path the project-wide rule would allow: refused like a denial.
    let r = w.app.get_as(OLD_ETL, "/api/public/x").await;
    assert_eq!(r.status(), 403);
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let body = error_body(r).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no rule of route `api` allows caller")
    );
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["severity"], "ALERT");
    assert_eq!(e["caller"], OLD_ETL);

    // Even an unauthenticated probe of a decoy route alerts (and is a plain 401).
    let r = w.app.get("/billing-admin/x").await;
    assert_eq!(r.status(), 401);
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(w.app.audit_for(&id).await["severity"], "ALERT");
    assert_eq!(w.upstream.started(), 0);
}
