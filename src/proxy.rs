//! Rewrite and forward: header hygiene, credential injection, and the streaming exchange
//! with the upstream.
//!
//! What the caller sent is never trusted to reach the upstream as is: its credentials
//! (`Authorization`, `X-Serverless-Authorization`, `Cookie`), proxy and hop-by-hop headers
//! (and any named in `Connection`), method overrides, forwarding headers, and any header or
//! query parameter of the injected credential's name are dropped first; the credential is
//! added last, so nothing can override it. Bodies stream both ways; a request body over the
//! route's limit aborts the upstream request.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, header};
use percent_encoding::percent_decode_str;
use secrecy::ExposeSecret;

use crate::config::RouteSpec;
use crate::error::ProxyError;
use crate::headers::{
    X_REQUEST_ID, connection_tokens, is_hop_by_hop_or_framing, is_protected_request_header,
};
use crate::scrub::ScrubStream;
use crate::secrets::{Prepared, Resolved};
use crate::telemetry::error_chain;
use crate::upstream::{UpstreamBody, UpstreamClient};

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
    if let Prepared::Header { name, value } = &resolved.injection {
        // `insert` replaces every same-named header, whatever case the caller used.
        out.insert(name.clone(), value.clone());
    }
    out
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
    let injected = match &resolved.injection {
        Prepared::Query { name, .. } => Some(name.as_str()),
        _ => None,
    };
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
/// route's: the request contributes only path segments and a query.
pub fn upstream_url(
    route: &RouteSpec,
    upstream_path: &str,
    query: Option<&str>,
    resolved: &Resolved,
) -> Result<http::Uri, ProxyError> {
    let up = &route.upstream;
    let injected = match &resolved.injection {
        Prepared::Query { pair, .. } => Some(pair.expose_secret()),
        _ => None,
    };
    let mut url = String::with_capacity(
        up.origin.len()
            + up.base_path.len()
            + upstream_path.len()
            + query.map_or(0, |q| q.len() + 1)
            + injected.map_or(0, |p| p.len() + 1),
    );
    url.push_str(&up.origin);
    url.push_str(&up.base_path);
    url.push_str(upstream_path);
    let mut separator = '?';
    for part in [query, injected].into_iter().flatten() {
        url.push(separator);
        url.push_str(part);
        separator = '&';
    }
    let uri = http::Uri::try_from(url).map_err(|_| {
        ProxyError::BadRequest("the request target does not make a valid upstream URL".to_string())
    })?;
    let port = uri.port_u16().or_else(|| match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    });
    if uri.host() != Some(up.host.as_str()) || port != Some(up.port) {
        return Err(ProxyError::BadRequest(
            "the request would leave the route's upstream".to_string(),
        ));
    }
    Ok(uri)
}

/// The request as it goes upstream.
pub struct Outgoing {
    /// Method (policy judged this one).
    pub method: Method,
    /// Built by [`upstream_url`].
    pub uri: http::Uri,
    /// Built by [`upstream_headers`].
    pub headers: HeaderMap,
    /// Whether the caller declared a `Content-Length` (kept even when 0).
    pub caller_sent_length: bool,
    /// The caller's body.
    pub body: OutBody,
}

