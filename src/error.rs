//! `ProxyError`: every way credproxy itself answers a request, and the one place that knows
//! the SPEC's status table. Bodies are `{"error", "message", "request_id"}`; internal detail
//! (I/O errors, upstream error chains) goes to the log, never into the body.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::credential::CredentialError;
use crate::identity::AuthError;
use crate::inject::InjectError;
use crate::policy::PathError;
use crate::secrets::SecretError;

/// A request credproxy answers itself instead of forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// 400: malformed or non-normalised path.
    #[error("{0}")]
    BadRequest(String),
    /// 400: the caller's body broke off or is not validly framed.
    #[error("{0}")]
    BadRequestBody(String),
    /// 400: a header the caller sent cannot be used (signing covers it).
    #[error("{0}")]
    BadRequestHeader(String),
    /// 400: a form body carries a `_method` override.
    #[error("a `_method` parameter in a form body is not accepted: send the real method")]
    MethodOverride,
    /// 408: the request body paused longer than `body_idle_timeout_seconds`, or a body held
    /// in memory did not complete within `timeout_seconds`.
    #[error("the request body stalled: send it without pauses")]
    RequestTimeout,
    /// 429: the caller has `max_in_flight_per_caller` requests in flight already.
    #[error("this caller already has {0} requests in flight; retry after a moment")]
    CallerConcurrency(usize),
    /// 401: token missing or rejected.
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    /// 403: no rule allows it.
    #[error("{message}")]
    Forbidden {
        /// Says which caller, route, method and path.
        message: String,
        /// Audit reason: `forbidden`, `grant_expired`, `source_not_allowed` or `decoy`.
        reason: &'static str,
    },
    /// 404: no such route (for an authenticated caller).
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    /// 404 for reserved paths under `/_credproxy/`.
    #[error("no such endpoint")]
    NotFound,
    /// 413: body over `max_body_bytes`.
    #[error("request body is larger than this route's limit of {limit} bytes")]
    BodyTooLarge {
        /// The route's limit.
        limit: u64,
    },
    /// 502: connect or TLS failure, or the upstream broke the exchange.
    #[error("the upstream could not be reached")]
    UpstreamUnreachable,
    /// 429: over a rate limit.
    #[error("{0}")]
    RateLimited(crate::limit::Limited),
    /// 503: the credential cannot be resolved, or its value cannot be injected.
    #[error("{0}")]
    CredentialUnavailable(#[from] CredentialError),
    /// 503: shared rate limits with `on_backend_failure: closed` while Redis fails.
    #[error("the shared rate limiter is unavailable; retry after a moment")]
    RateLimiterUnavailable,
    /// 503: too many requests in flight.
    #[error("credproxy is at its limit of requests in flight; retry after a moment")]
    Overloaded,
    /// 504: no response headers within `timeout_seconds`.
    #[error("the upstream did not answer within {0} seconds")]
    UpstreamTimeout(u64),
}

impl From<SecretError> for ProxyError {
    fn from(e: SecretError) -> Self {
        ProxyError::CredentialUnavailable(CredentialError::Store(e))
    }
}

impl From<InjectError> for ProxyError {
    fn from(e: InjectError) -> Self {
        match e {
            InjectError::CallerHeader { .. } => ProxyError::BadRequestHeader(e.to_string()),
            e => ProxyError::CredentialUnavailable(CredentialError::Inject(e)),
        }
    }
}

impl From<Box<crate::policy::Denial>> for ProxyError {
    fn from(d: Box<crate::policy::Denial>) -> Self {
        ProxyError::Forbidden {
            reason: d.audit_reason(),
            message: d.to_string(),
        }
    }
}

impl From<PathError> for ProxyError {
    fn from(e: PathError) -> Self {
        ProxyError::BadRequest(e.to_string())
    }
}

