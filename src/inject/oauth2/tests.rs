//! OAuth2 spec parsing, token minting against a fake token endpoint, caching and expiry.

use super::source::*;
use super::token::*;
use super::*;
use http::HeaderValue;
use http::header::{ACCEPT, CONTENT_TYPE};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;

use axum::response::IntoResponse as _;
use http::header::AUTHORIZATION;
use serde_json::json;
use tokio::task::JoinSet;

/// Needs form encoding in Basic (`:` and space), so a naive split at the fake would fail.
const ID: &str = "svc id:1";
const SECRET: &str = "s3cr3t/+:%é-XYZZY";
const ROTATED: &str = "rotated-secret-PLUGH";

#[derive(Clone)]
struct FakeConfig {
    style: AuthStyle,
    client_id: String,
    secrets: Vec<String>,
    expires_in: Value,
    token_type: Value,
    content_type: &'static str,
    delay: Duration,
    /// Answer with this status and raw body once the client authenticated.
    fail: Option<(u16, String)>,
    /// Answer 200 with this raw body once the client authenticated.
    body: Option<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            style: AuthStyle::Basic,
            client_id: ID.to_string(),
            secrets: vec![SECRET.to_string(), ROTATED.to_string()],
            expires_in: json!(3600),
            token_type: json!("Bearer"),
            content_type: "application/json",
            delay: Duration::ZERO,
            fail: None,
            body: None,
        }
    }
}

/// A token endpoint that counts requests, checks grant_type and client authentication, and
/// issues `tok-N` for the N-th request.
struct Fake {
    config: std::sync::Mutex<FakeConfig>,
    requests: AtomicUsize,
    last_form: std::sync::Mutex<Vec<(String, String)>>,
}

impl Fake {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn set(&self, change: impl FnOnce(&mut FakeConfig)) {
        change(&mut self.config.lock().expect("lock"));
    }

    fn form(&self, name: &str) -> Option<String> {
        self.last_form
            .lock()
            .expect("lock")
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn reply(status: u16, content_type: &str, body: String) -> axum::response::Response {
    let mut response = (http::StatusCode::from_u16(status).expect("status"), body).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("content type"),
    );
    response
}

fn oauth(status: u16, error: &str, description: &str) -> axum::response::Response {
    reply(
        status,
        "application/json",
        json!({"error": error, "error_description": description}).to_string(),
    )
}

fn form_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn basic_credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.strip_prefix("Basic ")?)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

async fn token_endpoint(
    axum::extract::State(fake): axum::extract::State<Arc<Fake>>,
    headers: http::HeaderMap,
    body: String,
) -> axum::response::Response {
    let n = fake.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let config = fake.config.lock().expect("lock").clone();
    tokio::time::sleep(config.delay).await;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    *fake.last_form.lock().expect("lock") = form.clone();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if header(ACCEPT) != Some("application/json") {
        return oauth(400, "invalid_request", "Accept: application/json expected");
    }
    if header(CONTENT_TYPE) != Some("application/x-www-form-urlencoded") {
        return oauth(400, "invalid_request", "a form body expected");
    }
    if field("grant_type").as_deref() != Some("client_credentials") {
        return oauth(400, "unsupported_grant_type", "client_credentials expected");
    }
    let presented = match config.style {
        AuthStyle::Basic => {
            if field("client_id").is_some() || field("client_secret").is_some() {
                return oauth(400, "invalid_request", "credentials in the body");
            }
            basic_credentials(&headers)
        }
        AuthStyle::Body => {
            if headers.contains_key(AUTHORIZATION) {
                return oauth(400, "invalid_request", "an Authorization header");
            }
            field("client_id").zip(field("client_secret"))
        }
    };
    match presented {
        Some((id, secret)) if id == config.client_id && config.secrets.contains(&secret) => {}
        _ => return oauth(401, "invalid_client", "Client authentication failed"),
    }
    if let Some((status, body)) = config.fail {
        return reply(status, "application/json", body);
    }
    if let Some(body) = config.body {
        return reply(200, config.content_type, body);
    }
    let mut token = serde_json::Map::new();
    token.insert("access_token".into(), json!(format!("tok-{n}")));
    if !config.token_type.is_null() {
        token.insert("token_type".into(), config.token_type);
    }
    if !config.expires_in.is_null() {
        token.insert("expires_in".into(), config.expires_in);
    }
    reply(200, config.content_type, Value::Object(token).to_string())
}

