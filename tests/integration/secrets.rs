//! Secret Manager credentials through the real client against the wire-level fake: caching,
//! single flight, refresh ahead, stale serving, checksums, permission problems, readiness.
//!
//! The timing itself (refresh at 9/10 of the TTL, the stale window, backoff, one store call
//! per refresh under load, requests never waiting for a slow store, a pinned version read
//! once, request wake-ups once per interval) is pinned in process on tokio's paused clock, in
//! src/secrets/tests.rs; these tests check what the binary does on either side of it, waiting
//! for conditions rather than for fixed times.

use std::time::Duration;

use crate::harness::*;

pub const SM_SECRET: &str = "stripe-key";

/// A server whose route `sm` injects `projects/acme/secrets/stripe-key/versions/latest`.
pub fn sm_config(
    jwks: &FakeJwks,
    upstream: &FakeUpstream,
    sm: &FakeSecretManager,
    secrets_block: &str,
    extra_top: &str,
) -> String {
    let route = format!(
        r#"  sm:
    upstream: "{{UPSTREAM}}"
    credential:
      secret: "projects/acme/secrets/{SM_SECRET}/versions/latest"
      inject:
        header: {{ name: "Authorization", format: "Bearer {{secret}}" }}
    max_body_bytes: 200000
    allow:
      - callers: ["{READER}", "{WRITER}"]
        methods: ["GET", "POST"]
        paths: ["/**"]
"#
    );
    let base = default_config(jwks, upstream, &route);
    format!(
        "{extra_top}secrets:\n  secret_manager: {{ endpoint: \"{}\", credentials: anonymous }}\n{secrets_block}{base}",
        sm.url()
    )
}

pub struct SmWorld {
    pub keys: Keys,
    /// Kept alive: the server refreshes its keys from it.
    #[allow(dead_code)]
    pub jwks: FakeJwks,
    pub upstream: FakeUpstream,
    pub sm: FakeSecretManager,
    pub app: TestApp,
}

impl SmWorld {
    /// Starts with version 1 = `v1-SECRET-value-aaaa` and waits until ready (when `wait`).
    pub async fn start(secrets_block: &str, extra_top: &str, wait: bool) -> SmWorld {
        let keys = Keys::new();
        let jwks = FakeJwks::start(keys.signer.jwks()).await;
        let upstream = FakeUpstream::start().await;
        let sm = FakeSecretManager::start().await;
        sm.add_version(SM_SECRET, "v1-SECRET-value-aaaa");
        let config = sm_config(&jwks, &upstream, &sm, secrets_block, extra_top);
        let mut app = TestApp::spawn_with(&config, &keys, &default_env(), &[]).await;
        app.forbidden.extend(
            [
                "v1-SECRET-value-aaaa",
                "v2-SECRET-value-bbbb",
                "v3-SECRET-value-cccc",
            ]
            .map(String::from),
        );
        if wait {
            app.wait_ready().await;
        }
        SmWorld {
            keys,
            jwks,
            upstream,
            sm,
            app,
        }
    }

    pub async fn auth_seen(&self) -> String {
        let r = self.app.get_as(READER, "/sm/v1/items").await;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{body}");
        self.upstream.last().headers["authorization"]
            .to_str()
            .expect("ascii")
            .to_string()
    }

