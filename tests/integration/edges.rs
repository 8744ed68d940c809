//! Edges (SPEC "Edges: what holds when callers, upstreams and the store misbehave"),
//! tried as an attacker or an unlucky caller would, against the running server.

use std::time::Duration;

use crate::harness::*;

/// A route whose upstream may take its time (the default `api` route gives up after 1 s).
fn patient_route() -> String {
    format!(
        r#"  patient:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "Authorization", format: "Bearer {{secret}}" }} }} }}
    timeout_seconds: 30
    allow:
      - callers: ["{READER}"]
        methods: ["GET", "POST"]
        paths: ["/**"]
"#
    )
}

async fn patient_world(env: &[(String, String)]) -> World {
    World::custom(&patient_route(), |c| c, env).await
}

/// Waits until the upstream has started `n` requests.
async fn upstream_started(w: &World, n: usize) {
    for _ in 0..500 {
        if w.upstream.started() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the upstream never received the request");
}

#[tokio::test]
async fn a_caller_that_disconnects_before_the_response_still_leaves_one_entry() {
    let w = patient_world(&default_env()).await;
    let request = w
        .app
        .request_as(reqwest::Method::GET, READER, "/patient/slow/5")
        .header("x-request-id", "gone-before-answer")
        .send();
    // The caller gives up once the upstream has the request (and the credential).
    tokio::select! {
        _ = request => panic!("the slow upstream answered early"),
        () = upstream_started(&w, 1) => {}
    }
    let e = w.app.audit_for("gone-before-answer").await;
    assert_eq!(e["httpRequest"]["status"], 499, "{e}");
    assert_eq!(e["reason"], "client_closed", "{e}");
    assert_eq!(e["severity"], "WARNING", "{e}");
    assert_eq!(e["decision"], "allow", "{e}");
    assert_eq!(e["caller"], READER, "{e}");
    assert_eq!(e["route"], "patient", "{e}");
    assert!(e["upstream_status"].is_null(), "{e}");
}

#[tokio::test]
async fn requests_cut_at_the_drain_deadline_are_audited_as_shutdown_before_exit() {
    let mut env = default_env();
    env.push(("CREDPROXY_DRAIN_SECONDS".to_string(), "1".to_string()));
    let mut w = patient_world(&env).await;
    let request = w
        .app
        .request_as(reqwest::Method::GET, READER, "/patient/slow/20")
        .header("x-request-id", "cut-by-the-deadline")
        .send();
    let pending = tokio::spawn(request);
    upstream_started(&w, 1).await;
    w.app.sigterm();
    assert_eq!(w.app.wait_exit(Duration::from_secs(10)).await, Some(0));
    // Everything is on stdout once the process has exited: no waiting here.
    let found: Vec<_> = w
        .app
        .audit_entries()
        .into_iter()
        .filter(|e| e["request_id"] == "cut-by-the-deadline")
        .collect();
    assert_eq!(found.len(), 1, "{}", w.app.stdout.text());
    assert_eq!(found[0]["httpRequest"]["status"], 503, "{}", found[0]);
    assert_eq!(found[0]["reason"], "shutdown", "{}", found[0]);
    pending.abort();
}
