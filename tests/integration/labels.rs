//! Pipelines first-class: `X-Credproxy-Error` tells credproxy's own answers from upstream
//! ones, and `X-Credproxy-Labels` ties an audit entry to the task that made the call, without
//! ever reaching the upstream or bending the entry.

use crate::harness::*;

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string()
}

fn credproxy_error(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("x-credproxy-error")
        .map(|v| v.to_str().expect("ascii").to_string())
}

#[tokio::test]
async fn every_answer_of_credproxy_names_its_code_and_upstream_answers_never_do() {
    let w = World::start().await;
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (w.app.get("/api/v1/items").await, 401, "unauthenticated"),
        (
            w.app.get_as(STRANGER, "/api/v1/items").await,
            403,
            "forbidden",
        ),
        (
            w.app.get_as(READER, "/nope/v1/x").await,
            404,
            "unknown_route",
        ),
        (
            w.app.get_as(READER, "/api/v1/a%2Fb").await,
            400,
            "bad_request",
        ),
        (
            w.app.get_as(READER, "/_credproxy/nothing").await,
            404,
            "not_found",
        ),
        (
            w.app
                .request_as(reqwest::Method::POST, WRITER, "/api/v1/items")
                .body(vec![b'x'; 4096])
                .send()
                .await
                .expect("request"),
            413,
            "body_too_large",
        ),
        (
            w.app.get_as(READER, "/api/v1/slow/3").await,
            504,
            "upstream_timeout",
        ),
    ];
    for (response, status, code) in cases {
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(credproxy_error(&response).as_deref(), Some(code));
        let body = error_body(response).await;
        assert_eq!(body["error"], code);
    }

    // Upstream errors pass through unmarked, so a client can tell them apart...
    for path in ["/api/v1/status/403", "/api/v1/status/503", "/api/v1/items"] {
        let r = w.app.get_as(READER, path).await;
        assert_eq!(credproxy_error(&r), None, "{path}: {:?}", r.headers());
    }
    // ...and an upstream cannot pose as credproxy: its header of that name is dropped.
    let r = w.app.get_as(READER, "/api/v1/spoof-error").await;
    assert_eq!(r.status(), 403);
    assert_eq!(credproxy_error(&r), None, "{:?}", r.headers());
    assert_eq!(r.text().await.expect("body"), "upstream says no");
}

#[tokio::test]
async fn caller_labels_reach_the_audit_entry_and_never_the_upstream() {
    let w = World::start().await;
    let r = w
        .app
        .request_as(reqwest::Method::GET, READER, "/api/v1/items")
        .header(
            "X-Credproxy-Labels",
            "dag_id=daily_sales, task_id=charges, run_id=scheduled__2026-12-01T06:00:00+00:00, try_number=1",
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let entry = w.app.audit_for(&request_id(&r)).await;
    assert_eq!(
        entry["logging.googleapis.com/labels"],
        serde_json::json!({
            "dag_id": "daily_sales",
            "task_id": "charges",
            "run_id": "scheduled__2026-12-01T06:00:00+00:00",
            "try_number": "1",
        }),
        "{entry}"
    );
    let seen = w.upstream.last();
    assert!(
        seen.headers.get("x-credproxy-labels").is_none(),
        "labels were forwarded: {:?}",
        seen.headers
    );

    // No labels: the field is absent, not empty.
    let r = w.app.get_as(READER, "/api/v1/items").await;
    let entry = w.app.audit_for(&request_id(&r)).await;
    assert!(
        entry.get("logging.googleapis.com/labels").is_none(),
        "{entry}"
    );

    // Denied requests carry their labels too: that is when an investigator needs the task.
    let r = w
        .app
        .client
        .get(w.app.url("/api/v1/items"))
        .header("X-Credproxy-Labels", "dag_id=d, task_id=t, try_number=3")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let entry = w.app.audit_for(&request_id(&r)).await;
    assert_eq!(
        entry["logging.googleapis.com/labels"],
        serde_json::json!({"dag_id": "d", "task_id": "t", "try_number": "3"})
    );
}

#[tokio::test]
async fn a_labels_header_cannot_inject_fields_or_bloat_the_entry() {
    let w = World::start().await;
    let huge = "v".repeat(100_000);
    let header = format!(
        "dag_id=ok,caller=evil@x\",\"decision\":\"allow,severity=DEBUG\"}}{{\"a\":\"b,\
         big={huge},Upper=x,task_id=t\\nnext,run_id=fine,{}",
        (0..20)
            .map(|i| format!("k{i}=v{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let r = w
        .app
        .request_as(reqwest::Method::GET, STRANGER, "/api/v1/items")
        .header("X-Credproxy-Labels", header)
        .header("X-Credproxy-Labels", "late=never")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    let id = request_id(&r);
    let line = w
        .app
        .output()
        .lines()
        .find(|l| l.contains(&id))
        .map(str::to_string);
    let entry = w.app.audit_for(&id).await;
    // What the caller meant to smuggle is not a field of the entry.
    assert_eq!(entry["caller"], STRANGER);
    assert_eq!(entry["decision"], "deny");
    assert_eq!(entry["severity"], "WARNING");
    // Exactly the valid pairs, the first 8 of them; the quote, brace, newline, upper-case
    // and oversized pairs are gone.
    let labels = entry["logging.googleapis.com/labels"]
        .as_object()
        .expect("labels")
        .clone();
    let mut want = serde_json::Map::new();
    want.insert("dag_id".into(), "ok".into());
    want.insert("run_id".into(), "fine".into());
    for i in 0..6 {
        want.insert(format!("k{i}"), format!("v{i}").into());
    }
    assert_eq!(labels, want, "{entry}");
    let line = line.unwrap_or_else(|| serde_json::to_string(&entry).expect("json"));
    assert!(line.len() < 16 * 1024, "entry of {} bytes", line.len());
    assert!(!line.contains("vvvvvvvvvv"), "the huge value was logged");
}
