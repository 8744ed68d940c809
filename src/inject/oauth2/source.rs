//! [`TokenSource`]: one per OAuth2 route; mints, caches and re-mints access tokens with a
//! single flight per route and a growing hold after failures (see the parent module).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use http::HeaderValue;
use http::header::{ACCEPT, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;

use super::token::*;
use super::*;

pub(super) type MintResult = Result<Arc<AccessToken>, TokenError>;
pub(super) type SharedMint = Shared<BoxFuture<'static, MintResult>>;

/// The mint in progress.
pub(super) struct Flight {
    pub(super) id: u64,
    pub(super) generation: u64,
    pub(super) result: SharedMint,
}

/// The last failed mint, served to callers until `until`.
pub(super) struct Failure {
    pub(super) generation: u64,
    pub(super) error: TokenError,
    pub(super) until: Instant,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) flight: Option<Flight>,
    pub(super) failure: Option<Failure>,
    pub(super) consecutive_failures: u32,
    pub(super) last_invalidation: Option<Instant>,
    pub(super) next_id: u64,
    /// When the latest mint was (or will be) sent: the next waits [`MIN_MINT_INTERVAL`].
    pub(super) last_mint: Option<Instant>,
}

impl State {
    /// The flight in progress, if it mints with credentials at least as new as `generation`.
    pub(super) fn joinable(&self, generation: u64) -> Option<SharedMint> {
        self.flight
            .as_ref()
            .filter(|f| f.generation >= generation)
            .map(|f| f.result.clone())
    }
}

pub(super) struct Inner {
    pub(super) spec: OAuth2Spec,
    pub(super) endpoint: String,
    pub(super) http: reqwest::Client,
    pub(super) timeout: Duration,
    pub(super) current: ArcSwapOption<AccessToken>,
    pub(super) state: Mutex<State>,
}