/// Serves the fake on 127.0.0.1:0; returns it and its token URL.
async fn serve_fake(config: FakeConfig) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        config: std::sync::Mutex::new(config),
        requests: AtomicUsize::new(0),
        last_form: std::sync::Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/oauth/token", axum::routing::post(token_endpoint))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, format!("http://{addr}/oauth/token"))
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn spec(url: &str, style: &str) -> OAuth2Spec {
    OAuth2Spec::from_raw(
        &json!({"token_url": url, "scopes": ["read", "write"], "auth_style": style}),
        true,
    )
    .expect("spec")
}

fn creds(secret: &str) -> Arc<ClientCredentials> {
    let payload = json!({"client_id": ID, "client_secret": secret}).to_string();
    Arc::new(ClientCredentials::from_json(payload.as_bytes()).expect("creds"))
}

async fn source(config: FakeConfig) -> (Arc<Fake>, Arc<TokenSource>) {
    let style = match config.style {
        AuthStyle::Basic => "basic",
        AuthStyle::Body => "body",
    };
    let (fake, url) = serve_fake(config).await;
    let source = TokenSource::new(spec(&url, style), http_client());
    (fake, Arc::new(source))
}

fn value(token: &AccessToken) -> &str {
    token.value().expose_secret()
}

/// Display and Debug of `err` must not contain the client secret in any form.
fn assert_no_secret(err: &TokenError, secret: &str) {
    for text in [err.to_string(), format!("{err:?}")] {
        for needle in creds(secret).needles() {
            assert!(!text.contains(&needle), "secret in `{text}`");
        }
        assert!(!text.contains("XYZZY"), "secret in `{text}`");
    }
}

// --- config ---------------------------------------------------------------------------

#[test]
fn spec_parses_with_defaults() {
    let s = OAuth2Spec::from_raw(
        &json!({"token_url": "https://auth.example.com/token"}),
        false,
    )
    .expect("minimal");
    assert_eq!(s.token_url().as_str(), "https://auth.example.com/token");
    assert!(s.scopes().is_empty());
    assert_eq!(s.audience(), None);
    assert_eq!(s.auth_style(), AuthStyle::Basic);

    let s = OAuth2Spec::from_raw(
        &json!({"token_url": "https://auth.example.com/token?tenant=1", "scopes": ["a:read", "b"],
                "audience": "https://api.example.com", "auth_style": "body"}),
        false,
    )
    .expect("full");
    assert_eq!(s.scopes(), ["a:read", "b"]);
    assert_eq!(s.audience(), Some("https://api.example.com"));
    assert_eq!(s.auth_style(), AuthStyle::Body);
    assert_eq!(s.endpoint(), "https://auth.example.com/token");

    let s = OAuth2Spec::from_raw(
        &json!({"token_url": "https://a.example/t", "scopes": null, "audience": null, "auth_style": null}),
        false,
    )
    .expect("nulls");
    assert_eq!(s.auth_style(), AuthStyle::Basic);
}

#[test]
fn spec_problems_name_their_key() {
    let url = "https://auth.example.com/token";
    for (raw, key) in [
        (json!({"token_url": url, "scope": ["a"]}), "scope:"),
        (json!({}), "token_url:"),
        (json!({"token_url": 5}), "token_url:"),
        (json!({"token_url": "not a url"}), "token_url:"),
        (
            json!({"token_url": "ftp://auth.example.com/t"}),
            "token_url:",
        ),
        (
            json!({"token_url": "https://u:p@auth.example.com/t"}),
            "token_url:",
        ),
        (
            json!({"token_url": "https://auth.example.com/t#x"}),
            "token_url:",
        ),
        (json!({"token_url": url, "scopes": "a b"}), "scopes:"),
        (
            json!({"token_url": url, "scopes": ["a", "b c"]}),
            "scopes[1]:",
        ),
        (json!({"token_url": url, "scopes": ["a", 3]}), "scopes[1]:"),
        (json!({"token_url": url, "audience": ""}), "audience:"),
        (
            json!({"token_url": url, "auth_style": "Basic"}),
            "auth_style:",
        ),
        (
            json!({"token_url": url, "auth_style": "post"}),
            "auth_style:",
        ),
    ] {
        let err = OAuth2Spec::from_raw(&raw, true).expect_err(&raw.to_string());
        assert!(err.starts_with(key), "{raw}: {err}");
    }
    let err = OAuth2Spec::from_raw(&json!({"token_url": "https://u:hunter2@a.example/t"}), true)
        .expect_err("userinfo");
    assert!(!err.contains("hunter2"), "{err}");
    // Every problem at once.
    let problems = OAuth2Spec::parse(
        &json!({"extra": 1, "scopes": [""], "auth_style": "x"}),
        true,
    )
    .expect_err("many");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["extra", "token_url", "scopes[0]", "auth_style"]);
    assert!(OAuth2Spec::from_raw(&json!("https://a.example/t"), true).is_err());
}

