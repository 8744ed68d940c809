//! OAuth2 client-credentials access tokens (RFC 6749 §4.4) for
//! `inject.oauth2_client_credentials`.
//!
//! A route with this injection keeps a long-lived client id and secret (the secret payload
//! `{"client_id": "...", "client_secret": "..."}`) and injects a short-lived access token minted
//! from them: `Authorization: Bearer <access token>`. The pipeline never sees either.
//!
//! - [`OAuth2Spec`]: the config mapping `{ token_url, scopes, audience, auth_style }`.
//! - [`ClientCredentials`]: the parsed secret payload.
//! - [`TokenSource`] (one per route): mints, caches and re-mints [`AccessToken`]s.
//! - [`TokenError`]: why no token could be had, with a stable [`TokenError::code`] for the
//!   `credential_unavailable` message and the audit `reason`.
//!
//! # The request
//!
//! `POST token_url` with a form body `grant_type=client_credentials`, `scope` (the scopes joined
//! by spaces, when there are any) and `audience` (when set), `Accept: application/json`. The
//! client authenticates with HTTP Basic (`auth_style: basic`, the default:
//! `base64(urlencode(client_id) ":" urlencode(client_secret))` per RFC 6749 §2.3.1) or with
//! `client_id`/`client_secret` form fields (`auth_style: body`). The whole exchange, body
//! included, is bounded by [`DEFAULT_TIMEOUT`] (10 s); the response body by 64 KiB. The HTTP
//! client is the caller's (the project's: no proxy from the environment, no redirects; a 3xx
//! is an error, never followed with the client secret).
//!
//! # Caching and expiry
//!
//! A token is served until its expiry minus a margin of min(60 s, 10 % of its lifetime), so it
//! never expires on its way to the upstream; the clock starts when the token request is sent.
//! A token without `expires_in` is taken to live [`DEFAULT_LIFETIME`] (5 min, so it is served
//! for 4.5 min); lifetimes are capped at [`MAX_LIFETIME`] (24 h). Refresh ahead is the caller's
//! to schedule: [`TokenSource::needs_refresh`] turns true, and [`TokenSource::refresh_due_at`]
//! is reached, once 80 % of the lifetime has passed, which leaves at least one margin for
//! retries before requests would have to wait for a mint.
//!
//! Each token records the *generation* of the client credentials it was minted with (a number
//! the caller increases whenever the secret's value changes). A request for a newer generation
//! than the cached token's mints anew (a rotated client secret takes effect at once); a request
//! still holding an older generation is served the newer token, and a late mint with older
//! credentials never replaces a newer token.
//!
//! # Single flight
//!
//! The cached token sits behind an `ArcSwapOption`: a warm [`TokenSource::token`] is one atomic
//! load, no lock. A cold or stale cache starts one mint as a spawned task whose result is a
//! `futures::Shared` kept in a small slot under a `std` mutex (never held across an await);
//! every concurrent caller awaits that same result, so N callers cause exactly one request to
//! the token endpoint, and they all get the same error if it fails. The task installs its
//! token before it leaves the slot, so a later caller either finds the new token or joins the
//! flight. Because the mint runs in its own task, a caller that goes away (client disconnect)
//! cancels nothing: the token is still installed for the next request. This is why the module
//! does not use moka's `try_get_with` (as the secret cache does): the cache here is a single
//! slot whose entries expire at a time the token endpoint chooses, must be dropped
//! conditionally (only the token that got the 401), and must keep being served while a
//! refresh-ahead mint is in flight; all three are one compare under our own lock.
//!
//! # Failures
//!
//! A failed mint is remembered for its generation and returned to callers without a new
//! request for a short hold: 1 s after the first failure, doubling up to 30 s while failures
//! continue, cleared by a success. A token endpoint that answers `invalid_client` therefore
//! sees about one request per hold per route, not one per proxied request. A newer generation
//! (the fix for `invalid_client` is usually a rotated secret) and [`TokenSource::refresh`]
//! ignore the hold.
//!
//! # Secrets
//!
//! The client secret lives in a [`SecretString`]; tokens in a [`SecretString`] and a sensitive
//! [`HeaderValue`]. `Debug` of every type here prints neither. Error messages carry the
//! endpoint, the HTTP status, the OAuth `error` code and `error_description`, never the secret
//! or a token: the description is cut to printable ASCII and 200 characters, and any
//! occurrence of the client secret (plain, form-encoded, or inside the Basic header) is
//! replaced by `[redacted]` in case the endpoint echoes it. Response bodies are never quoted.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use http::HeaderValue;
use http::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;

