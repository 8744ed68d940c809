//! rewrite: the request as it goes upstream. The body plan (streamed, held for signing, or
//! held for one replay), the upstream URL (route origin + normalised path + cleaned query +
//! injected pair), the caller's headers cleaned, then the route's and the credential's.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use percent_encoding::percent_decode_str;

use super::body::{CallerBody, Fault};
use super::{OutBody, Outgoing, REPLAY_LIMIT};
use crate::config::RouteSpec;
use crate::credential::Resolved;
use crate::error::ProxyError;
use crate::headers::{X_REQUEST_ID, connection_tokens, is_protected_request_header};
use crate::inject::oauth2::Minted;
use crate::policy::Target;

/// The body as it will go upstream, with what must live as long as the request.
pub struct BodyPlan {
    /// The body to send first.
    pub body: OutBody,
    /// A copy for one replay after an upstream 401: no body, or one held in memory of at
    /// most [`REPLAY_LIMIT`].
    pub replay: Option<Bytes>,
    /// The share of the body budget a held body takes.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// What went wrong with the caller's body (read late when it streams).
    pub fault: Fault,
}

/// How the body goes upstream: held whole (up to `max_body_bytes`, within the shared
/// `budget` of KiB, else 503 `overloaded`) when the credential signs it; held when small and
/// a 401 may be replayed (`replays`); streamed otherwise.
pub async fn body_plan(
    route: &RouteSpec,
    caller: &HeaderMap,
    replays: bool,
    budget: &Arc<tokio::sync::Semaphore>,
    idle: std::time::Duration,
    body: Body,
) -> Result<BodyPlan, ProxyError> {
    let mut permit = None;
    let fault = Fault::default();
    // Nothing to watch on a request without a body (every GET): no wrapper, no timer.
    let body = if http_body::Body::is_end_stream(&body) {
        body
    } else {
        CallerBody::wrap(body, idle, fault.clone())
    };
    // A form body is read whole, to refuse a `_method` override hidden in it.
    let form = !http_body::Body::is_end_stream(&body) && is_form(caller);
    let body = if route.credential.inject.needs_body() || form {
        let expected = http_body::Body::size_hint(&body)
            .exact()
            .unwrap_or(route.max_body_bytes)
            .min(route.max_body_bytes);
        let kib = u32::try_from(expected.div_ceil(1024)).unwrap_or(u32::MAX);
        permit = Some(
            budget
                .clone()
                .try_acquire_many_owned(kib)
                .map_err(|_| ProxyError::Overloaded)?,
        );
        held(route, &fault, buffered(body, route.max_body_bytes)).await?
    } else if replays {
        held(route, &fault, replayable(body, route.max_body_bytes)).await?
    } else {
        OutBody::Stream(body)
    };
    if form
        && let OutBody::Full(bytes) = &body
        && overrides_method(bytes)
    {
        return Err(ProxyError::MethodOverride);
    }
    let replay = match &body {
        OutBody::Full(bytes) if bytes.len() as u64 <= REPLAY_LIMIT => Some(bytes.clone()),
        _ => None,
    };
    Ok(BodyPlan {
        body,
        replay,
        permit,
        fault,
    })
}

/// Whether the caller sent an `application/x-www-form-urlencoded` body.
fn is_form(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().split(|b| *b == b';').next().is_some_and(|t| {
            t.trim_ascii()
                .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        })
    })
}

/// Whether a form body carries a method-override parameter (names compared after decoding,
/// in any case, `name[...]` forms included), which frameworks would act on in place of the
/// method policy judged.
fn overrides_method(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).split(['&', ';']).any(|pair| {
        METHOD_OVERRIDE_PARAMS
            .iter()
            .any(|m| pair_is_named(pair, m))
    })
}

/// A body being held in memory: it must arrive within the route's `timeout_seconds`, and a
/// failure of the caller's body is the caller's fault (408 or 400).
async fn held(
    route: &RouteSpec,
    fault: &Fault,
    reading: impl std::future::Future<Output = Result<OutBody, ProxyError>>,
) -> Result<OutBody, ProxyError> {
    match tokio::time::timeout(route.timeout, reading).await {
        Err(_) => Err(ProxyError::RequestTimeout),
        Ok(result) => result.map_err(|err| fault.error().unwrap_or(err)),
    }
}

/// What the upstream request is made of, computed once so a replay rebuilds it with another
/// credential value.
pub struct Rewrite<'a> {
    parts: &'a Parts,
    route: &'a RouteSpec,
    upstream_path: &'a str,
    query: Option<Cow<'a, str>>,
}