/// A request body on its way upstream.
pub enum OutBody {
    /// Streamed as it arrives (not replayable).
    Stream(Body),
    /// Held in memory (small bodies of routes whose credential can rotate), so the request
    /// can be replayed once after an upstream 401.
    Full(Bytes),
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
        Err(_) => Err(ProxyError::BadRequest(
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
    let failed = |detail: String| {
        ProxyError::CredentialUnavailable(crate::secrets::SecretError::Unavailable {
            resource: route.credential.secret.resource(),
            detail: format!("cannot sign the request: {detail}"),
        })
    };
    let now = std::time::SystemTime::now();
    match (&route.credential.inject, &resolved.injection) {
        (crate::config::Injection::Hmac(spec), Prepared::Hmac { key }) => {
            let parts = crate::signing::RequestParts {
                method: out.method.as_str(),
                path: out.uri.path(),
                query: out.uri.query(),
                timestamp: crate::signing::unix_seconds(now),
                body,
            };
            let headers = spec.sign(key.expose_secret(), &parts).map_err(failed)?;
            for (name, value) in headers {
                out.headers.insert(name, value);
            }
        }
        (crate::config::Injection::AwsSigV4(spec), Prepared::AwsSigV4 { credentials }) => {
            if !body.is_empty() {
                out.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            let url = url::Url::parse(&out.uri.to_string())
                .map_err(|err| failed(format!("the upstream URL does not parse: {err}")))?;
            let request = crate::signing::SigV4Request {
                method: out.method.as_str(),
                url: &url,
                headers: &out.headers,
                payload: crate::signing::SigV4Payload::Bytes(body),
            };
            let headers =
                crate::signing::sigv4_sign(spec, credentials, &request, now).map_err(failed)?;
            for (name, value) in headers {
                out.headers.insert(name, value);
            }
            // Send exactly the target that was signed: the URL form percent-encodes a few
            // characters (`"`, `{`, `}`, `'`) the raw URI keeps.
            out.uri = http::Uri::try_from(url.as_str())
                .map_err(|_| failed("the signed URL is not a valid URI".to_string()))?;
        }
        _ => {}
    }
    Ok(())
}

/// Largest body held for a replay after an upstream 401.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

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
                    ProxyError::BadRequest("the request body could not be read".to_string())
                })?
                .to_bytes();
            Ok(OutBody::Full(bytes))
        }
        _ => Ok(OutBody::Stream(body)),
    }
}

/// Sends the request upstream and streams the response back, scrubbing the credential from
/// the response when the route asks for it (counting scrubs into `scrubbed`).
pub async fn forward(
    client: &UpstreamClient,
    route: &RouteSpec,
    outgoing: Outgoing,
    needles: Option<&Arc<crate::scrub::Needles>>,
    request_id: &HeaderValue,
    scrubbed: &Arc<AtomicU64>,
) -> Result<axum::response::Response, ProxyError> {
    let Outgoing {
        method,
        uri,
        mut headers,
        caller_sent_length,
        body,
    } = outgoing;
    // The framing hyper decoded (chunked wins over Content-Length), not the caller's header.
    let declared = match &body {
        OutBody::Stream(body) => http_body::Body::size_hint(body).exact(),
        OutBody::Full(bytes) => Some(bytes.len() as u64),
    };
    if declared.is_some_and(|len| len > route.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge {
            limit: route.max_body_bytes,
        });
    }
    if let Some(len) = declared.filter(|len| *len > 0 || caller_sent_length) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let upstream_body = match body {
        OutBody::Full(bytes) => UpstreamBody::Full(Some(bytes)),
        OutBody::Stream(body) if http_body::Body::is_end_stream(&body) || declared == Some(0) => {
            UpstreamBody::empty()
        }
        OutBody::Stream(body) => UpstreamBody::Stream {
            inner: body,
            seen: 0,
            limit: route.max_body_bytes,
            exceeded: exceeded.clone(),
        },
    };
    let is_head = method == Method::HEAD;
    let mut request = http::Request::new(upstream_body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let response = match tokio::time::timeout(route.timeout, client.request(request)).await {
        Err(_) => return Err(ProxyError::UpstreamTimeout(route.timeout.as_secs())),
        Ok(Err(err)) => {
            if exceeded.load(Ordering::Acquire) {
                return Err(ProxyError::BodyTooLarge {
                    limit: route.max_body_bytes,
                });
            }
            // hyper's errors name no URL (which may carry an injected query credential).
            tracing::warn!(route = %route.name, error = %error_chain(&err), "upstream request failed");
            return Err(ProxyError::UpstreamUnreachable);
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if needles.is_some()
        && response
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        // Asked for identity and got a compressed body anyway: it cannot be checked for the
        // credential, so it is not passed on (fail closed).
        tracing::warn!(route = %route.name, "upstream sent a compressed body although asked for identity; refused because it cannot be scrubbed");
        return Err(ProxyError::UpstreamUnreachable);
    }
    let mut out_headers = HeaderMap::with_capacity(response.headers().len() + 1);
    let named = connection_tokens(response.headers());
    for (name, value) in response.headers() {
        if is_hop_by_hop_or_framing(name) && name != header::CONTENT_LENGTH
            || route.response_headers_remove.contains(name)
            || named.iter().any(|t| t == name.as_str())
        {
            continue;
        }
        match needles.and_then(|n| n.header_value(value)) {
            Some((clean, count)) => {
                scrubbed.fetch_add(count, Ordering::Relaxed);
                out_headers.append(name.clone(), clean);
            }
            None => {
                out_headers.append(name.clone(), value.clone());
            }
        }
    }
    out_headers.insert(X_REQUEST_ID, request_id.clone());
    let stream = IdleTimeout::new(
        http_body_util::BodyDataStream::new(response.into_body()),
        route.idle_timeout,
    );
    let body = match needles {
        Some(needles) => {
            // Scrubbing may change the length; a HEAD answer has no body to change.
            if !is_head {
                out_headers.remove(header::CONTENT_LENGTH);
            }
            Body::from_stream(ScrubStream::new(stream, needles.clone(), scrubbed.clone()))
        }
        None => Body::from_stream(stream),
    };
    let mut out = axum::response::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    Ok(out)
}

/// A response body stream that fails when no byte arrives for `idle`: a long download that
/// keeps flowing is never cut, a stalled one is.
///
/// The timer starts only when the body has to wait (a small response that is already
/// buffered never registers one), and restarts at the first wait after each chunk.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `sleep` counts from the current wait (false after a chunk arrived).
    armed: bool,
    done: bool,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            sleep: None,
            armed: false,
            done: false,
        }
    }
}

