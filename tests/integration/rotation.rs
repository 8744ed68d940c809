//! Rotation: upstream 401 retry with a newer version, Pub/Sub push invalidation, and a drill
//! with continuous traffic while versions are added and disabled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::*;
use crate::secrets::{SM_SECRET, SmWorld};

const V1: &str = "Bearer v1-SECRET-value-aaaa";
const V2: &str = "Bearer v2-SECRET-value-bbbb";
const PUSHER: &str = "pubsub-push@acme.iam.gserviceaccount.com";
const PUSH_AUDIENCE: &str = "https://credproxy.test/_credproxy/events/secret-manager";

fn events_block() -> String {
    format!(
        "events:\n  pubsub_push_audience: \"{PUSH_AUDIENCE}\"\n  pubsub_push_callers: [\"{PUSHER}\"]\n"
    )
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string()
}

#[tokio::test]
async fn an_upstream_401_with_an_older_version_retries_once_with_the_new_one() {
    // A long TTL: only the 401 can make credproxy look for the new version.
    let w = SmWorld::start("  cache_ttl_seconds: 3600\n", "", true).await;
    assert_eq!(w.auth_seen().await, V1);
    w.sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    w.upstream.accept_only(Some(&[V2]));
    let before = w.upstream.requests().len();
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/sm/v1/charges")
        .body("amount=100")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let seen = &w.upstream.requests()[before..];
    assert_eq!(seen.len(), 2, "one 401, one retry");
    assert_eq!(seen[0].headers["authorization"], V1);
    assert_eq!(seen[1].headers["authorization"], V2);
    assert_eq!(
        seen[1].body.as_ref(),
        b"amount=100",
        "the body was replayed"
    );
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["secret_version"], "2");
    assert_eq!(e["retried"], true);
    assert_eq!(e["upstream_status"], 200);
}

#[tokio::test]
async fn a_401_without_a_newer_version_is_passed_back_without_retry() {
    let w = SmWorld::start("  cache_ttl_seconds: 3600\n", "", true).await;
    w.upstream.accept_only(Some(&["Bearer something-else"]));
    let before = w.upstream.requests().len();
    let r = w.app.get_as(READER, "/sm/v1/items").await;
    assert_eq!(r.status(), 401);
    assert_eq!(w.upstream.requests().len() - before, 1);
    // A second 401 within 10 s does not even read the store again.
    let calls = w.sm.calls(SM_SECRET);
    assert_eq!(w.app.get_as(READER, "/sm/v1/items").await.status(), 401);
    assert_eq!(
        w.sm.calls(SM_SECRET),
        calls,
        "at most one store read per 10 s"
    );
}

#[tokio::test]
async fn a_streamed_body_is_never_replayed() {
    let w = SmWorld::start("  cache_ttl_seconds: 3600\n", "", true).await;
    w.sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    w.upstream.accept_only(Some(&[V2]));
    let before = w.upstream.started();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..3).map(|_| Ok(vec![b'x'; 100])).collect();
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/sm/v1/upload")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401, "a chunked body cannot be replayed");
    assert_eq!(w.upstream.started() - before, 1);
}

fn push_body(event_type: &str, secret_id: &str) -> String {
    serde_json::json!({
        "message": {
            "attributes": {
                "eventType": event_type,
                "dataFormat": "JSON_API_V1",
                "secretId": secret_id,
                "versionId": format!("{secret_id}/versions/2"),
                "timestamp": "2026-11-26T00:00:00.000000Z"
            },
            "data": "e30=",
            "messageId": "1234567890",
            "publishTime": "2026-11-26T00:00:00.000Z"
        },
        "subscription": "projects/acme/subscriptions/credproxy-secret-events"
    })
    .to_string()
}

fn push_token(keys: &Keys, email: &str) -> String {
    let mut claims = keys.claims(email);
    claims["aud"] = serde_json::json!(PUSH_AUDIENCE);
    keys.sign(&claims)
}