/// Clears the flight slot when the mint task ends, however it ends (also on panic or runtime
/// shutdown), so that a slot can never hold a flight that no one completes.
pub(super) struct FlightGuard {
    pub(super) inner: Arc<Inner>,
    pub(super) id: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if state.flight.as_ref().is_some_and(|f| f.id == self.id) {
            state.flight = None;
        }
    }
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached token, if it is fresh and minted with credentials at least as new.
    pub(super) fn fresh(&self, generation: u64) -> Option<Arc<AccessToken>> {
        self.current
            .load_full()
            .filter(|t| t.generation >= generation && t.is_fresh())
    }

    /// Starts a mint in its own task and puts it in the slot. Called with the state locked.
    pub(super) fn start(
        self: &Arc<Self>,
        state: &mut State,
        creds: &Arc<ClientCredentials>,
        generation: u64,
    ) -> SharedMint {
        state.next_id += 1;
        let id = state.next_id;
        let now = Instant::now();
        // A token that lives a second (or less, or is stale on arrival) must not make every
        // request mint: one request per MIN_MINT_INTERVAL per route at most.
        let send_at = state
            .last_mint
            .map_or(now, |last| (last + MIN_MINT_INTERVAL).max(now));
        state.last_mint = Some(send_at);
        let inner = self.clone();
        let creds = creds.clone();
        let task = tokio::spawn(async move {
            let _guard = FlightGuard {
                inner: inner.clone(),
                id,
            };
            tokio::time::sleep_until(send_at).await;
            let result = inner.mint(&creds, generation).await.map(Arc::new);
            inner.record(generation, &result);
            result
        });
        let endpoint = self.endpoint.clone();
        let result = async move {
            task.await.unwrap_or_else(|_| {
                Err(TokenError::Unreachable {
                    endpoint,
                    detail: "the token request was aborted".to_string(),
                })
            })
        }
        .boxed()
        .shared();
        state.flight = Some(Flight {
            id,
            generation,
            result: result.clone(),
        });
        result
    }

    /// Installs a minted token (unless a newer generation's is cached) or remembers a failure.
    pub(super) fn record(&self, generation: u64, result: &MintResult) {
        let mut state = self.lock();
        match result {
            Ok(token) => {
                let superseded = self
                    .current
                    .load_full()
                    .is_some_and(|c| c.generation > generation);
                if !superseded {
                    self.current.store(Some(token.clone()));
                }
                state.consecutive_failures = 0;
                if state
                    .failure
                    .as_ref()
                    .is_some_and(|f| f.generation <= generation)
                {
                    state.failure = None;
                }
                tracing::debug!(
                    token_url = %self.endpoint,
                    generation,
                    expires_in_seconds = token.expires_at.saturating_duration_since(Instant::now()).as_secs(),
                    "minted an OAuth2 access token"
                );
            }
            Err(error) => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let doublings = state.consecutive_failures.saturating_sub(1).min(5);
                let hold = (FAILURE_HOLD_MIN * (1u32 << doublings)).min(FAILURE_HOLD_MAX);
                if state
                    .failure
                    .as_ref()
                    .is_none_or(|f| f.generation <= generation)
                {
                    state.failure = Some(Failure {
                        generation,
                        error: error.clone(),
                        until: Instant::now() + hold,
                    });
                }
                tracing::debug!(
                    token_url = %self.endpoint,
                    generation,
                    code = error.code(),
                    error = %error,
                    "OAuth2 token request failed"
                );
            }
        }
    }

    /// One token request, bounded by the timeout as a whole.
    async fn mint(
        &self,
        creds: &ClientCredentials,
        generation: u64,
    ) -> Result<AccessToken, TokenError> {
        let sent_at = Instant::now();
        match tokio::time::timeout(self.timeout, self.exchange(creds, generation, sent_at)).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::Timeout {
                endpoint: self.endpoint.clone(),
                after: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        creds: &ClientCredentials,
        generation: u64,
        sent_at: Instant,
    ) -> Result<AccessToken, TokenError> {
        let spec = &self.spec;
        let mut request = self
            .http
            .post(spec.token_url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if spec.auth_style == AuthStyle::Basic {
            // reqwest marks the header sensitive.
            request = request.basic_auth(
                form_encode(&creds.client_id),
                Some(form_encode(creds.client_secret.expose_secret())),
            );
        }
        let mut response = request
            .body(self.form(creds))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(self.malformed("the response is larger than 64 KiB"));
            }
            body.extend_from_slice(&chunk);
        }
        let object = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        let oauth_error = object
            .as_ref()
            .and_then(|m| m.get("error"))
            .and_then(Value::as_str);
        if !status.is_success() {
            return Err(match oauth_error {
                Some(error) => self.oauth_error(status.as_u16(), error, object.as_ref(), creds),
                None => TokenError::Http {
                    endpoint: self.endpoint.clone(),
                    status: status.as_u16(),
                },
            });
        }
        if let Some(content_type) = &content_type
            && !is_json(content_type)
        {
            return Err(self.malformed(&format!(
                "Content-Type `{}` is not application/json",
                clean(content_type, &[], 64)
            )));
        }
        let Some(map) = object.as_ref() else {
            return Err(self.malformed("the body is not a JSON object"));
        };
        if !map.contains_key("access_token")
            && let Some(error) = oauth_error
        {
            return Err(self.oauth_error(status.as_u16(), error, Some(map), creds));
        }
        let value = match map.get("access_token") {
            Some(Value::String(text)) if !text.is_empty() => text,
            Some(Value::String(_)) => return Err(self.malformed("`access_token` is empty")),
            _ => return Err(self.malformed("`access_token` is missing or not a string")),
        };
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self
                .malformed("`access_token` has characters that cannot be sent in an HTTP header"));
        }
        let token_type = match map.get("token_type") {
            None | Some(Value::Null) => "Bearer".to_string(),
            Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => t.clone(),
            Some(Value::String(t)) => {
                return Err(TokenError::UnsupportedTokenType {
                    endpoint: self.endpoint.clone(),
                    token_type: clean(t, &creds.needles(), 32),
                });
            }
            Some(_) => return Err(self.malformed("`token_type` is not a string")),
        };
        let expires_in = parse_expires_in(map.get("expires_in"))
            .ok_or_else(|| self.malformed("`expires_in` is not a number of seconds"))?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {value}")).map_err(|_| {
                self.malformed(
                    "`access_token` has characters that cannot be sent in an HTTP header",
                )
            })?;
        authorization.set_sensitive(true);
        let schedule = Schedule::new(sent_at, expires_in);
        Ok(AccessToken {
            value: SecretString::from(value.clone()),
            authorization,
            token_type,
            generation,
            expires_at: schedule.expires_at,
            stale_at: schedule.stale_at,
            refresh_at: schedule.refresh_at,
        })
    }

    /// The form body: `grant_type`, `scope`, `audience`, and with `auth_style: body` the
    /// client credentials.
    pub(super) fn form(&self, creds: &ClientCredentials) -> String {
        let spec = &self.spec;
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !spec.scopes.is_empty() {
            form.append_pair("scope", &spec.scopes.join(" "));
        }
        if let Some(audience) = &spec.audience {
            form.append_pair("audience", audience);
        }
        if spec.auth_style == AuthStyle::Body {
            form.append_pair("client_id", &creds.client_id);
            form.append_pair("client_secret", creds.client_secret.expose_secret());
        }
        form.finish()
    }

    /// The request failed before a complete response: the error and its causes, without the
    /// URL (named separately) and without anything of the request.
    pub(super) fn unreachable(&self, err: reqwest::Error) -> TokenError {
        let err = err.without_url();
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !detail.contains(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            source = cause.source();
        }
        TokenError::Unreachable {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }

    pub(super) fn malformed(&self, detail: &str) -> TokenError {
        TokenError::Malformed {
            endpoint: self.endpoint.clone(),
            detail: detail.to_string(),
        }
    }

    pub(super) fn oauth_error(
        &self,
        status: u16,
        error: &str,
        object: Option<&serde_json::Map<String, Value>>,
        creds: &ClientCredentials,
    ) -> TokenError {
        let needles = creds.needles();
        let description = object
            .and_then(|m| m.get("error_description"))
            .and_then(Value::as_str)
            .map(|d| clean(d, &needles, MAX_DESCRIPTION_CHARS));
        TokenError::OAuth {
            endpoint: self.endpoint.clone(),
            status,
            error: clean(error, &needles, MAX_ERROR_CODE_CHARS),
            description,
        }
    }
}