impl<'a> Rewrite<'a> {
    /// The request `parts` to `route` at `target`, with the caller's query cleaned for
    /// `resolved`'s kind.
    pub fn new(
        parts: &'a Parts,
        route: &'a RouteSpec,
        target: &'a Target<'_>,
        resolved: &Resolved,
    ) -> Self {
        Rewrite {
            parts,
            route,
            upstream_path: &target.upstream_path,
            query: caller_query(parts.uri.query(), resolved),
        }
    }

    /// The caller's query as forwarded (and audited).
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The request to send with `resolved` (and `minted`, for OAuth2 routes): URL, headers,
    /// credential, signature.
    pub fn outgoing(
        &self,
        resolved: &Resolved,
        minted: Option<&Minted>,
        body: OutBody,
        fault: &Fault,
        request_id: &HeaderValue,
    ) -> Result<Outgoing, ProxyError> {
        let mut out = Outgoing {
            method: self.parts.method.clone(),
            uri: upstream_url(self.route, self.upstream_path, self.query(), resolved)?,
            headers: upstream_headers(&self.parts.headers, self.route, resolved, request_id),
            caller_sent_length: self.parts.headers.contains_key(header::CONTENT_LENGTH),
            body,
            fault: fault.clone(),
        };
        if let Some(minted) = minted {
            minted.apply(&mut out.headers);
        }
        sign(self.route, resolved, &mut out)?;
        Ok(out)
    }
}

/// The headers sent upstream: the caller's, cleaned, then the route's `set`, then the
/// credential.
pub fn upstream_headers(
    caller: &HeaderMap,
    route: &RouteSpec,
    resolved: &Resolved,
    request_id: &HeaderValue,
) -> HeaderMap {
    let named = if caller.contains_key(header::CONNECTION) {
        connection_tokens(caller)
    } else {
        Vec::new()
    };
    let mut out = HeaderMap::with_capacity(caller.len() + 2);
    for (name, value) in caller {
        if is_protected_request_header(name)
            || route.request_headers_remove.contains(name)
            || named.iter().any(|t| t == name.as_str())
            || (route.scrub_responses && is_range_header(name))
            || (name.as_str().contains('_') && spells_injected(name, route))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    for (name, value) in &route.request_headers_set {
        out.insert(name.clone(), value.clone());
    }
    out.insert(X_REQUEST_ID, request_id.clone());
    if route.scrub_responses {
        // A compressed body cannot be scrubbed: ask for the identity encoding.
        out.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    // Last, replacing every same-named header, whatever case the caller used.
    resolved.injection.apply_header(&mut out);
    out
}

/// `Range` and `If-Range`: on a scrubbing route a partial response could hand the value out
/// in slices shorter than any needle, so the caller gets whole responses only.
fn is_range_header(name: &http::HeaderName) -> bool {
    name == header::RANGE || name == header::IF_RANGE
}

/// Whether `name`, with every `_` read as `-`, is the injected header's name: some servers
/// (CGI, PHP, nginx with underscores_in_headers) read `X_Api_Key` as `X-Api-Key`.
fn spells_injected(name: &http::HeaderName, route: &RouteSpec) -> bool {
    route
        .credential
        .inject
        .owned_header()
        .is_some_and(|injected| {
            name.as_str().len() == injected.as_str().len()
                && name
                    .as_str()
                    .bytes()
                    .zip(injected.as_str().bytes())
                    .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
        })
}

/// Whether a `name[=value]` query pair could be read as parameter `wanted` by some server:
/// names compared after percent- and `+`-decoding, ASCII case-insensitively, and with
/// `name[...]` array forms included.
fn pair_is_named(pair: &str, wanted: &str) -> bool {
    let raw = pair.split('=').next().unwrap_or_default();
    let decoded;
    let name = if raw.contains(['%', '+']) {
        decoded = percent_decode_str(&raw.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        decoded.as_str()
    } else {
        raw
    };
    let base = name.split('[').next().unwrap_or_default();
    base.eq_ignore_ascii_case(wanted)
}

/// Query parameters that make some frameworks (Rails, Laravel, Symfony) treat a POST as
/// another method: policy judges the real method, so they never reach the upstream.
const METHOD_OVERRIDE_PARAMS: [&str; 1] = ["_method"];

/// The caller's query without any parameter named like the injected one (for query
/// injection) or like a method override. `;` counts as a separator too, as some parsers
/// read it so. This is also the query recorded in audit entries.
pub fn caller_query<'a>(query: Option<&'a str>, resolved: &Resolved) -> Option<Cow<'a, str>> {
    let query = query.filter(|q| !q.is_empty())?;
    let injected = resolved.injection.query_name();
    let dropped = |pair: &str| {
        injected.is_some_and(|name| pair_is_named(pair, name))
            || METHOD_OVERRIDE_PARAMS
                .iter()
                .any(|m| pair_is_named(pair, m))
    };
    if !query.split(['&', ';']).any(dropped) {
        return Some(Cow::Borrowed(query));
    }
    let kept: Vec<&str> = query
        .split(['&', ';'])
        .filter(|p| !p.is_empty() && !dropped(p))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(Cow::Owned(kept.join("&")))
    }
}