impl<S, E> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                self.armed = false;
                Poll::Ready(Some(item.map_err(io::Error::other)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let this = &mut *self;
                let deadline = || tokio::time::Instant::now() + this.idle;
                match &mut this.sleep {
                    None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline()))),
                    Some(sleep) if !this.armed => sleep.as_mut().reset(deadline()),
                    Some(_) => {}
                }
                this.armed = true;
                let Some(sleep) = this.sleep.as_mut() else {
                    return Poll::Pending;
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.done = true;
                        tracing::warn!(
                            idle_seconds = this.idle.as_secs(),
                            "upstream response body stalled; cut"
                        );
                        Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "upstream response body idle timeout",
                        ))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CredentialSpec, Injection, Upstream};
    use crate::secrets::{SecretRef, prepare};
    use http::HeaderName;

    fn route(inject: Injection) -> (RouteSpec, Resolved) {
        route_with_secret(inject, b"s3cr3t")
    }

    fn route_with_secret(inject: Injection, secret: &[u8]) -> (RouteSpec, Resolved) {
        let credential = CredentialSpec {
            secret: SecretRef::Env("K".to_string()),
            field: None,
            inject,
        };
        let resolved = prepare(&credential, secret, None).expect("prepare");
        let spec = RouteSpec {
            name: "r".to_string(),
            upstream: Upstream {
                origin: "https://api.example.com".to_string(),
                base_path: "/base".to_string(),
                host: "api.example.com".to_string(),
                port: 443,
            },
            credential,
            allow: vec![],
            request_headers_set: vec![(
                HeaderName::from_static("x-api-version"),
                HeaderValue::from_static("2024"),
            )],
            request_headers_remove: vec![HeaderName::from_static("x-debug")],
            response_headers_remove: vec![],
            timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: 100,
            scrub_responses: true,
            source_ranges: None,
            upstream_tls: None,
            rate_limit: None,
            route_rate_limit: None,
        };
        (spec, resolved)
    }

    fn header_inject(name: &'static str) -> Injection {
        Injection::Header {
            name: HeaderName::from_static(name),
            format: "Key {secret}".to_string(),
        }
    }

    #[test]
    fn drops_caller_credentials_hop_by_hop_and_connection_named_headers() {
        let (spec, resolved) = route(header_inject("x-api-key"));
        let mut caller = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer caller-token"),
            ("x-serverless-authorization", "Bearer caller-token"),
            ("cookie", "session=1"),
            ("proxy-authorization", "Basic x"),
            ("connection", "close, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-http-method-override", "DELETE"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-debug", "1"),
            ("X-API-KEY", "caller-chosen"),
            ("x-api-version", "1999"),
            ("accept", "application/json"),
        ] {
            caller.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_static(v),
            );
        }
        let out = upstream_headers(&caller, &spec, &resolved, &HeaderValue::from_static("id1"));
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(
            out["accept-encoding"], "identity",
            "scrubbing routes ask for identity"
        );
        assert_eq!(out["accept"], "application/json");
        assert_eq!(out["x-api-version"], "2024");
        assert_eq!(out["x-request-id"], "id1");
        assert_eq!(out.get_all("x-api-key").iter().count(), 1);
        assert_eq!(out["x-api-key"], "Key s3cr3t");
    }

    #[test]
    fn removes_caller_query_parameters_named_like_the_injected_one() {
        let (spec, resolved) = route(Injection::Query {
            name: "api_key".to_string(),
        });
        for (q, want) in [
            ("a=1&api_key=mine&b=2", Some("a=1&b=2")),
            ("api%5Fkey=mine", None),
            ("API_KEY=other-case&x", Some("x")),
            ("api_key", None),
            ("a=1", Some("a=1")),
            ("a=1;api_key=mine&b", Some("a=1&b")),
            ("api_key%5B%5D=x&api_key[0]=y&c", Some("c")),
            ("_method=DELETE&a=1", Some("a=1")),
        ] {
            assert_eq!(caller_query(Some(q), &resolved).as_deref(), want, "{q}");
        }
        let url = upstream_url(&spec, "/v1/x", Some("a=1"), &resolved).expect("url");
        assert_eq!(
            url.to_string(),
            "https://api.example.com/base/v1/x?a=1&api_key=s3cr3t"
        );
        let url = upstream_url(&spec, "/v1/x", None, &resolved).expect("url");
        assert_eq!(
            url.to_string(),
            "https://api.example.com/base/v1/x?api_key=s3cr3t"
        );
    }

    #[test]
    fn the_upstream_host_never_changes() {
        let (spec, resolved) = route(header_inject("x-api-key"));
        for path in ["/@evil.example/x", "/x", "/.evil.example", "/:8443/x"] {
            let url = upstream_url(&spec, path, None, &resolved).expect("url");
            assert_eq!(url.host(), Some("api.example.com"), "{path}");
            assert_eq!(url.port_u16(), None, "{path}");
            assert_eq!(url.path(), format!("/base{path}"));
        }
        let url =
            upstream_url(&spec, "/x", Some("u=http://evil.example/"), &resolved).expect("url");
        assert_eq!(url.host(), Some("api.example.com"));
        // Something that is no path at all never becomes a URL.
        assert!(upstream_url(&spec, "x y", None, &resolved).is_err());
    }

    #[test]
    fn aws_sigv4_sends_exactly_the_target_it_signed() {
        let spec = crate::signing::AwsSigV4Spec::new("execute-api", "eu-west-1").expect("spec");
        let (route, resolved) = route_with_secret(
            Injection::AwsSigV4(spec),
            br#"{"access_key_id":"AKIDEXAMPLE","secret_access_key":"wJalrXUtnFEMI"}"#,
        );
        // Characters the raw URI keeps but the signed URL form encodes.
        let uri = upstream_url(&route, "/a{b\"c}/x", Some("q='x'"), &resolved).expect("uri");
        assert_eq!(uri.path(), "/base/a{b\"c}/x");
        let mut out = Outgoing {
            method: Method::GET,
            uri,
            headers: HeaderMap::new(),
            caller_sent_length: false,
            body: OutBody::Full(Bytes::new()),
        };
        sign(&route, &resolved, &mut out).expect("sign");
        assert!(out.headers.contains_key(header::AUTHORIZATION));
        assert_eq!(out.uri.path(), "/base/a%7Bb%22c%7D/x");
        assert_eq!(out.uri.query(), Some("q=%27x%27"));
        assert_eq!(out.uri.host(), Some("api.example.com"));
    }
}