/// A route's access tokens: minted from its client credentials, cached, shared by all
/// concurrent callers (see the module docs for expiry, single flight and failure holds).
pub struct TokenSource {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.inner.endpoint)
            .field("auth_style", &self.inner.spec.auth_style)
            .field("cached", &self.inner.current.load().is_some())
            .finish()
    }
}

/// What [`TokenSource::after_unauthorized`] did with a token the upstream refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// It was the current token: dropped now, so the next request mints.
    Dropped,
    /// Another request already dropped or replaced it.
    Replaced,
    /// It is the current token, but one was dropped moments ago: kept.
    Kept,
}

impl TokenSource {
    /// A source for `spec`, requesting through `http` (the project's client: no proxy, no
    /// redirects) with the [`DEFAULT_TIMEOUT`].
    pub fn new(spec: OAuth2Spec, http: reqwest::Client) -> Self {
        Self::with_timeout(spec, http, DEFAULT_TIMEOUT)
    }

    /// As [`TokenSource::new`], with another bound on a whole token request.
    pub fn with_timeout(spec: OAuth2Spec, http: reqwest::Client, timeout: Duration) -> Self {
        TokenSource {
            inner: Arc::new(Inner {
                endpoint: spec.endpoint(),
                spec,
                http,
                timeout,
                current: ArcSwapOption::empty(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The spec this source mints for.
    pub fn spec(&self) -> &OAuth2Spec {
        &self.inner.spec
    }

    /// The token to inject now. Warm (a fresh token minted with credentials of `generation` or
    /// newer): one atomic load. Otherwise one mint with `creds`, shared by every concurrent
    /// caller; after a failure, the same error for a short hold unless `generation` is newer.
    ///
    /// `generation` must increase whenever the client credentials change (a counter bumped
    /// when the secret store installs a new value will do); a newer one mints at once.
    pub async fn token(
        &self,
        creds: &Arc<ClientCredentials>,
        generation: u64,
    ) -> Result<Arc<AccessToken>, TokenError> {
        if let Some(token) = self.inner.fresh(generation) {
            return Ok(token);
        }
        let flight = {
            let mut state = self.inner.lock();
            // A flight may have completed between the load above and the lock.
            if let Some(token) = self.inner.fresh(generation) {
                return Ok(token);
            }
            match state.joinable(generation) {
                Some(flight) => flight,
                None => {
                    if let Some(failure) = &state.failure
                        && failure.generation >= generation
                        && Instant::now() < failure.until
                    {
                        return Err(failure.error.clone());
                    }
                    self.inner.start(&mut state, creds, generation)
                }
            }
        };
        flight.await
    }

    /// Whether a refresh ahead is due: no token cached, or 80 % of its lifetime has passed.
    /// While it is due, [`TokenSource::token`] keeps serving the cached token until expiry
    /// minus the margin.
    pub fn needs_refresh(&self) -> bool {
        self.refresh_due_at()
            .is_none_or(|due| Instant::now() >= due)
    }

    /// When the cached token is due for a refresh ahead (80 % of its lifetime); `None` when
    /// no token is cached.
    pub fn refresh_due_at(&self) -> Option<Instant> {
        self.inner.current.load().as_ref().map(|t| t.refresh_at)
    }

    /// Mints a new token now, whether or not the cached one is fresh (joining a mint already
    /// in flight for `generation` or newer), ignoring the failure hold; for a background
    /// refresher, and after the client secret rotated. The cached token keeps being served
    /// while this runs, and stays cached if it fails.
    pub async fn refresh(
        &self,
        creds: &Arc<ClientCredentials>,
        generation: u64,
    ) -> Result<Arc<AccessToken>, TokenError> {
        let flight = {
            let mut state = self.inner.lock();
            match state.joinable(generation) {
                Some(flight) => flight,
                None => self.inner.start(&mut state, creds, generation),
            }
        };
        flight.await
    }

    /// After the upstream answered 401 to `token`: drops it so that the next
    /// [`TokenSource::token`] mints, if it is still the cached token (so N concurrent 401s for
    /// the same token drop it once and cause one mint) and no token was dropped in the last
    /// [`MIN_INVALIDATION_INTERVAL`]. Returns whether it was dropped, i.e. whether a retry
    /// with a new token makes sense.
    pub fn invalidate(&self, token: &AccessToken) -> bool {
        self.after_unauthorized(token) == Unauthorized::Dropped
    }

    /// After the upstream answered 401 to `token`: whether a request that used it should be
    /// replayed with a new one. The first to report it drops it ([`Unauthorized::Dropped`]:
    /// the next [`TokenSource::token`] mints), at most once per
    /// [`MIN_INVALIDATION_INTERVAL`]; every other request that got the 401 with that same
    /// token finds it already replaced ([`Unauthorized::Replaced`]) and is replayed too. A
    /// 401 to the current token within the interval ([`Unauthorized::Kept`]) is not
    /// replayed: a new token was just minted and failed as well.
    pub fn after_unauthorized(&self, token: &AccessToken) -> Unauthorized {
        let mut state = self.inner.lock();
        let is_current = self
            .inner
            .current
            .load()
            .as_ref()
            .is_some_and(|current| std::ptr::eq(Arc::as_ptr(current), token));
        if !is_current {
            return Unauthorized::Replaced;
        }
        if state
            .last_invalidation
            .is_some_and(|t| t.elapsed() < MIN_INVALIDATION_INTERVAL)
        {
            return Unauthorized::Kept;
        }
        state.last_invalidation = Some(Instant::now());
        self.inner.current.store(None);
        Unauthorized::Dropped
    }
}
