//! A route's live credential on tokio's paused clock: a rotated `file:` secret reaching the
//! injected header, a stale one refused, and OAuth2 tokens minted again ahead of expiry, at
//! expiry and when the client secret rotates (see `crate::secrets::tests` for the two ways
//! time is moved).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use futures_util::FutureExt as _;

use super::*;
use crate::secrets::tests::{FileSecret, Frozen, config_with, elapse, serve_on_own_thread, until};

async fn credential_for(config: &Config) -> (Arc<SecretStore>, Arc<Credential>) {
    let store = SecretStore::build(config, &|_| None).await.expect("store");
    let mut credentials = build_all(config, &store).await.expect("credentials");
    (store, credentials.remove(0))
}

/// The `Authorization` value a request would be given now.
async fn header(credential: &Credential) -> Result<String, CredentialError> {
    let resolved = credential.resolve().await?;
    match &resolved.injection {
        Prepared::Header { name, value } => {
            assert_eq!(name, "authorization");
            Ok(value.to_str().expect("ascii").to_string())
        }
        other => panic!("not a header: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_rotated_file_secret_is_injected_after_the_refresh_ahead_and_a_stale_one_refused() {
    let file = FileSecret::new("key-1");
    let config = config_with(
        &file.reference(),
        None,
        &["cache_ttl_seconds: 10", "max_stale_seconds: 20"],
    );
    let (store, credential) = credential_for(&config).await;
    store.spawn_refreshers();
    assert_eq!(header(&credential).await.expect("header"), "Bearer key-1");
    // Prepared once per fetched value, not per request.
    let first = credential.resolve().await.expect("resolved");
    let again = credential.resolve().await.expect("resolved");
    assert!(Arc::ptr_eq(&first, &again));

    file.write("key-2");
    elapse(Duration::from_millis(8_900)).await;
    assert_eq!(header(&credential).await.expect("header"), "Bearer key-1");
    elapse(Duration::from_millis(200)).await;
    assert_eq!(
        header(&credential).await.expect("header"),
        "Bearer key-2",
        "the refresh ahead at 9 s changed what is injected"
    );

    // The file goes away: key-2 (read at 9 s) is injected until 9 + 10 + 20 = 39 s.
    file.remove();
    elapse(Duration::from_millis(29_800)).await;
    assert_eq!(header(&credential).await.expect("header"), "Bearer key-2");
    elapse(Duration::from_millis(200)).await;
    match header(&credential).await {
        Err(CredentialError::Store(SecretError::Stale { resource, .. })) => {
            assert_eq!(resource, file.reference());
        }
        other => panic!("expected a stale secret, got {other:?}"),
    }
}

// --- OAuth2, against a token endpoint on its own thread, on a frozen clock --------------------

const CLIENT_SECRET_1: &str = "cs-first-0001";
const CLIENT_SECRET_2: &str = "cs-second-0002";

/// A client-credentials token endpoint: checks HTTP Basic `etl-client` with either client
/// secret, records which was used, and issues `at-N` for the N-th request.
struct FakeTokenEndpoint {
    shared: Arc<TokenShared>,
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct TokenShared {
    expires_in: u64,
    requests: AtomicUsize,
    /// The client secret of each successful request, in order.
    secrets: Mutex<Vec<String>>,
}

impl FakeTokenEndpoint {
    fn start(expires_in: u64) -> Self {
        let shared = Arc::new(TokenShared {
            expires_in,
            requests: AtomicUsize::new(0),
            secrets: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .with_state(shared.clone());
        let (addr, stop) = serve_on_own_thread(app);
        FakeTokenEndpoint {
            shared,
            url: format!("http://{addr}/token"),
            _stop: stop,
        }
    }

    fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    fn secrets(&self) -> Vec<String> {
        self.shared.secrets.lock().expect("lock").clone()
    }

    /// A config whose route `api` mints from this endpoint with the client credentials in
    /// `file`.
    fn config(&self, file: &FileSecret, settings: &[&str]) -> Config {
        let inject = format!(
            r#"{{ oauth2_client_credentials: {{ token_url: "{}", scopes: ["crm.read"] }} }}"#,
            self.url
        );
        config_with(&file.reference(), Some(&inject), settings)
    }
}

async fn token(
    axum::extract::State(fake): axum::extract::State<Arc<TokenShared>>,
    headers: http::HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let n = fake.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let secret = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| pair.strip_prefix("etl-client:").map(str::to_string));
    match secret {
        Some(secret)
            if [CLIENT_SECRET_1, CLIENT_SECRET_2].contains(&secret.as_str())
                && body.contains("grant_type=client_credentials") =>
        {
            fake.secrets.lock().expect("lock").push(secret);
            axum::Json(serde_json::json!({
                "access_token": format!("at-{n}"),
                "token_type": "Bearer",
                "expires_in": fake.expires_in,
            }))
            .into_response()
        }
        _ => (
            http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response(),
    }
}

fn client_json(secret: &str) -> String {
    format!(r#"{{"client_id":"etl-client","client_secret":"{secret}"}}"#)
}

/// When the cached token is due for a refresh ahead.
fn due(credential: &Credential) -> Option<Instant> {
    credential
        .token_source
        .as_ref()
        .expect("an OAuth2 route")
        .refresh_due_at()
}

/// The `Authorization` value a request gets now, which must not wait for the token endpoint.
fn injected_now(credential: &Credential) -> String {
    let resolved = credential
        .resolve()
        .now_or_never()
        .expect("a warm secret is not waited for")
        .expect("resolved");
    let minted = credential
        .minted(&resolved)
        .now_or_never()
        .expect("a request does not wait for the token endpoint")
        .expect("minted")
        .expect("an OAuth2 route");
    minted
        .token
        .authorization()
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Lets the tasks woken by an `advance` run up to their next wait.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_refresher_mints_again_at_four_fifths_of_the_token_lifetime() {
    let _frozen = Frozen::new();
    let start = Instant::now();
    let tokens = FakeTokenEndpoint::start(100);
    let file = FileSecret::new(&client_json(CLIENT_SECRET_1));
    let (_store, credential) =
        credential_for(&tokens.config(&file, &["cache_ttl_seconds: 3600"])).await;
    tokio::spawn(credential.clone().run_token_refresher());
    until("the refresher minted the first token", || {
        due(&credential).is_some()
    })
    .await;
    assert_eq!(tokens.requests(), 1);
    assert_eq!(
        due(&credential).expect("due") - start,
        Duration::from_secs(80)
    );
    assert_eq!(injected_now(&credential), "Bearer at-1");

    tokio::time::advance(Duration::from_secs(79)).await;
    settle().await;
    assert_eq!(tokens.requests(), 1, "not refreshed before 80 s");
    assert_eq!(injected_now(&credential), "Bearer at-1");

    tokio::time::advance(Duration::from_secs(1)).await;
    until("the refresher minted the second token", || {
        due(&credential).is_some_and(|d| d - start == Duration::from_secs(160))
    })
    .await;
    // Its schedule starts when it was requested: exactly at 80 s, not before.
    assert_eq!(tokens.requests(), 2);
    assert_eq!(injected_now(&credential), "Bearer at-2");
    assert_eq!(
        tokens.requests(),
        2,
        "requests are served the refreshed token"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_refresher_a_request_mints_again_once_the_token_is_past_serving() {
    let _frozen = Frozen::new();
    let start = Instant::now();
    let tokens = FakeTokenEndpoint::start(100);
    let file = FileSecret::new(&client_json(CLIENT_SECRET_1));
    let (_store, credential) =
        credential_for(&tokens.config(&file, &["cache_ttl_seconds: 3600"])).await;
    let resolved = credential.resolve().await.expect("resolved");
    let first = credential
        .minted(&resolved)
        .await
        .expect("minted")
        .expect("oauth2");
    assert_eq!(first.token.expires_at() - start, Duration::from_secs(100));
    assert_eq!(tokens.requests(), 1);

    // Served until expiry minus the margin (10 % of the lifetime): 90 s.
    tokio::time::advance(Duration::from_millis(89_900)).await;
    assert_eq!(injected_now(&credential), "Bearer at-1");
    assert_eq!(tokens.requests(), 1);

    tokio::time::advance(Duration::from_millis(100)).await;
    let second = credential
        .minted(&resolved)
        .await
        .expect("minted")
        .expect("oauth2");
    assert_eq!(second.token.authorization(), "Bearer at-2");
    assert_eq!(tokens.requests(), 2);
    assert_eq!(second.token.expires_at() - start, Duration::from_secs(190));
}

#[tokio::test(start_paused = true)]
async fn a_rotated_client_secret_is_minted_with_within_five_seconds_of_its_refresh() {
    let _frozen = Frozen::new();
    let tokens = FakeTokenEndpoint::start(3600);
    let file = FileSecret::new(&client_json(CLIENT_SECRET_1));
    let (store, credential) =
        credential_for(&tokens.config(&file, &["cache_ttl_seconds: 10"])).await;
    store.spawn_refreshers();
    tokio::spawn(credential.clone().run_token_refresher());
    until("the first token", || due(&credential).is_some()).await;
    let first_due = due(&credential);

    file.write(&client_json(CLIENT_SECRET_2));
    tokio::time::advance(Duration::from_secs(9)).await;
    until("the store read the rotated file at 9 s", || {
        credential.entry.current().is_some_and(|f| {
            f.payload()
                .ends_with(format!("{CLIENT_SECRET_2}\"}}").as_bytes())
        })
    })
    .await;
    // No request comes; the refresher looks for a new secret every 5 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    until("a token minted with the rotated secret", || {
        tokens.requests() == 2
    })
    .await;
    assert_eq!(tokens.secrets(), [CLIENT_SECRET_1, CLIENT_SECRET_2]);
    until("the new token is cached", || due(&credential) != first_due).await;
    assert_eq!(injected_now(&credential), "Bearer at-2");
    assert_eq!(tokens.requests(), 2);
}