/// Longest a whole token request (connect, send, response body) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime assumed for a token whose response has no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Longest lifetime honoured; a longer `expires_in` is cut to this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound of the margin before expiry at which a token stops being served (the margin is
/// min(this, 10 % of the lifetime)).
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// [`TokenSource::invalidate`] drops at most one token per this interval, so an upstream that
/// answers 401 for reasons other than the token cannot make every request mint.
pub const MIN_INVALIDATION_INTERVAL: Duration = Duration::from_secs(10);

/// First hold of a failed mint; doubles per consecutive failure up to [`FAILURE_HOLD_MAX`].
const FAILURE_HOLD_MIN: Duration = Duration::from_secs(1);
const FAILURE_HOLD_MAX: Duration = Duration::from_secs(30);
/// Largest token response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const MAX_DESCRIPTION_CHARS: usize = 200;
const MAX_ERROR_CODE_CHARS: usize = 64;
/// The keys of the `oauth2_client_credentials` mapping.
const KEYS: [&str; 4] = ["token_url", "scopes", "audience", "auth_style"];

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Basic base64(urlencode(client_id):urlencode(client_secret))` (default).
    #[default]
    Basic,
    /// `client_id` and `client_secret` as form fields of the request body.
    Body,
}

/// One problem in an `oauth2_client_credentials` mapping, for `check`'s key paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Key path below the mapping: `token_url`, `scopes[1]`, an unknown key, or empty when the
    /// mapping itself is wrong.
    pub key: String,
    /// What is wrong, naming no secret (the mapping holds none).
    pub message: String,
}

impl SpecProblem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        SpecProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// The validated `inject.oauth2_client_credentials` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Spec {
    token_url: Url,
    scopes: Vec<String>,
    audience: Option<String>,
    auth_style: AuthStyle,
}

impl OAuth2Spec {
    /// Parses `{ token_url, scopes, audience, auth_style }`; every problem joined into one
    /// message, each prefixed by its key. See [`OAuth2Spec::parse`].
    pub fn from_raw(raw: &Value, allow_loopback_http: bool) -> Result<Self, String> {
        Self::parse(raw, allow_loopback_http).map_err(|problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Parses the mapping and reports every problem with its key:
    ///
    /// - `token_url` (required): https; plain http only when `allow_loopback_http` and the host
    ///   is loopback (`localhost`, `127.0.0.0/8`, `::1`); no user info, no fragment.
    /// - `scopes` (optional, default none): a list of RFC 6749 §3.3 scope tokens.
    /// - `audience` (optional, null allowed): a non-empty string, sent as the `audience` field.
    /// - `auth_style` (optional, null allowed): `basic` (default) or `body`.
    /// - Any other key is rejected.
    pub fn parse(raw: &Value, allow_loopback_http: bool) -> Result<Self, Vec<SpecProblem>> {
        let Some(map) = raw.as_object() else {
            return Err(vec![SpecProblem::new(
                "",
                "must be a mapping: { token_url, scopes, audience, auth_style }",
            )]);
        };
        let mut problems = Vec::new();
        for key in map.keys() {
            if !KEYS.contains(&key.as_str()) {
                problems.push(SpecProblem::new(
                    key.as_str(),
                    format!("unknown key: expected {}", KEYS.join(", ")),
                ));
            }
        }
        let token_url = match map.get("token_url") {
            None | Some(Value::Null) => {
                problems.push(SpecProblem::new(
                    "token_url",
                    "is required: the https URL of the token endpoint",
                ));
                None
            }
            Some(Value::String(text)) => match parse_token_url(text, allow_loopback_http) {
                Ok(url) => Some(url),
                Err(message) => {
                    problems.push(SpecProblem::new("token_url", message));
                    None
                }
            },
            Some(_) => {
                problems.push(SpecProblem::new(
                    "token_url",
                    "must be a string: the https URL of the token endpoint",
                ));
                None
            }
        };
        let mut scopes = Vec::new();
        match map.get("scopes") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(scope) if is_scope_token(scope) => scopes.push(scope.to_string()),
                        Some(scope) => problems.push(SpecProblem::new(
                            format!("scopes[{i}]"),
                            format!(
                                "`{scope}` is not a scope: one or more printable ASCII characters without spaces, `\"` or `\\` (RFC 6749 §3.3)"
                            ),
                        )),
                        None => problems.push(SpecProblem::new(
                            format!("scopes[{i}]"),
                            "must be a string",
                        )),
                    }
                }
            }
            Some(_) => problems.push(SpecProblem::new("scopes", "must be a list of strings")),
        }
        let audience = match map.get("audience") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            Some(_) => {
                problems.push(SpecProblem::new(
                    "audience",
                    "must be a non-empty string, or null",
                ));
                None
            }
        };
        let auth_style = match map.get("auth_style") {
            None | Some(Value::Null) => Some(AuthStyle::Basic),
            Some(Value::String(text)) if text == "basic" => Some(AuthStyle::Basic),
            Some(Value::String(text)) if text == "body" => Some(AuthStyle::Body),
            Some(other) => {
                problems.push(SpecProblem::new(
                    "auth_style",
                    format!(
                        "{other} is not an auth style: use basic (HTTP Basic, the default) or body (client_id and client_secret form fields)"
                    ),
                ));
                None
            }
        };
        if problems.is_empty()
            && let (Some(token_url), Some(auth_style)) = (token_url, auth_style)
        {
            Ok(OAuth2Spec {
                token_url,
                scopes,
                audience,
                auth_style,
            })
        } else {
            Err(problems)
        }
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// Requested scopes (sent space-joined as `scope`; none sends no `scope`).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The `audience` form field, when set.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// How the client authenticates.
    pub fn auth_style(&self) -> AuthStyle {
        self.auth_style
    }

    /// The token URL without query, as named in error messages.
    fn endpoint(&self) -> String {
        self.token_url[..url::Position::AfterPath].to_string()
    }
}