#[test]
fn plain_http_only_to_loopback_and_only_when_allowed() {
    let http = |url: &str, allow| OAuth2Spec::from_raw(&json!({"token_url": url}), allow);
    let err = http("http://auth.example.com/token", true).expect_err("non-loopback");
    assert!(
        err.starts_with("token_url:") && err.contains("use https"),
        "{err}"
    );
    assert!(http("http://10.0.0.1/token", true).is_err());
    for loopback in [
        "http://127.0.0.1:9000/token",
        "http://localhost/token",
        "http://[::1]:8080/token",
    ] {
        assert!(http(loopback, true).is_ok(), "{loopback}");
        let err = http(loopback, false).expect_err(loopback);
        assert!(err.starts_with("token_url:"), "{err}");
    }
    assert!(http("https://127.0.0.1/token", false).is_ok());
}

#[test]
fn client_credentials_errors_name_the_field_never_the_value() {
    let c =
        ClientCredentials::from_json(br#"{"client_id": "me", "client_secret": "XYZZY", "x": 1}"#)
            .expect("ok");
    assert_eq!(c.client_id(), "me");
    let debug = format!("{c:?}");
    assert!(
        debug.contains("me") && debug.contains("[redacted]"),
        "{debug}"
    );
    assert!(!debug.contains("XYZZY"), "{debug}");

    for (payload, needle) in [
        (&br#"{"client_id": "me"}"#[..], "`client_secret`"),
        (br#"{"client_secret": "XYZZY"}"#, "`client_id`"),
        (
            br#"{"client_id": "me", "client_secret": ""}"#,
            "`client_secret`",
        ),
        (
            br#"{"client_id": "me", "client_secret": 7}"#,
            "`client_secret`",
        ),
        (br#"["XYZZY"]"#, "not a JSON object"),
        (b"XYZZY", "not JSON"),
        (
            br#"{"client_id": "me", "client_secret": "XYZZY""#,
            "not JSON",
        ),
    ] {
        let err = ClientCredentials::from_json(payload).expect_err("bad");
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains("XYZZY"), "{err}");
    }
}

#[test]
fn refresh_margin_is_min_60s_or_10_percent_and_refresh_ahead_at_80_percent() {
    let s = Duration::from_secs;
    assert_eq!(offsets(Some(s(3600))), (s(3600), s(3540), s(2880)));
    assert_eq!(offsets(Some(s(300))), (s(300), s(270), s(240)));
    assert_eq!(offsets(Some(s(10))), (s(10), s(9), s(8)));
    assert_eq!(offsets(Some(s(0))), (s(0), s(0), s(0)));
    // No expires_in: 5 minutes.
    assert_eq!(offsets(None), offsets(Some(s(300))));
    // Capped at a day.
    assert_eq!(offsets(Some(s(u64::MAX))).0, MAX_LIFETIME);
    assert_eq!(
        offsets(Some(s(u64::MAX))).1,
        MAX_LIFETIME - MAX_REFRESH_MARGIN
    );
    for (raw, want) in [
        (json!(60), Some(Some(s(60)))),
        (json!("60"), Some(Some(s(60)))),
        (json!(1.5), Some(Some(Duration::from_millis(1500)))),
        (Value::Null, Some(None)),
        (json!(-1), None),
        (json!("soon"), None),
        (json!([1]), None),
    ] {
        assert_eq!(parse_expires_in(Some(&raw)), want, "{raw}");
    }
    assert_eq!(parse_expires_in(None), Some(None));
}

// --- minting and caching ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_cold_calls_mint_once() {
    let (fake, source) = source(FakeConfig {
        delay: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .await;
    let c = creds(SECRET);
    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let (source, c) = (source.clone(), c.clone());
        calls.spawn(async move { source.token(&c, 1).await });
    }
    let tokens: Vec<Arc<AccessToken>> = calls
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("token"))
        .collect();
    assert_eq!(fake.requests(), 1);
    assert_eq!(tokens.len(), 50);
    assert!(tokens.iter().all(|t| Arc::ptr_eq(t, &tokens[0])));
    assert_eq!(value(&tokens[0]), "tok-1");
    assert_eq!(tokens[0].authorization().as_bytes(), b"Bearer tok-1");
    assert!(tokens[0].authorization().is_sensitive());
    assert_eq!(tokens[0].token_type(), "Bearer");
    let debug = format!("{:?} {source:?}", tokens[0]);
    assert!(!debug.contains("tok-1"), "{debug}");
    // Warm: served from the cache.
    source.token(&c, 1).await.expect("warm");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn cached_until_shortly_before_expiry_then_reminted() {
    // Lifetime 2 s: served for 1.8 s (margin 10 %), due for refresh ahead at 1.6 s.
    let (fake, source) = source(FakeConfig {
        expires_in: json!(2),
        ..FakeConfig::default()
    })
    .await;
    let c = creds(SECRET);
    let first = source.token(&c, 1).await.expect("first");
    assert!(!source.needs_refresh());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = source.token(&c, 1).await.expect("cached");
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(fake.requests(), 1);
    tokio::time::sleep(Duration::from_millis(1400)).await;
    assert!(source.needs_refresh());
    assert!(!first.is_fresh());
    let second = source.token(&c, 1).await.expect("re-minted");
    assert_eq!(value(&second), "tok-2");
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn tokens_without_expires_in_are_cached_for_the_default_lifetime() {
    let (fake, source) = source(FakeConfig {
        expires_in: Value::Null,
        ..FakeConfig::default()
    })
    .await;
    let token = source.token(&creds(SECRET), 1).await.expect("token");
    let left = token.expires_at() - Instant::now();
    assert!(left > DEFAULT_LIFETIME - Duration::from_secs(5) && left <= DEFAULT_LIFETIME);
    source.token(&creds(SECRET), 1).await.expect("cached");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn a_new_generation_remints_and_older_ones_get_the_newer_token() {
    let (fake, source) = source(FakeConfig::default()).await;
    let old = source.token(&creds(SECRET), 1).await.expect("gen 1");
    let new = source.token(&creds(ROTATED), 2).await.expect("gen 2");
    assert_eq!(fake.requests(), 2);
    assert_eq!((value(&old), value(&new)), ("tok-1", "tok-2"));
    assert_eq!(new.generation(), 2);
    // A request still holding the old credentials is served the newer token.
    let late = source.token(&creds(SECRET), 1).await.expect("gen 1 again");
    assert!(Arc::ptr_eq(&late, &new));
    // A late mint with the old credentials does not replace the newer token.
    source
        .refresh(&creds(SECRET), 1)
        .await
        .expect("old refresh");
    assert_eq!(fake.requests(), 3);
    let current = source.token(&creds(ROTATED), 2).await.expect("gen 2 again");
    assert!(Arc::ptr_eq(&current, &new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_401s_invalidate_once_and_remint_once() {
    let (fake, source) = source(FakeConfig::default()).await;
    let c = creds(SECRET);
    let rejected = source.token(&c, 1).await.expect("first");
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut calls = JoinSet::new();
    for _ in 0..20 {
        let (source, c, rejected, barrier) =
            (source.clone(), c.clone(), rejected.clone(), barrier.clone());
        calls.spawn(async move {
            let dropped = source.invalidate(&rejected);
            barrier.wait().await;
            (dropped, source.token(&c, 1).await.expect("after 401"))
        });
    }
    let results = calls.join_all().await;
    assert_eq!(results.iter().filter(|(dropped, _)| *dropped).count(), 1);
    assert!(results.iter().all(|(_, t)| value(t) == "tok-2"));
    assert_eq!(fake.requests(), 2);
    // No longer the current token: nothing to drop.
    assert!(!source.invalidate(&rejected));
    // Another 401 within the interval keeps the new token (no mint per 401).
    let current = source.token(&c, 1).await.expect("current");
    assert!(!source.invalidate(&current));
    let still = source.token(&c, 1).await.expect("still");
    assert!(Arc::ptr_eq(&current, &still));
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn refresh_mints_while_the_cached_token_keeps_being_served() {
    let (fake, source) = source(FakeConfig::default()).await;
    let c = creds(SECRET);
    assert!(source.needs_refresh());
    assert_eq!(source.refresh_due_at(), None);
    let first = source.token(&c, 1).await.expect("first");
    assert!(!source.needs_refresh());
    let due = source.refresh_due_at().expect("due");
    assert!(due > Instant::now() + Duration::from_secs(2800));

    fake.set(|f| f.delay = Duration::from_millis(500));
    let background = {
        let (source, c) = (source.clone(), c.clone());
        tokio::spawn(async move { source.refresh(&c, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = tokio::time::timeout(Duration::from_millis(50), source.token(&c, 1))
        .await
        .expect("no wait while refreshing")
        .expect("token");
    assert!(Arc::ptr_eq(&during, &first));
    let refreshed = background.await.expect("join").expect("refresh");
    assert_eq!(value(&refreshed), "tok-2");
    let after = source.token(&c, 1).await.expect("after");
    assert!(Arc::ptr_eq(&after, &refreshed));
    assert_eq!(fake.requests(), 2);

    // A short-lived token becomes due at 80 % of its lifetime.
    fake.set(|f| {
        f.delay = Duration::ZERO;
        f.expires_in = json!(1);
    });
    source.refresh(&c, 1).await.expect("short");
    assert!(!source.needs_refresh());
    tokio::time::sleep(Duration::from_millis(850)).await;
    assert!(source.needs_refresh());
}

// --- the request -----------------------------------------------------------------------

#[tokio::test]
async fn basic_auth_style_sends_url_encoded_basic_credentials() {
    let (fake, source) = source(FakeConfig::default()).await;
    let token = source.token(&creds(SECRET), 1).await.expect("basic");
    assert_eq!(value(&token), "tok-1");
    assert_eq!(
        fake.form("grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(fake.form("client_secret"), None);
    assert_eq!(fake.form("scope").as_deref(), Some("read write"));
    assert_eq!(fake.form("audience"), None);
}

#[tokio::test]
async fn body_auth_style_sends_form_fields() {
    let (fake, source) = source(FakeConfig {
        style: AuthStyle::Body,
        ..FakeConfig::default()
    })
    .await;
    let token = source.token(&creds(SECRET), 1).await.expect("body");
    assert_eq!(value(&token), "tok-1");
    assert_eq!(fake.form("client_id").as_deref(), Some(ID));
    assert_eq!(fake.form("client_secret").as_deref(), Some(SECRET));
}

#[tokio::test]
async fn an_auth_style_the_endpoint_does_not_take_is_refused() {
    for (endpoint_wants, sent) in [(AuthStyle::Body, "basic"), (AuthStyle::Basic, "body")] {
        let (fake, url) = serve_fake(FakeConfig {
            style: endpoint_wants,
            ..FakeConfig::default()
        })
        .await;
        let source = TokenSource::new(spec(&url, sent), http_client());
        let err = source.token(&creds(SECRET), 1).await.expect_err(sent);
        assert_eq!(err.code(), "oauth2_invalid_request", "{err}");
        assert_no_secret(&err, SECRET);
        assert_eq!(fake.requests(), 1);
    }
}

#[tokio::test]
async fn audience_and_no_scope() {
    let (fake, url) = serve_fake(FakeConfig::default()).await;
    let spec = OAuth2Spec::from_raw(
        &json!({"token_url": url, "audience": "https://api.example.com"}),
        true,
    )
    .expect("spec");
    TokenSource::new(spec, http_client())
        .token(&creds(SECRET), 1)
        .await
        .expect("token");
    assert_eq!(
        fake.form("audience").as_deref(),
        Some("https://api.example.com")
    );
    assert_eq!(fake.form("scope"), None);
}

// --- errors ----------------------------------------------------------------------------

#[tokio::test]
async fn the_oauth_error_code_is_in_the_error_and_the_secret_is_not() {
    let (fake, source) = source(FakeConfig {
        secrets: vec!["the-right-one".to_string()],
        ..FakeConfig::default()
    })
    .await;
    let err = source
        .token(&creds(SECRET), 1)
        .await
        .expect_err("invalid_client");
    assert_eq!(err.code(), "oauth2_invalid_client");
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert!(!err.is_transient());
    assert_eq!(err.http_status(), http::StatusCode::BAD_GATEWAY);
    let text = err.to_string();
    assert!(text.contains("invalid_client"), "{text}");
    assert!(text.contains("Client authentication failed"), "{text}");
    assert!(text.contains("HTTP 401"), "{text}");
    assert_no_secret(&err, SECRET);
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn a_description_echoing_the_secret_is_redacted() {
    let basic = creds(SECRET).needles()[0].clone();
    let description = format!(
        "bad client_secret {SECRET} ({}) sent as Basic {basic}\u{7}",
        form_encode(SECRET)
    );
    let (_fake, source) = source(FakeConfig {
        fail: Some((
            400,
            json!({"error": "invalid_scope", "error_description": description}).to_string(),
        )),
        ..FakeConfig::default()
    })
    .await;
    let err = source
        .token(&creds(SECRET), 1)
        .await
        .expect_err("invalid_scope");
    assert_eq!(err.code(), "oauth2_invalid_scope");
    assert_no_secret(&err, SECRET);
    assert!(err.to_string().contains("[redacted]"), "{err}");
}

#[tokio::test]
async fn token_type_must_be_bearer_or_absent() {
    let (fake, source) = source(FakeConfig {
        token_type: json!("mac"),
        ..FakeConfig::default()
    })
    .await;
    let err = source.token(&creds(SECRET), 1).await.expect_err("mac");
    assert_eq!(err.code(), "oauth2_unsupported_token_type");
    assert!(err.to_string().contains("`mac`"), "{err}");

    fake.set(|f| f.token_type = json!("BEARER"));
    let token = source.token(&creds(SECRET), 2).await.expect("BEARER");
    assert_eq!(token.token_type(), "BEARER");
    assert_eq!(token.authorization().as_bytes(), b"Bearer tok-2");

    fake.set(|f| f.token_type = Value::Null);
    let token = source.token(&creds(SECRET), 3).await.expect("absent");
    assert_eq!(token.token_type(), "Bearer");
}

#[tokio::test]
async fn malformed_token_responses_are_rejected_without_quoting_them() {
    for (content_type, body, code) in [
        (
            "text/html",
            r#"{"access_token":"tok-SECRET"}"#,
            "oauth2_malformed_response",
        ),
        (
            "application/json",
            "tok-SECRET",
            "oauth2_malformed_response",
        ),
        (
            "application/json",
            r#"{"token_type":"Bearer"}"#,
            "oauth2_malformed_response",
        ),
        (
            "application/json",
            r#"{"access_token":""}"#,
            "oauth2_malformed_response",
        ),
        (
            "application/json",
            "{\"access_token\":\"tok-SECRET\\n\"}",
            "oauth2_malformed_response",
        ),
        (
            "application/json",
            r#"{"access_token":"tok-SECRET","expires_in":"soon"}"#,
            "oauth2_malformed_response",
        ),
        // An OAuth error in a 200 response (some endpoints do this).
        (
            "application/json",
            r#"{"error":"invalid_grant"}"#,
            "oauth2_invalid_grant",
        ),
    ] {
        let (_fake, source) = source(FakeConfig {
            content_type,
            body: Some(body.to_string()),
            ..FakeConfig::default()
        })
        .await;
        let err = source.token(&creds(SECRET), 1).await.expect_err(body);
        assert_eq!(err.code(), code, "{body}: {err}");
        assert!(!format!("{err} {err:?}").contains("tok-SECRET"), "{err:?}");
    }
    // A charset parameter and +json are JSON.
    let (_fake, source) = source(FakeConfig {
        content_type: "application/json; charset=utf-8",
        ..FakeConfig::default()
    })
    .await;
    source.token(&creds(SECRET), 1).await.expect("charset");
}

#[tokio::test]
async fn http_errors_without_an_oauth_body() {
    let (_fake, source) = source(FakeConfig {
        fail: Some((503, "<html>down</html>".to_string())),
        ..FakeConfig::default()
    })
    .await;
    let err = source.token(&creds(SECRET), 1).await.expect_err("503");
    assert_eq!(err.code(), "oauth2_http_error");
    assert!(err.is_transient());
    assert_eq!(err.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.to_string().contains("HTTP 503"), "{err}");
}

#[tokio::test]
async fn unreachable_and_slow_endpoints() {
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr")
    };
    let source = TokenSource::new(
        spec(&format!("http://{closed}/token"), "basic"),
        http_client(),
    );
    let err = source.token(&creds(SECRET), 1).await.expect_err("refused");
    assert_eq!(err.code(), "oauth2_unreachable");
    assert!(err.is_transient());
    assert_no_secret(&err, SECRET);

    let (_fake, url) = serve_fake(FakeConfig {
        delay: Duration::from_secs(5),
        ..FakeConfig::default()
    })
    .await;
    let source = TokenSource::with_timeout(
        spec(&url, "basic"),
        http_client(),
        Duration::from_millis(200),
    );
    let started = Instant::now();
    let err = source.token(&creds(SECRET), 1).await.expect_err("slow");
    assert_eq!(err.code(), "oauth2_timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains("0.2 s"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_is_shared_then_held_briefly_except_for_a_new_generation() {
    let (fake, source) = source(FakeConfig {
        secrets: vec![ROTATED.to_string()],
        delay: Duration::from_millis(200),
        ..FakeConfig::default()
    })
    .await;
    let old = creds(SECRET);
    let mut calls = JoinSet::new();
    for _ in 0..20 {
        let (source, old) = (source.clone(), old.clone());
        calls.spawn(async move { source.token(&old, 1).await });
    }
    for result in calls.join_all().await {
        assert_eq!(result.expect_err("refused").code(), "oauth2_invalid_client");
    }
    assert_eq!(fake.requests(), 1);
    // Held: the same error again without asking the endpoint.
    let err = source.token(&old, 1).await.expect_err("held");
    assert_eq!(err.code(), "oauth2_invalid_client");
    assert_eq!(fake.requests(), 1);
    // The rotated secret is tried at once, and succeeds.
    let token = source.token(&creds(ROTATED), 2).await.expect("rotated");
    assert_eq!(value(&token), "tok-2");
    assert_eq!(fake.requests(), 2);
    // After the hold, the endpoint is asked again.
    let (fake, source) = (
        fake.clone(),
        TokenSource::new(source.spec().clone(), http_client()),
    );
    let _ = source.token(&old, 1).await.expect_err("first");
    let before = fake.requests();
    tokio::time::sleep(FAILURE_HOLD_MIN + Duration::from_millis(100)).await;
    let _ = source.token(&old, 1).await.expect_err("after the hold");
    assert_eq!(fake.requests(), before + 1);
}

#[tokio::test]
async fn nothing_secret_is_logged() {
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("credproxy=trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // tracing caches each callsite's interest process-wide, and while at most one
    // dispatcher exists it computes it from the *registering* thread's default: a parallel
    // test without a subscriber would cache `never` and blind this capture. A second live
    // dispatcher makes tracing ask every registered dispatcher, this one included.
    let dispatch = tracing::Dispatch::new(subscriber);
    let _anchor = tracing::Dispatch::new(tracing_subscriber::registry());
    let _guard = tracing::dispatcher::set_default(&dispatch);
    tracing::callsite::rebuild_interest_cache();

    let (fake, source) = source(FakeConfig::default()).await;
    source.token(&creds(SECRET), 1).await.expect("minted");
    fake.set(|f| {
        f.fail = Some((
            400,
            json!({"error": "invalid_scope", "error_description": SECRET}).to_string(),
        ));
    });
    source.refresh(&creds(SECRET), 1).await.expect_err("failed");
    fake.set(|f| f.secrets.clear());
    source.refresh(&creds(SECRET), 1).await.expect_err("failed");

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    assert!(logs.contains("minted an OAuth2 access token"), "{logs}");
    assert!(logs.contains("oauth2_invalid_scope"), "{logs}");
    assert!(logs.contains("oauth2_invalid_client"), "{logs}");
    assert!(!logs.contains("tok-1"), "{logs}");
    for needle in creds(SECRET).needles() {
        assert!(!logs.contains(&needle), "{logs}");
    }
}
