//! Least privilege from evidence: rule attribution and shadow rules in the audit entry, and
//! `credproxy report` fed the server's own stdout (and its Cloud Logging export forms).

use crate::harness::*;

fn sha256_8(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn request_id(response: reqwest::Response) -> String {
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let _ = response.bytes().await;
    id
}

#[tokio::test]
async fn allowed_entries_name_their_rule_and_its_hash_denied_ones_neither() {
    let w = World::start().await;
    let read = request_id(w.app.get_as(READER, "/api/v1/things").await).await;
    let write = request_id(
        w.app
            .request_as(reqwest::Method::POST, WRITER, "/api/v1/things")
            .body("x")
            .send()
            .await
            .expect("request"),
    )
    .await;
    let denied = request_id(w.app.get_as(STRANGER, "/api/v1/things").await).await;

    let e = w.app.audit_for(&read).await;
    assert_eq!(e["rule"], "routes.api.allow[0]");
    assert_eq!(
        e["rule_hash"],
        sha256_8(&format!(
            r#"{{"callers":["{READER}"],"methods":["GET"],"paths":["/v1/**"]}}"#
        ))
        .as_str()
    );
    let e = w.app.audit_for(&write).await;
    assert_eq!(e["rule"], "routes.api.allow[1]");
    assert_eq!(
        e["rule_hash"],
        sha256_8(&format!(
            r#"{{"callers":["{WRITER}"],"methods":["GET","POST","PUT"],"paths":["/v1/**"]}}"#
        ))
        .as_str()
    );
    // The expired grant matched but did not allow: a denial names no rule.
    let e = w.app.audit_for(&denied).await;
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["reason"], "grant_expired");
    let object = e.as_object().expect("object");
    assert!(
        !object.contains_key("rule") && !object.contains_key("rule_hash"),
        "{e}"
    );
    assert!(
        !object.contains_key("shadow"),
        "no shadow_allow on this route: {e}"
    );
}

/// A route `sh` whose `allow` is broad and whose `shadow_allow` is narrow.
const SHADOW_ROUTE: &str = r#"
  sh:
    upstream: "{UPSTREAM}"
    credential:
      secret: "env:API_SECRET"
      inject:
        header: { name: "Authorization", format: "Bearer {secret}" }
    allow:
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: ["GET", "POST"]
        paths: ["/v1/**"]
    shadow_allow:
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/v1/charges"]
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: ["DELETE"]
        paths: ["/v1/charges"]
"#;

#[tokio::test]
async fn shadow_rules_are_judged_for_every_request_and_never_change_the_response() {
    let w = World::custom(
        SHADOW_ROUTE,
        |c| {
            c.replace(
                "routes:\n",
                &format!("metrics: {{ enabled: true, callers: [\"{WRITER}\"] }}\nroutes:\n"),
            )
        },
        &default_env(),
    )
    .await;
    let app = &w.app;
    let send = |method: reqwest::Method, path: &'static str| async move {
        let r = app
            .request_as(method, READER, path)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, request_id(r).await)
    };
    // Allowed, and the shadow rules agree.
    let (status, both) = send(reqwest::Method::GET, "/sh/v1/charges").await;
    assert_eq!(status, 200);
    // Allowed today, the shadow rules would deny: still served.
    let (status, would_deny) = send(reqwest::Method::POST, "/sh/v1/refunds").await;
    assert_eq!(status, 200);
    // Denied today, a shadow rule would allow: still refused.
    let (status, would_allow) = send(reqwest::Method::DELETE, "/sh/v1/charges").await;
    assert_eq!(status, 403);
    // Denied by both.
    let (status, neither) = send(reqwest::Method::PUT, "/sh/v2/x").await;
    assert_eq!(status, 403);
    // Unauthenticated: never judged, so no shadow decision.
    let r = app.get("/sh/v1/charges").await;
    assert_eq!(r.status(), 401);
    let unauthenticated = request_id(r).await;

    let shadow = |e: &serde_json::Value| e["shadow"].clone();
    let e = app.audit_for(&both).await;
    assert_eq!(
        shadow(&e),
        serde_json::json!({"decision": "allow", "rule": "routes.sh.shadow_allow[0]"})
    );
    assert_eq!(e["rule"], "routes.sh.allow[0]");
    let e = app.audit_for(&would_deny).await;
    assert_eq!(
        shadow(&e),
        serde_json::json!({"decision": "deny", "rule": null})
    );
    assert_eq!(
        (e["decision"].as_str(), e["rule"].as_str()),
        (Some("allow"), Some("routes.sh.allow[0]"))
    );
    let e = app.audit_for(&would_allow).await;
    assert_eq!(
        shadow(&e),
        serde_json::json!({"decision": "allow", "rule": "routes.sh.shadow_allow[1]"})
    );
    assert_eq!(e["decision"], "deny");
    assert!(e.get("rule").is_none(), "{e}");
    let e = app.audit_for(&neither).await;
    assert_eq!(
        shadow(&e),
        serde_json::json!({"decision": "deny", "rule": null})
    );
    let e = app.audit_for(&unauthenticated).await;
    assert!(e.get("shadow").is_none(), "{e}");
    // Routes without shadow_allow carry no shadow field.
    let other = request_id(app.get_as(READER, "/api/v1/x").await).await;
    assert!(app.audit_for(&other).await.get("shadow").is_none());

    let metrics = app
        .get_as(WRITER, "/_credproxy/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    for (enforced, shadow) in [
        ("allow", "allow"),
        ("allow", "deny"),
        ("deny", "allow"),
        ("deny", "deny"),
    ] {
        let line = format!(
            "credproxy_shadow_decisions_total{{route=\"sh\",enforced=\"{enforced}\",shadow=\"{shadow}\"}} 1\n"
        );
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
    assert!(
        !metrics.contains("credproxy_shadow_decisions_total{route=\"api\""),
        "{metrics}"
    );
}