fn parse_token_url(text: &str, allow_loopback_http: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: it may hold a password.
        return Err(
            "must not contain a user name or password: the client id and secret come from the secret payload"
                .to_string(),
        );
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback_http && is_loopback(&url) => {}
        "http" if is_loopback(&url) => {
            return Err(format!(
                "`{text}` is plaintext http: use https (http to a loopback host is allowed only in tests and `dev`)"
            ));
        }
        "http" => {
            return Err(format!(
                "`{text}` is plaintext http: use https (http is allowed only for loopback hosts, in tests and `dev`)"
            ));
        }
        other => return Err(format!("scheme `{other}` is not supported: use https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    if url.fragment().is_some() {
        return Err(format!("`{text}` has a fragment (`#...`): remove it"));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The client id and secret from the secret payload `{"client_id": "...", "client_secret": "..."}`.
#[derive(Clone)]
pub struct ClientCredentials {
    client_id: String,
    client_secret: SecretString,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &format_args!("[redacted]"))
            .finish()
    }
}

impl ClientCredentials {
    /// Credentials from their parts.
    pub fn new(client_id: String, client_secret: SecretString) -> Self {
        ClientCredentials {
            client_id,
            client_secret,
        }
    }

    /// Parses the secret payload: a JSON object with non-empty string fields `client_id` and
    /// `client_secret` (other fields are ignored). Errors name the field, never a value, and
    /// never quote the payload.
    pub fn from_json(payload: &[u8]) -> Result<Self, String> {
        const SHAPE: &str = r#"{"client_id": "...", "client_secret": "..."}"#;
        let value: Value = serde_json::from_slice(payload)
            .map_err(|_| format!("the secret payload is not JSON: expected {SHAPE}"))?;
        let Value::Object(map) = value else {
            return Err(format!(
                "the secret payload is not a JSON object: expected {SHAPE}"
            ));
        };
        let field = |name: &str| match map.get(name) {
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(Value::String(_)) => Err(format!("the secret payload's `{name}` is empty")),
            Some(_) => Err(format!("the secret payload's `{name}` is not a string")),
            None => Err(format!(
                "the secret payload has no `{name}`: expected {SHAPE}"
            )),
        };
        let client_id = field("client_id")?;
        let client_secret = SecretString::from(field("client_secret")?);
        Ok(ClientCredentials {
            client_id,
            client_secret,
        })
    }

    /// The client id (not a secret; may appear in logs).
    pub(crate) fn client_secret_text(&self) -> &str {
        self.client_secret.expose_secret()
    }

    /// The client id (not a secret).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The forms of the secret that must never appear in a message: the secret itself, its
    /// form encoding, and the Basic credentials sent with it.
    fn needles(&self) -> Vec<String> {
        let secret = self.client_secret.expose_secret();
        let encoded = form_encode(secret);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&self.client_id),
            encoded
        ));
        let mut needles = vec![secret.to_string(), encoded, basic];
        needles.retain(|n| !n.is_empty());
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles
    }
}

fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A minted access token. `Debug` never prints the value.
pub struct AccessToken {
    value: SecretString,
    authorization: HeaderValue,
    token_type: String,
    generation: u64,
    expires_at: Instant,
    stale_at: Instant,
    refresh_at: Instant,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = Instant::now();
        f.debug_struct("AccessToken")
            .field("value", &format_args!("[redacted]"))
            .field("token_type", &self.token_type)
            .field("generation", &self.generation)
            .field(
                "expires_in",
                &self.expires_at.saturating_duration_since(now),
            )
            .finish()
    }
}

impl AccessToken {
    /// The token itself.
    pub fn value(&self) -> &SecretString {
        &self.value
    }

    /// `Bearer <token>`, marked sensitive: the `Authorization` value to inject.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The `token_type` as received (`Bearer` when the response had none).
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// The generation of the client credentials it was minted with.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the token endpoint said it expires (from when the request was sent).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Whether [`TokenSource::token`] still serves it (before expiry minus the margin).
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.stale_at
    }
}

/// When a token, sent at `sent_at`, expires, stops being served, and is due for refresh.
struct Schedule {
    expires_at: Instant,
    stale_at: Instant,
    refresh_at: Instant,
}

/// Offsets from the send time: (lifetime, stop serving after, refresh after).
fn offsets(expires_in: Option<Duration>) -> (Duration, Duration, Duration) {
    let lifetime = expires_in.unwrap_or(DEFAULT_LIFETIME).min(MAX_LIFETIME);
    let margin = (lifetime / 10).min(MAX_REFRESH_MARGIN);
    (lifetime, lifetime - margin, lifetime * 4 / 5)
}

impl Schedule {
    fn new(sent_at: Instant, expires_in: Option<Duration>) -> Self {
        let (lifetime, stale_after, refresh_after) = offsets(expires_in);
        Schedule {
            expires_at: sent_at + lifetime,
            stale_at: sent_at + stale_after,
            refresh_at: sent_at + refresh_after,
        }
    }
}