impl ProxyError {
    /// HTTP status, per the SPEC's table.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::BadRequestBody(_)
            | ProxyError::BadRequestHeader(_)
            | ProxyError::MethodOverride => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::UnknownRoute(_) | ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RateLimited(_) | ProxyError::CallerConcurrency(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            ProxyError::CredentialUnavailable(_)
            | ProxyError::Overloaded
            | ProxyError::RateLimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The JSON `error` code, per the SPEC's table.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::BadRequestBody(_)
            | ProxyError::BadRequestHeader(_)
            | ProxyError::MethodOverride => "bad_request",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::Unauthenticated(_) => "unauthenticated",
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::UnknownRoute(_) => "unknown_route",
            ProxyError::NotFound => "not_found",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::RateLimited(_) | ProxyError::CallerConcurrency(_) => "rate_limited",
            ProxyError::UpstreamUnreachable => "upstream_unreachable",
            ProxyError::CredentialUnavailable(_) => "credential_unavailable",
            ProxyError::Overloaded => "overloaded",
            ProxyError::RateLimiterUnavailable => "rate_limiter_unavailable",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
        }
    }

    /// The audit `reason`: the code, refined where it helps an investigator.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Unauthenticated(e) => e.reason(),
            ProxyError::CredentialUnavailable(CredentialError::Inject(InjectError::OAuth2 {
                code,
                ..
            })) => code,
            ProxyError::Forbidden { reason, .. } => reason,
            ProxyError::BadRequestBody(_) => "bad_request_body",
            ProxyError::BadRequestHeader(_) => "bad_request_header",
            ProxyError::MethodOverride => "method_override",
            ProxyError::CallerConcurrency(_) => "caller_concurrency",
            ProxyError::RateLimited(l) => match l.scope {
                crate::limit::LimitScope::Caller => "rate_limited",
                crate::limit::LimitScope::Route => "route_rate_limited",
            },
            other => other.code(),
        }
    }

    /// The JSON error response, with `X-Request-Id` and the headers the status calls for.
    pub fn into_response_with(self, request_id: &HeaderValue) -> Response {
        let status = self.status();
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "request_id": request_id.to_str().unwrap_or_default(),
        });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(crate::headers::X_REQUEST_ID, request_id.clone());
        // Tells a client this answer is credproxy's own, not an upstream's passed through.
        headers.insert(
            crate::headers::X_CREDPROXY_ERROR,
            HeaderValue::from_static(self.code()),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ProxyError::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProxyError::Overloaded
            | ProxyError::CallerConcurrency(_)
            | ProxyError::RateLimiterUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::RateLimited(l) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(l.retry_after_seconds.max(1)),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_follow_the_spec_table() {
        let secret = CredentialError::Inject(InjectError::Empty {
            resource: "env:X".to_string(),
        });
        let cases: Vec<(ProxyError, u16, &str)> = vec![
            (ProxyError::BadRequest("x".into()), 400, "bad_request"),
            (
                ProxyError::Unauthenticated(AuthError::Missing),
                401,
                "unauthenticated",
            ),
            (
                ProxyError::Forbidden {
                    message: "m".into(),
                    reason: "forbidden",
                },
                403,
                "forbidden",
            ),
            (ProxyError::UnknownRoute("r".into()), 404, "unknown_route"),
            (ProxyError::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
            (
                ProxyError::RateLimited(crate::limit::Limited {
                    scope: crate::limit::LimitScope::Caller,
                    retry_after_seconds: 2,
                }),
                429,
                "rate_limited",
            ),
            (ProxyError::UpstreamUnreachable, 502, "upstream_unreachable"),
            (
                ProxyError::CredentialUnavailable(secret),
                503,
                "credential_unavailable",
            ),
            (ProxyError::Overloaded, 503, "overloaded"),
            (
                ProxyError::RateLimiterUnavailable,
                503,
                "rate_limiter_unavailable",
            ),
            (ProxyError::UpstreamTimeout(30), 504, "upstream_timeout"),
        ];
        let id = HeaderValue::from_static("req-1");
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            // Every answer of credproxy's own names its code in X-Credproxy-Error.
            let response = err.into_response_with(&id);
            assert_eq!(response.headers()["x-credproxy-error"], code);
        }
    }

    #[test]
    fn unauthenticated_carries_www_authenticate_and_request_id() {
        let id = HeaderValue::from_static("req-1");
        let r = ProxyError::Unauthenticated(AuthError::Expired).into_response_with(&id);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(r.headers()["x-request-id"], "req-1");
        assert_eq!(
            ProxyError::Unauthenticated(AuthError::Expired).reason(),
            "token_expired"
        );
    }
}