/// The outcomes credproxy logged for the version events it processed, in order.
fn event_outcomes(w: &SmWorld) -> Vec<String> {
    w.app
        .stderr
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "Secret Manager event")
        .map(|v| v["outcome"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until credproxy logged the outcomes of `n` version events; returns them.
async fn wait_event_outcomes(w: &SmWorld, n: usize) -> Vec<String> {
    w.app
        .stderr
        .wait_until(Duration::from_secs(5), |_| event_outcomes(w).len() >= n)
        .await;
    let outcomes = event_outcomes(w);
    assert_eq!(outcomes.len(), n, "{outcomes:?}");
    outcomes
}

/// A barrier after events that must not have re-read the secret: a valid version event from
/// the push account is then the first within the rate-limit interval (logged as
/// `Refreshing`, where any earlier wake-up would make it `RateLimited`) and causes exactly
/// one store read, which this waits for.
async fn nothing_was_re_read(w: &SmWorld, calls_before: usize, events_before: usize) {
    let secret_id = format!("projects/{PROJECT_NUMBER}/secrets/{SM_SECRET}");
    let token = push_token(&w.keys, PUSHER);
    let r = push(w, Some(&token), push_body("SECRET_VERSION_ADD", &secret_id)).await;
    assert_eq!(r.status(), 204);
    let outcomes = wait_event_outcomes(w, events_before + 1).await;
    assert!(
        outcomes[events_before].starts_with("Refreshing"),
        "an earlier event woke the refresher: {outcomes:?}"
    );
    w.sm.wait_calls(SM_SECRET, calls_before + 1, Duration::from_secs(5))
        .await;
    assert_eq!(
        w.sm.calls(SM_SECRET),
        calls_before + 1,
        "only the barrier event re-read the secret"
    );
}

async fn push(w: &SmWorld, token: Option<&str>, body: String) -> reqwest::Response {
    let mut request = w
        .app
        .client
        .post(w.app.url("/_credproxy/events/secret-manager"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("push")
}

#[tokio::test]
async fn a_version_event_from_the_push_account_refreshes_at_once() {
    let w = SmWorld::start("  cache_ttl_seconds: 3600\n", &events_block(), true).await;
    assert_eq!(w.auth_seen().await, V1);
    w.sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    // Events name the project by number, the config by id.
    let secret_id = format!("projects/{PROJECT_NUMBER}/secrets/{SM_SECRET}");
    let token = push_token(&w.keys, PUSHER);
    let r = push(
        &w,
        Some(&token),
        push_body("SECRET_VERSION_ADD", &secret_id),
    )
    .await;
    assert_eq!(r.status(), 204);
    let id = request_id(&r);
    w.wait_for_auth(V2, Duration::from_secs(3)).await;
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["caller"], PUSHER);
    assert_eq!(e["decision"], "allow");
}

#[tokio::test]
async fn events_from_others_are_refused_and_change_nothing() {
    let w = SmWorld::start("  cache_ttl_seconds: 3600\n", &events_block(), true).await;
    w.sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    let calls = w.sm.calls(SM_SECRET);
    let secret_id = format!("projects/{PROJECT_NUMBER}/secrets/{SM_SECRET}");
    let body = push_body("SECRET_VERSION_ADD", &secret_id);
    // No token, a caller token (wrong audience), an unlisted pusher.
    assert_eq!(push(&w, None, body.clone()).await.status(), 401);
    let caller_token = w.keys.token(READER);
    assert_eq!(
        push(&w, Some(&caller_token), body.clone()).await.status(),
        401
    );
    let stranger = push_token(&w.keys, "evil@other.iam.gserviceaccount.com");
    assert_eq!(push(&w, Some(&stranger), body.clone()).await.status(), 403);
    // A signature-removed token is refused unless Cloud Run's invoker check is on.
    let good = push_token(&w.keys, PUSHER);
    let (head, _) = good.rsplit_once('.').expect("jwt");
    let stripped = format!("{head}.SIGNATURE_REMOVED_BY_GOOGLE");
    assert_eq!(push(&w, Some(&stripped), body).await.status(), 401);
    assert_eq!(w.sm.calls(SM_SECRET), calls, "no re-read");
    assert_eq!(w.auth_seen().await, V1);
    nothing_was_re_read(&w, calls, 0).await;
}

#[tokio::test]
async fn behind_cloud_run_a_signature_removed_push_token_is_accepted_for_events_only() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let sm = FakeSecretManager::start().await;
    sm.add_version(SM_SECRET, "v1-SECRET-value-aaaa");
    let config = crate::secrets::sm_config(
        &jwks,
        &upstream,
        &sm,
        "  cache_ttl_seconds: 3600\n",
        &events_block(),
    )
    .replace(
        "identity:\n",
        "identity:\n  cloud_run_invoker_check: true\n",
    );
    let mut app = TestApp::spawn(&config, &keys).await;
    app.forbidden
        .extend(["v1-SECRET-value-aaaa", "v2-SECRET-value-bbbb"].map(String::from));
    sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    let mut claims = keys.claims(PUSHER);
    claims["aud"] = serde_json::json!(PUSH_AUDIENCE);
    let token = keys.sign(&claims);
    let (head, _) = token.rsplit_once('.').expect("jwt");
    let stripped = format!("{head}.SIGNATURE_REMOVED_BY_GOOGLE");
    let secret_id = format!("projects/{PROJECT_NUMBER}/secrets/{SM_SECRET}");
    let r = app
        .client
        .post(app.url("/_credproxy/events/secret-manager"))
        .bearer_auth(&stripped)
        .body(push_body("SECRET_VERSION_ADD", &secret_id))
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), 204);
    // With X-Serverless-Authorization present, Cloud Run checked that header, not this
    // one: an unsigned Authorization token is then a forgery.
    let invoker = keys.token(READER);
    let r = app
        .client
        .post(app.url("/_credproxy/events/secret-manager"))
        .bearer_auth(&stripped)
        .header("X-Serverless-Authorization", format!("Bearer {invoker}"))
        .body(push_body("SECRET_VERSION_ADD", &secret_id))
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), 401);
    // The same kind of token is still refused on proxied routes.
    let caller = keys.token(READER);
    let (head, _) = caller.rsplit_once('.').expect("jwt");
    let r = app
        .client
        .get(app.url("/sm/v1/items"))
        .bearer_auth(format!("{head}.SIGNATURE_REMOVED_BY_GOOGLE"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    // An expired signature-removed push token is refused.
    let mut claims = keys.claims(PUSHER);
    claims["aud"] = serde_json::json!(PUSH_AUDIENCE);
    claims["exp"] = serde_json::json!(chrono::Utc::now().timestamp() - 600);
    let expired = keys.sign(&claims);
    let (head, _) = expired.rsplit_once('.').expect("jwt");
    let r = app
        .client
        .post(app.url("/_credproxy/events/secret-manager"))
        .bearer_auth(format!("{head}.SIGNATURE_REMOVED_BY_GOOGLE"))
        .body(push_body("SECRET_VERSION_ADD", &secret_id))
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn unknown_and_malformed_events() {
    let w = SmWorld::start("  cache_ttl_seconds: 3600\n", &events_block(), true).await;
    let token = push_token(&w.keys, PUSHER);
    let calls = w.sm.calls(SM_SECRET);
    let r = push(
        &w,
        Some(&token),
        push_body("SECRET_VERSION_ADD", "projects/999/secrets/other"),
    )
    .await;
    assert_eq!(r.status(), 204, "unknown secrets are acknowledged");
    let r = push(
        &w,
        Some(&token),
        r#"{"message":{"attributes":{"eventType":"TOPIC_CONFIGURED"}}}"#.to_string(),
    )
    .await;
    assert_eq!(r.status(), 204, "unknown types are acknowledged");
    let r = push(&w, Some(&token), "not json".to_string()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_body(r).await["error"], "bad_request");
    let secret_id = format!("projects/{PROJECT_NUMBER}/secrets/{SM_SECRET}");
    let r = push(&w, Some(&token), push_body("SECRET_ROTATE", &secret_id)).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        w.sm.calls(SM_SECRET),
        calls,
        "none of these re-read anything"
    );
    // The unknown secret's event is the one version event logged so far.
    assert_eq!(wait_event_outcomes(&w, 1).await, ["Ignored"]);
    nothing_was_re_read(&w, calls, 1).await;
    // Logged before the barrier's event, so there by now.
    let log = w.app.stderr.text();
    assert!(
        log.contains("rotation is due"),
        "a rotation reminder is logged"
    );
    assert!(log.contains("\"severity\":\"WARNING\""));
}

#[tokio::test]
async fn event_re_reads_are_rate_limited_per_secret() {
    let w = SmWorld::start("  cache_ttl_seconds: 3600\n", &events_block(), true).await;
    let token = push_token(&w.keys, PUSHER);
    let secret_id = format!("projects/{PROJECT_NUMBER}/secrets/{SM_SECRET}");
    let calls = w.sm.calls(SM_SECRET);
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        let r = push(
            &w,
            Some(&token),
            push_body("SECRET_VERSION_ADD", &secret_id),
        )
        .await;
        assert_eq!(r.status(), 204);
    }
    let took = started.elapsed();
    // Each event that was not rate limited woke the refresher once; the interval itself is
    // pinned on the paused clock in src/secrets/tests.rs.
    let outcomes = wait_event_outcomes(&w, 20).await;
    let woke = outcomes
        .iter()
        .filter(|o| o.starts_with("Refreshing"))
        .count();
    assert!(
        (1..=2).contains(&woke),
        "{woke} of 20 events in {took:?} woke the refresher: {outcomes:?}"
    );
    w.sm.wait_calls(SM_SECRET, calls + 1, Duration::from_secs(5))
        .await;
    // Wake-ups are the only reads here (the TTL is an hour), at most one each.
    let reads = w.sm.calls(SM_SECRET) - calls;
    assert!(
        (1..=woke).contains(&reads),
        "{reads} re-reads for 20 events in well under 2 s"
    );
}