/// Why no access token could be had. Messages name the endpoint, the HTTP status and the OAuth
/// error; never the client secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Connecting, TLS or the connection failed.
    #[error("token endpoint {endpoint} is unreachable: {detail}")]
    Unreachable {
        /// The token URL without query.
        endpoint: String,
        /// What failed.
        detail: String,
    },
    /// The exchange took longer than the timeout.
    #[error("token endpoint {endpoint} did not answer within {} s", .after.as_secs_f64())]
    Timeout {
        /// The token URL without query.
        endpoint: String,
        /// The timeout.
        after: Duration,
    },
    /// The endpoint refused with an OAuth error (RFC 6749 §5.2).
    #[error(
        "token endpoint {endpoint} answered HTTP {status} with OAuth error `{error}`{}",
        describe(.description)
    )]
    OAuth {
        /// The token URL without query.
        endpoint: String,
        /// HTTP status (an error in a 200 response is reported too).
        status: u16,
        /// The `error` code (printable ASCII, at most 64 characters).
        error: String,
        /// The `error_description` (printable ASCII, at most 200 characters, secret redacted).
        description: Option<String>,
    },
    /// A non-success status without an OAuth error body (a proxy, a 404, a redirect).
    #[error("token endpoint {endpoint} answered HTTP {status} without an OAuth error")]
    Http {
        /// The token URL without query.
        endpoint: String,
        /// HTTP status.
        status: u16,
    },
    /// A success status, but not a usable token response.
    #[error("token endpoint {endpoint} answered with a malformed token response: {detail}")]
    Malformed {
        /// The token URL without query.
        endpoint: String,
        /// What is wrong (never quotes the body).
        detail: String,
    },
    /// A token of a type other than bearer, which cannot be injected as `Bearer`.
    #[error(
        "token endpoint {endpoint} issued a `{token_type}` token; only bearer tokens can be injected"
    )]
    UnsupportedTokenType {
        /// The token URL without query.
        endpoint: String,
        /// The `token_type` received (printable ASCII, at most 32 characters).
        token_type: String,
    },
}

fn describe(description: &Option<String>) -> String {
    match description {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    }
}

impl TokenError {
    /// A stable code for the `credential_unavailable` message and the audit `reason`:
    /// `oauth2_` and the RFC 6749 §5.2 error (`oauth2_invalid_client`, `oauth2_invalid_scope`,
    /// ...; unregistered codes are `oauth2_error`), or `oauth2_unreachable`, `oauth2_timeout`,
    /// `oauth2_http_error`, `oauth2_malformed_response`, `oauth2_unsupported_token_type`.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Unreachable { .. } => "oauth2_unreachable",
            TokenError::Timeout { .. } => "oauth2_timeout",
            TokenError::OAuth { error, .. } => match error.as_str() {
                "invalid_request" => "oauth2_invalid_request",
                "invalid_client" => "oauth2_invalid_client",
                "invalid_grant" => "oauth2_invalid_grant",
                "unauthorized_client" => "oauth2_unauthorized_client",
                "unsupported_grant_type" => "oauth2_unsupported_grant_type",
                "invalid_scope" => "oauth2_invalid_scope",
                "invalid_target" => "oauth2_invalid_target",
                "access_denied" => "oauth2_access_denied",
                "server_error" => "oauth2_server_error",
                "temporarily_unavailable" => "oauth2_temporarily_unavailable",
                _ => "oauth2_error",
            },
            TokenError::Http { .. } => "oauth2_http_error",
            TokenError::Malformed { .. } => "oauth2_malformed_response",
            TokenError::UnsupportedTokenType { .. } => "oauth2_unsupported_token_type",
        }
    }

    /// The OAuth `error` code, when the endpoint sent one.
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            TokenError::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether trying again later may help without a config or secret change: unreachable,
    /// timeout, HTTP 5xx or 429, `server_error`, `temporarily_unavailable`.
    pub fn is_transient(&self) -> bool {
        match self {
            TokenError::Unreachable { .. } | TokenError::Timeout { .. } => true,
            TokenError::Http { status, .. } => *status >= 500 || *status == 429,
            TokenError::OAuth { status, error, .. } => {
                *status >= 500
                    || *status == 429
                    || error == "server_error"
                    || error == "temporarily_unavailable"
            }
            TokenError::Malformed { .. } | TokenError::UnsupportedTokenType { .. } => false,
        }
    }

    /// A suggested status for the `credential_unavailable` answer: 503 when
    /// [`TokenError::is_transient`] (try again later), else 502 (the token endpoint refused the
    /// credentials or answered nonsense: a configuration or secret problem on credproxy's side).
    pub fn http_status(&self) -> http::StatusCode {
        if self.is_transient() {
            http::StatusCode::SERVICE_UNAVAILABLE
        } else {
            http::StatusCode::BAD_GATEWAY
        }
    }
}