    /// Polls until the upstream sees `want` (or panics after `within`).
    pub async fn wait_for_auth(&self, want: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = self.app.get_as(READER, "/sm/v1/items").await;
            let ok = r.status() == 200;
            let _ = r.bytes().await;
            if ok && self.upstream.last().headers["authorization"] == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never saw {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string()
}

#[tokio::test]
async fn injects_a_secret_manager_secret_and_audits_its_version() {
    let w = SmWorld::start("", "", true).await;
    let r = w.app.get_as(READER, "/sm/v1/items").await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    assert_eq!(
        w.upstream.last().headers["authorization"],
        "Bearer v1-SECRET-value-aaaa"
    );
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["secret"], "projects/acme/secrets/stripe-key");
    assert_eq!(e["secret_version"], "1");
    assert!(w.sm.bad_requests().is_empty(), "{:?}", w.sm.bad_requests());
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_fetch() {
    let w = SmWorld::start("  warm_on_start: false\n", "", false).await;
    w.app.wait_ready().await;
    assert_eq!(
        w.sm.calls(SM_SECRET),
        0,
        "nothing read before the first request"
    );
    w.sm.set_delay(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = w.app.client.clone();
        let url = w.app.url("/sm/v1/items");
        let token = w.keys.token(READER);
        tasks.push(tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("request"), 200);
    }
    assert_eq!(
        w.sm.calls(SM_SECRET),
        1,
        "50 concurrent cold requests, one store call"
    );
}

#[tokio::test]
async fn a_new_version_is_picked_up_within_the_ttl() {
    let w = SmWorld::start("  cache_ttl_seconds: 1\n", "", true).await;
    assert_eq!(w.auth_seen().await, "Bearer v1-SECRET-value-aaaa");
    w.sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    w.wait_for_auth("Bearer v2-SECRET-value-bbbb", Duration::from_secs(4))
        .await;
}

#[tokio::test]
async fn serves_the_last_good_value_during_an_outage_then_503() {
    // How long the last good value is served is pinned on the paused clock, by
    // a_failing_refresh_serves_the_last_good_value_until_ttl_plus_max_stale_then_refuses_it.
    let w = SmWorld::start("  cache_ttl_seconds: 1\n  max_stale_seconds: 1\n", "", true).await;
    w.sm.set_mode(Mode::Unavailable);
    // The last good value keeps working.
    assert_eq!(w.auth_seen().await, "Bearer v1-SECRET-value-aaaa");
    // Past TTL + max_stale: 503 naming the secret, never the value.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let r = w.app.get_as(READER, "/sm/v1/items").await;
        if r.status() == 503 {
            let body = error_body(r).await;
            assert_eq!(body["error"], "credential_unavailable");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("projects/acme/secrets/stripe-key"),
                "{message}"
            );
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(tokio::time::Instant::now() < deadline, "never went 503");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The store comes back: so does the route.
    w.sm.set_mode(Mode::Ok);
    w.wait_for_auth("Bearer v1-SECRET-value-aaaa", Duration::from_secs(12))
        .await;
}

#[tokio::test]
async fn a_checksum_mismatch_is_never_injected() {
    let w = SmWorld::start("  warm_on_start: false\n", "", false).await;
    w.app.wait_ready().await;
    w.sm.set_mode(Mode::BadChecksum);
    let r = w.app.get_as(READER, "/sm/v1/items").await;
    assert_eq!(r.status(), 503);
    let body = error_body(r).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dataCrc32c"),
        "{body}"
    );
    assert_eq!(w.upstream.started(), 0);
}

#[tokio::test]
async fn permission_denied_keeps_ready_503_and_names_the_role_once() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let sm = FakeSecretManager::start().await;
    sm.add_version(SM_SECRET, "v1-SECRET-value-aaaa");
    sm.set_mode(Mode::PermissionDenied);
    let config = sm_config(&jwks, &upstream, &sm, "", "");
    let app = TestApp::spawn_with(&config, &keys, &default_env(), &[]).await;
    // The warm-up read was refused (and logged).
    app.wait_log("roles/secretmanager.secretAccessor", Duration::from_secs(5))
        .await;
    let ready = app.get("/_credproxy/ready").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("body");
    // Counts only: the names are for the logs, not for whoever calls /ready.
    assert_eq!(body["waiting_for"]["secrets"], 1, "{body}");
    assert!(!body.to_string().contains("stripe-key"), "{body}");
    for _ in 0..10 {
        let r = app.get_as(READER, "/sm/v1/items").await;
        assert_eq!(r.status(), 503);
        let body = error_body(r).await;
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("roles/secretmanager.secretAccessor")
        );
    }
    let log = app.stderr.text();
    let mentions = log.matches("roles/secretmanager.secretAccessor").count();
    assert!(mentions >= 1, "the log names the role:\n{log}");
    assert!(
        mentions <= 2,
        "logged once per interval, not per request ({mentions} times)"
    );
    assert!(log.contains("projects/acme/secrets/stripe-key"));
    // Fixing IAM makes it ready without a restart.
    sm.set_mode(Mode::Ok);
    app.wait_ready().await;
}

#[tokio::test]
async fn a_disabled_newest_version_keeps_the_last_good_value_and_logs_an_error() {
    let w = SmWorld::start("  cache_ttl_seconds: 1\n", "", true).await;
    let v2 = w.sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    w.wait_for_auth("Bearer v2-SECRET-value-bbbb", Duration::from_secs(4))
        .await;
    let v3 = w.sm.add_version(SM_SECRET, "v3-SECRET-value-cccc");
    w.sm.set_enabled(SM_SECRET, v3, false);
    // latest now names the disabled v3: FAILED_PRECONDITION at the next refresh; v2 keeps
    // being served.
    w.app
        .wait_log(
            "the newest secret version is disabled",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(w.auth_seen().await, "Bearer v2-SECRET-value-bbbb");
    let log = w.app.stderr.text();
    assert!(log.contains("disabled"), "{log}");
    assert!(log.contains("\"severity\":\"ERROR\""), "{log}");
    assert!(log.contains("projects/acme/secrets/stripe-key"));
    let _ = v2;
}

/// Across many TTLs on the paused clock: a_pinned_version_is_read_once_and_never_goes_stale.
#[tokio::test]
async fn a_pinned_version_is_read_once() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let sm = FakeSecretManager::start().await;
    sm.add_version(SM_SECRET, "v1-SECRET-value-aaaa");
    sm.add_version(SM_SECRET, "v2-SECRET-value-bbbb");
    let config = sm_config(&jwks, &upstream, &sm, "  cache_ttl_seconds: 1\n", "")
        .replace("versions/latest", "versions/1");
    let mut app = TestApp::spawn(&config, &keys).await;
    app.forbidden.push("v1-SECRET-value-aaaa".to_string());
    for _ in 0..3 {
        assert_eq!(app.get_as(READER, "/sm/v1/items").await.status(), 200);
    }
    assert_eq!(
        upstream.last().headers["authorization"],
        "Bearer v1-SECRET-value-aaaa"
    );
    assert_eq!(sm.calls(SM_SECRET), 1);
}

#[tokio::test]
async fn a_failing_store_is_not_read_at_request_rate() {
    // Never resolved (cold reads fail): failures are held, not retried per request.
    let w = SmWorld::start("  warm_on_start: false\n", "", false).await;
    w.app.wait_ready().await;
    w.sm.set_mode(Mode::PermissionDenied);
    for _ in 0..50 {
        assert_eq!(w.app.get_as(READER, "/sm/v1/items").await.status(), 503);
    }
    let cold = w.sm.calls(SM_SECRET);
    assert!(cold <= 3, "{cold} store reads for 50 requests");
    // Once stale (refreshes failing past TTL + max_stale), requests wake the refresher at most
    // once per interval: stale_requests_wake_the_refresher_at_most_once_per_interval.
}
