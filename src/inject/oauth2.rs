//! OAuth2 client-credentials access tokens (RFC 6749 §4.4) for
//! `inject.oauth2_client_credentials`.
//!
//! A route with this injection keeps a long-lived client id and secret (the secret payload
//! `{"client_id": "...", "client_secret": "..."}`) and injects a short-lived access token minted
//! from them: `Authorization: Bearer <access token>`. The pipeline never sees either.
//!
//! - [`RawOAuth2`], [`OAuth2Spec`]: the config mapping `{ token_url, scopes, audience,
//!   auth_style }` as written and validated.
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

mod source;
mod token;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

pub use super::SpecProblem;
use super::{Prepared, keep};
pub use source::{TokenSource, Unauthorized};
pub use token::{AccessToken, TokenError};

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
/// At most one token request per route per this interval, whatever `expires_in` says.
pub const MIN_MINT_INTERVAL: Duration = Duration::from_secs(1);

/// First hold of a failed mint; doubles per consecutive failure up to [`FAILURE_HOLD_MAX`].
const FAILURE_HOLD_MIN: Duration = Duration::from_secs(1);
const FAILURE_HOLD_MAX: Duration = Duration::from_secs(30);
/// Largest token response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const MAX_DESCRIPTION_CHARS: usize = 200;
const MAX_ERROR_CODE_CHARS: usize = 64;
/// The keys of the `oauth2_client_credentials` mapping (the fields of [`RawOAuth2`]).
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

/// The validated `inject.oauth2_client_credentials` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Spec {
    token_url: Url,
    scopes: Vec<String>,
    audience: Option<String>,
    auth_style: AuthStyle,
}

/// `inject.oauth2_client_credentials` as written; [`OAuth2Spec::validate`] checks it.
/// Unknown keys are left to the config loader, which reports each with its key path and line.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping: { token_url, scopes, audience, auth_style }")]
pub struct RawOAuth2 {
    token_url: Option<String>,
    scopes: Option<Vec<String>>,
    audience: Option<String>,
    auth_style: Option<String>,
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

    /// Parses the mapping given as JSON (as a config block would be), for tests and tools,
    /// and reports every problem with its key: each unknown key, a value of the wrong type,
    /// then what [`OAuth2Spec::validate`] finds.
    pub fn parse(raw: &Value, allow_loopback_http: bool) -> Result<Self, Vec<SpecProblem>> {
        super::parse_value(
            raw,
            |key| SpecProblem::new(key, format!("unknown key: expected {}", KEYS.join(", "))),
            |key| SpecProblem::new(key, type_message(key)),
            |raw| Self::validate(raw, allow_loopback_http),
        )
    }

    /// Validates the block and reports every problem with its key below it:
    ///
    /// - `token_url` (required): https; plain http only when `allow_loopback_http` and the host
    ///   is loopback (`localhost`, `127.0.0.0/8`, `::1`); no user info, no fragment.
    /// - `scopes` (optional, default none): a list of RFC 6749 §3.3 scope tokens.
    /// - `audience` (optional, null allowed): a non-empty string, sent as the `audience` field.
    /// - `auth_style` (optional, null allowed): `basic` (default) or `body`.
    pub fn validate(raw: RawOAuth2, allow_loopback_http: bool) -> Result<Self, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        let token_url = match &raw.token_url {
            None => Err(SpecProblem::new(
                "token_url",
                "is required: the https URL of the token endpoint",
            )),
            Some(text) => parse_token_url(text, allow_loopback_http)
                .map_err(|message| SpecProblem::new("token_url", message)),
        };
        let token_url = keep(&mut problems, token_url);
        let mut scopes = Vec::new();
        for (i, scope) in raw.scopes.into_iter().flatten().enumerate() {
            if is_scope_token(&scope) {
                scopes.push(scope);
            } else {
                problems.push(SpecProblem::new(
                    format!("scopes[{i}]"),
                    format!(
                        "`{scope}` is not a scope: one or more printable ASCII characters without spaces, `\"` or `\\` (RFC 6749 §3.3)"
                    ),
                ));
            }
        }
        let audience = match raw.audience {
            Some(text) if text.is_empty() => {
                problems.push(SpecProblem::new("audience", type_message("audience")));
                None
            }
            audience => audience,
        };
        let auth_style = match raw.auth_style.as_deref() {
            None | Some("basic") => Ok(AuthStyle::Basic),
            Some("body") => Ok(AuthStyle::Body),
            Some(other) => Err(SpecProblem::new(
                "auth_style",
                format!(
                    "{} is not an auth style: use basic (HTTP Basic, the default) or body (client_id and client_secret form fields)",
                    Value::from(other)
                ),
            )),
        };
        let auth_style = keep(&mut problems, auth_style);
        match (token_url, auth_style) {
            (Some(token_url), Some(auth_style)) if problems.is_empty() => Ok(OAuth2Spec {
                token_url,
                scopes,
                audience,
                auth_style,
            }),
            _ => Err(problems),
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

/// What a value of the wrong type at `key` (below the block; empty for the block) should be.
fn type_message(key: &str) -> String {
    match key {
        "" => "must be a mapping: { token_url, scopes, audience, auth_style }",
        "token_url" => "must be a string: the https URL of the token endpoint",
        "scopes" => "must be a list of strings",
        "audience" => "must be a non-empty string, or null",
        "auth_style" => "must be a string: basic (HTTP Basic, the default) or body (client_id and client_secret form fields)",
        _ => "must be a string",
    }
    .to_string()
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

/// The prepared form of an OAuth2 route's secret: the parsed client credentials, and the
/// client secret (a form of the secret to scrub from responses).
pub fn prepare(value: &str) -> Result<(Prepared, String), String> {
    let credentials = ClientCredentials::from_json(value.as_bytes())?;
    let secret = credentials.client_secret_text().to_string();
    Ok((
        Prepared::OAuth2 {
            credentials: Arc::new(credentials),
        },
        secret,
    ))
}

/// An OAuth2 access token to inject, with its scrub needles.
pub struct Minted {
    /// The token.
    pub token: Arc<AccessToken>,
    /// Its value and encodings, for scrubbing responses.
    pub scrub: Option<Arc<crate::scrub::Needles>>,
}

impl Minted {
    /// A token and the forms of it to scrub (every form of [`crate::scrub::forms`]).
    pub fn new(token: Arc<AccessToken>) -> Self {
        let scrub = crate::scrub::Needles::for_secrets(&[token.value().expose_secret().as_bytes()])
            .map(Arc::new);
        Minted { token, scrub }
    }

    /// Sets `Authorization: Bearer <token>`, replacing any caller copy.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        headers.insert(
            http::header::AUTHORIZATION,
            self.token.authorization().clone(),
        );
    }
}

#[cfg(test)]
mod tests;