/// Keeps printable ASCII (others become `?`), removes every needle, cuts to `max` characters.
fn clean(text: &str, needles: &[String], max: usize) -> String {
    let mut text = text.to_string();
    for needle in needles {
        if text.contains(needle.as_str()) {
            text = text.replace(needle.as_str(), "[redacted]");
        }
    }
    let mut out: String = text
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push_str("...");
    }
    out
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `expires_in` as seconds: a non-negative number, or a string of digits (some endpoints).
fn parse_expires_in(value: Option<&Value>) -> Option<Option<Duration>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                Some(Some(Duration::from_secs(secs)))
            } else {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| Some(Duration::from_secs_f64(f.min(MAX_LIFETIME.as_secs_f64()))))
            }
        }
        Some(Value::String(text)) => text
            .trim()
            .parse::<u64>()
            .ok()
            .map(|secs| Some(Duration::from_secs(secs))),
        Some(_) => None,
    }
}

type MintResult = Result<Arc<AccessToken>, TokenError>;
type SharedMint = Shared<BoxFuture<'static, MintResult>>;

/// The mint in progress.
struct Flight {
    id: u64,
    generation: u64,
    result: SharedMint,
}

/// The last failed mint, served to callers until `until`.
struct Failure {
    generation: u64,
    error: TokenError,
    until: Instant,
}

#[derive(Default)]
struct State {
    flight: Option<Flight>,
    failure: Option<Failure>,
    consecutive_failures: u32,
    last_invalidation: Option<Instant>,
    next_id: u64,
}

impl State {
    /// The flight in progress, if it mints with credentials at least as new as `generation`.
    fn joinable(&self, generation: u64) -> Option<SharedMint> {
        self.flight
            .as_ref()
            .filter(|f| f.generation >= generation)
            .map(|f| f.result.clone())
    }
}

struct Inner {
    spec: OAuth2Spec,
    endpoint: String,
    http: reqwest::Client,
    timeout: Duration,
    current: ArcSwapOption<AccessToken>,
    state: Mutex<State>,
}

/// Clears the flight slot when the mint task ends, however it ends (also on panic or runtime
/// shutdown), so that a slot can never hold a flight that no one completes.
struct FlightGuard {
    inner: Arc<Inner>,
    id: u64,
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
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached token, if it is fresh and minted with credentials at least as new.
    fn fresh(&self, generation: u64) -> Option<Arc<AccessToken>> {
        self.current
            .load_full()
            .filter(|t| t.generation >= generation && t.is_fresh())
    }

    /// Starts a mint in its own task and puts it in the slot. Called with the state locked.
    fn start(
        self: &Arc<Self>,
        state: &mut State,
        creds: &Arc<ClientCredentials>,
        generation: u64,
    ) -> SharedMint {
        state.next_id += 1;
        let id = state.next_id;
        let inner = self.clone();
        let creds = creds.clone();
        let task = tokio::spawn(async move {
            let _guard = FlightGuard {
                inner: inner.clone(),
                id,
            };
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
    fn record(&self, generation: u64, result: &MintResult) {
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
    fn form(&self, creds: &ClientCredentials) -> String {
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
    fn unreachable(&self, err: reqwest::Error) -> TokenError {
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

    fn malformed(&self, detail: &str) -> TokenError {
        TokenError::Malformed {
            endpoint: self.endpoint.clone(),
            detail: detail.to_string(),
        }
    }

    fn oauth_error(
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
    inner: Arc<Inner>,
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
        let mut state = self.inner.lock();
        let is_current = self
            .inner
            .current
            .load()
            .as_ref()
            .is_some_and(|current| std::ptr::eq(Arc::as_ptr(current), token));
        if !is_current
            || state
                .last_invalidation
                .is_some_and(|t| t.elapsed() < MIN_INVALIDATION_INTERVAL)
        {
            return false;
        }
        state.last_invalidation = Some(Instant::now());
        self.inner.current.store(None);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        let mut response =
            (http::StatusCode::from_u16(status).expect("status"), body).into_response();
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
        let err =
            OAuth2Spec::from_raw(&json!({"token_url": "https://u:hunter2@a.example/t"}), true)
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
        let c = ClientCredentials::from_json(
            br#"{"client_id": "me", "client_secret": "XYZZY", "x": 1}"#,
        )
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
}
