//! A minted access token, its schedule (expiry, serve-until, refresh-ahead) and why a mint
//! failed ([`TokenError`]), with the token endpoint's answer parsed and cleaned.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;
use secrecy::SecretString;
use serde_json::Value;
use tokio::time::Instant;

use super::*;

/// A minted access token. `Debug` never prints the value.
pub struct AccessToken {
    pub(super) value: SecretString,
    pub(super) authorization: HeaderValue,
    pub(super) token_type: String,
    pub(super) generation: u64,
    pub(super) expires_at: Instant,
    pub(super) stale_at: Instant,
    pub(super) refresh_at: Instant,
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
pub(super) struct Schedule {
    pub(super) expires_at: Instant,
    pub(super) stale_at: Instant,
    pub(super) refresh_at: Instant,
}

/// Offsets from the send time: (lifetime, stop serving after, refresh after).
pub(super) fn offsets(expires_in: Option<Duration>) -> (Duration, Duration, Duration) {
    let lifetime = expires_in.unwrap_or(DEFAULT_LIFETIME).min(MAX_LIFETIME);
    let margin = (lifetime / 10).min(MAX_REFRESH_MARGIN);
    (lifetime, lifetime - margin, lifetime * 4 / 5)
}

impl Schedule {
    pub(super) fn new(sent_at: Instant, expires_in: Option<Duration>) -> Self {
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

pub(super) fn describe(description: &Option<String>) -> String {
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
pub(super) fn clean(text: &str, needles: &[String], max: usize) -> String {
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

pub(super) fn is_json(content_type: &str) -> bool {
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
pub(super) fn parse_expires_in(value: Option<&Value>) -> Option<Option<Duration>> {
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
