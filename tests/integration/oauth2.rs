//! OAuth2 client-credentials routes against a fake token endpoint.
//!
//! When tokens are minted again (refresh ahead at 4/5 of the lifetime, at expiry, after the
//! client secret rotated, with no request waiting) is pinned in process on tokio's paused
//! clock, in src/credential/tests.rs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use base64::Engine as _;

use crate::harness::*;

const CLIENT_SECRET_1: &str = "cs_SECRET_first_0001";
const CLIENT_SECRET_2: &str = "cs_SECRET_second_0002";

#[derive(Clone)]
struct TokenState {
    mints: Arc<AtomicUsize>,
    expected_secret: Arc<Mutex<String>>,
    expires_in: Arc<Mutex<u64>>,
    fail: Arc<Mutex<Option<&'static str>>>,
}

struct FakeTokenEndpoint {
    url: String,
    state: TokenState,
}

impl FakeTokenEndpoint {
    async fn start() -> Self {
        let state = TokenState {
            mints: Arc::default(),
            expected_secret: Arc::new(Mutex::new(CLIENT_SECRET_1.to_string())),
            expires_in: Arc::new(Mutex::new(3600)),
            fail: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/token", axum::routing::post(mint))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTokenEndpoint {
            url: format!("http://{addr}/token"),
            state,
        }
    }

    fn mints(&self) -> usize {
        self.state.mints.load(Ordering::SeqCst)
    }
}

async fn mint(
    State(s): State<TokenState>,
    headers: http::HeaderMap,
    body: String,
) -> axum::response::Response {
    if let Some(error) = *s.fail.lock().expect("lock") {
        return (
            http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": error, "error_description": "client authentication failed"})),
        )
            .into_response();
    }
    let expected = s.expected_secret.lock().expect("lock").clone();
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("etl-client:{expected}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str())
        || !body.contains("grant_type=client_credentials")
    {
        return (
            http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let n = s.mints.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = *s.expires_in.lock().expect("lock");
    axum::Json(serde_json::json!({
        "access_token": format!("at-{n}-SECRET-token"),
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
    .into_response()
}

struct OAuthWorld {
    w: World,
    tokens: FakeTokenEndpoint,
    secret_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn payload(secret: &str) -> String {
    format!(r#"{{"client_id":"etl-client","client_secret":"{secret}"}}"#)
}

async fn oauth_world(
    secrets_block: &str,
    before_start: impl FnOnce(&FakeTokenEndpoint),
) -> OAuthWorld {
    let tokens = FakeTokenEndpoint::start().await;
    before_start(&tokens);
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("client.json");
    std::fs::write(&secret_file, payload(CLIENT_SECRET_1)).expect("write");
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let route = format!(
        r#"  crm:
    upstream: "{{UPSTREAM}}"
    credential:
      secret: "file:{}"
      inject:
        oauth2_client_credentials: {{ token_url: "{}", scopes: ["crm.read", "crm.write"] }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET", "POST"]
        paths: ["/**"]
"#,
        secret_file.display(),
        tokens.url
    );
    let config = format!(
        "secrets:\n{secrets_block}{}",
        default_config(&jwks, &upstream, &route)
    );
    let mut app = TestApp::spawn_with(&config, &keys, &default_env(), &[]).await;
    app.forbidden
        .extend([CLIENT_SECRET_1, CLIENT_SECRET_2].map(String::from));
    app.forbidden
        .extend((1..=5).map(|n| format!("at-{n}-SECRET-token")));
    OAuthWorld {
        w: World {
            keys,
            jwks,
            upstream,
            app,
        },
        tokens,
        secret_file,
        _dir: dir,
    }
}

#[tokio::test]
async fn injects_a_minted_token_and_mints_once_for_many_requests() {
    let o = oauth_world("  warm_on_start: true\n", |_| {}).await;
    o.w.app.wait_ready().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = o.w.app.client.clone();
        let url = o.w.app.url("/crm/v1/contacts");
        let token = o.w.keys.token(READER);
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
    assert_eq!(o.tokens.mints(), 1);
    assert_eq!(
        o.w.upstream.last().headers["authorization"],
        "Bearer at-1-SECRET-token"
    );
    // An upstream echoing the request hands back no token.
    let body =
        o.w.app
            .get_as(READER, "/crm/v1/echo")
            .await
            .text()
            .await
            .expect("body");
    assert!(
        !body.contains("at-1-SECRET-token") && body.contains("[redacted]"),
        "{body}"
    );
}

#[tokio::test]
async fn an_upstream_401_re_mints_once_and_replays() {
    let o = oauth_world("", |_| {}).await;
    o.w.app.wait_ready().await;
    assert_eq!(
        o.w.app.get_as(READER, "/crm/v1/contacts").await.status(),
        200
    );
    // The upstream revokes the token early.
    o.w.upstream
        .accept_only(Some(&["Bearer at-2-SECRET-token"]));
    let r = o.w.app.get_as(READER, "/crm/v1/contacts").await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(o.tokens.mints(), 2);
    assert_eq!(o.w.app.audit_for(&id).await["retried"], true);
}

#[tokio::test]
async fn a_rotated_client_secret_re_mints() {
    let o = oauth_world("  cache_ttl_seconds: 1\n", |_| {}).await;
    o.w.app.wait_ready().await;
    assert_eq!(
        o.w.app.get_as(READER, "/crm/v1/contacts").await.status(),
        200
    );
    assert_eq!(o.tokens.mints(), 1);
    // Rotate: the provider now only accepts the new secret; the file changes. Requests keep
    // coming, and the first one after the file is read again (within the 1 s TTL) mints with
    // the new secret. (The refresher doing it with no request at all is
    // credential::tests::a_rotated_client_secret_is_minted_with_within_five_seconds_of_its_refresh.)
    *o.tokens.state.expected_secret.lock().expect("lock") = CLIENT_SECRET_2.to_string();
    std::fs::write(&o.secret_file, payload(CLIENT_SECRET_2)).expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while o.tokens.mints() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new client secret was never used"
        );
        let r = o.w.app.get_as(READER, "/crm/v1/contacts").await;
        let _ = r.bytes().await;
    }
    o.w.upstream
        .accept_only(Some(&["Bearer at-2-SECRET-token"]));
    assert_eq!(
        o.w.app.get_as(READER, "/crm/v1/contacts").await.status(),
        200
    );
}

#[tokio::test]
async fn token_endpoint_errors_are_503_with_the_oauth_code_and_no_secret() {
    let o = oauth_world("  warm_on_start: false\n", |t| {
        *t.state.fail.lock().expect("lock") = Some("invalid_client")
    })
    .await;
    o.w.app.wait_ready().await;
    let r = o.w.app.get_as(READER, "/crm/v1/contacts").await;
    assert_eq!(r.status(), 503);
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let body = error_body(r).await;
    assert_eq!(body["error"], "credential_unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid_client"),
        "{body}"
    );
    assert!(!body.to_string().contains(CLIENT_SECRET_1));
    assert_eq!(
        o.w.app.audit_for(&id).await["reason"],
        "oauth2_invalid_client"
    );
    assert_eq!(o.w.upstream.started(), 0);
}