/// Builds the upstream URL from the route's origin and base path, the normalised path and
/// the cleaned query plus the injected parameter. The host can never differ from the
/// route's: the scheme and authority are the route's own, parsed at load, and the request
/// contributes only the path and query (which must start with `/`).
pub fn upstream_url(
    route: &RouteSpec,
    upstream_path: &str,
    query: Option<&str>,
    resolved: &Resolved,
) -> Result<http::Uri, ProxyError> {
    let up = &route.upstream;
    let injected = resolved.injection.query_pair();
    let mut target = String::with_capacity(
        up.base_path.len()
            + upstream_path.len()
            + query.map_or(0, |q| q.len() + 1)
            + injected.map_or(0, |p| p.len() + 1),
    );
    target.push_str(&up.base_path);
    target.push_str(upstream_path);
    let mut separator = '?';
    for part in [query, injected].into_iter().flatten() {
        target.push(separator);
        target.push_str(part);
        separator = '&';
    }
    let invalid = || {
        ProxyError::BadRequest("the request target does not make a valid upstream URL".to_string())
    };
    if !target.starts_with('/') {
        return Err(invalid());
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(up.scheme.clone());
    parts.authority = Some(up.authority.clone());
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(target).map_err(|_| invalid())?);
    http::Uri::from_parts(parts).map_err(|_| invalid())
}

/// Reads the whole body (for signing), refusing more than `max_body_bytes` with 413.
pub async fn buffered(body: Body, max_body_bytes: u64) -> Result<OutBody, ProxyError> {
    use http_body_util::BodyExt as _;
    if http_body::Body::size_hint(&body)
        .exact()
        .is_some_and(|len| len > max_body_bytes)
    {
        return Err(ProxyError::BodyTooLarge {
            limit: max_body_bytes,
        });
    }
    let limit = usize::try_from(max_body_bytes).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(OutBody::Full(collected.to_bytes())),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(ProxyError::BodyTooLarge {
            limit: max_body_bytes,
        }),
        Err(_) => Err(ProxyError::BadRequestBody(
            "the request body could not be read".to_string(),
        )),
    }
}

/// Adds the request signature of `hmac` and `aws_sigv4` routes, over the request exactly
/// as it goes upstream (final URL, headers and body). Same-named caller headers are
/// replaced.
pub fn sign(route: &RouteSpec, resolved: &Resolved, out: &mut Outgoing) -> Result<(), ProxyError> {
    let body: &[u8] = match &out.body {
        OutBody::Full(bytes) => bytes,
        OutBody::Stream(_) => &[],
    };
    let request = crate::inject::Signable {
        method: &out.method,
        uri: &mut out.uri,
        headers: &mut out.headers,
        body,
    };
    crate::inject::sign(&route.credential, &resolved.injection, request)?;
    Ok(())
}

/// Holds a small body in memory so the request can be replayed; larger or chunked bodies of
/// unknown length keep streaming. Bodies over the route's limit are refused here.
pub async fn replayable(body: Body, max_body_bytes: u64) -> Result<OutBody, ProxyError> {
    let declared = http_body::Body::size_hint(&body).exact();
    match declared {
        Some(len) if len > max_body_bytes => Err(ProxyError::BodyTooLarge {
            limit: max_body_bytes,
        }),
        Some(len) if len <= REPLAY_LIMIT => {
            use http_body_util::BodyExt as _;
            let bytes = http_body_util::Limited::new(body, len as usize)
                .collect()
                .await
                .map_err(|_| {
                    ProxyError::BadRequestBody("the request body could not be read".to_string())
                })?
                .to_bytes();
            Ok(OutBody::Full(bytes))
        }
        _ => Ok(OutBody::Stream(body)),
    }
}