#[tokio::test]
async fn events_are_404_when_not_configured() {
    let w = SmWorld::start("", "", true).await;
    let token = push_token(&w.keys, PUSHER);
    let r = push(
        &w,
        Some(&token),
        push_body("SECRET_VERSION_ADD", "projects/1/secrets/x"),
    )
    .await;
    assert_eq!(r.status(), 404);
}

/// Continuous traffic while v2 is added (the upstream accepts both keys during the overlap),
/// picked up by event, then v1 disabled and revoked: not one non-2xx.
#[tokio::test]
async fn rotation_drill_with_continuous_traffic_has_zero_errors() {
    let w = Arc::new(SmWorld::start("  cache_ttl_seconds: 2\n", &events_block(), true).await);
    w.upstream.accept_only(Some(&[V1]));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (w, stop, failures, total) = (w.clone(), stop.clone(), failures.clone(), total.clone());
        workers.push(tokio::spawn(async move {
            let token = w.keys.token(READER);
            while !stop.load(Ordering::SeqCst) {
                let r = w
                    .app
                    .client
                    .get(w.app.url("/sm/v1/items"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                total.fetch_add(1, Ordering::SeqCst);
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // Each phase lasts until the upstream has seen this many more requests.
    const PHASE: usize = 20;
    let seen = |w: &SmWorld| w.upstream.requests().len();
    let more = |n: usize| move |r: &[Recorded]| r.len() >= n + PHASE;
    let with = |auth: &'static str| {
        move |r: &[Recorded]| r.iter().any(|r| r.headers["authorization"] == auth)
    };
    w.upstream.wait_until("traffic flows", more(0)).await;
    // 1. Add v2; the upstream accepts both during the overlap.
    w.sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    w.upstream.accept_only(Some(&[V1, V2]));
    let token = push_token(&w.keys, PUSHER);
    let secret_id = format!("projects/{PROJECT_NUMBER}/secrets/{SM_SECRET}");
    assert_eq!(
        push(
            &w,
            Some(&token),
            push_body("SECRET_VERSION_ADD", &secret_id)
        )
        .await
        .status(),
        204
    );
    w.upstream.wait_until("v2 is in use", with(V2)).await;
    // 2. Disable v1 in the store and revoke it upstream.
    w.sm.set_enabled(SM_SECRET, 1, false);
    w.upstream.accept_only(Some(&[V2]));
    let n = seen(&w);
    w.upstream
        .wait_until("traffic after revoking v1", more(n))
        .await;
    // 3. Revoke without overlap: v3 replaces v2 at once; the 401 retry bridges the gap.
    w.sm.add_version(SM_SECRET, "v3-SECRET-value-cccc");
    w.upstream
        .accept_only(Some(&["Bearer v3-SECRET-value-cccc"]));
    w.upstream
        .wait_until("v3 is in use", with("Bearer v3-SECRET-value-cccc"))
        .await;
    let n = seen(&w);
    w.upstream
        .wait_until("traffic after revoking v2", more(n))
        .await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("worker");
    }
    let total = total.load(Ordering::SeqCst);
    assert!(total > 50, "{total} requests during the drill");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "non-2xx responses during rotation"
    );
}
