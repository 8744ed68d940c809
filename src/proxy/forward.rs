//! forward: send the request, stream the response back. Response hygiene (hop-by-hop and
//! removed headers dropped, `X-Request-Id` set), scrubbing of the injected value, a refused
//! compressed body when scrubbing, the response-header timeout and the body idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use prometheus_client::metrics::counter::Counter;

use super::{Answer, OutBody, Outgoing};
use crate::config::RouteSpec;
use crate::error::ProxyError;
use crate::headers::{X_REQUEST_ID, connection_tokens, is_hop_by_hop_or_framing};
use crate::scrub::ScrubStream;
use crate::telemetry::error_chain;
use crate::upstream::{UpstreamBody, UpstreamClient};

/// Sends the request upstream and streams the response back, scrubbing the credential from
/// the response when the route asks for it (counting scrubs into the request's `scrubbed`
/// and the route's `route_scrubbed`).
pub async fn forward(
    client: &UpstreamClient,
    route: &RouteSpec,
    outgoing: Outgoing,
    needles: Option<&Arc<crate::scrub::Needles>>,
    request_id: &HeaderValue,
    scrubbed: &Arc<AtomicU64>,
    route_scrubbed: &Counter,
) -> Result<http::Response<Answer>, ProxyError> {
    let count = |n: u64| {
        if n > 0 {
            scrubbed.fetch_add(n, Ordering::Relaxed);
            route_scrubbed.inc_by(n);
        }
    };
    let Outgoing {
        method,
        uri,
        mut headers,
        caller_sent_length,
        body,
        fault,
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
    // Set by a streamed body that goes over the limit (an empty or whole body cannot).
    let mut exceeded = None;
    let upstream_body = match body {
        OutBody::Full(bytes) => UpstreamBody::Full(Some(bytes)),
        OutBody::Stream(body) if http_body::Body::is_end_stream(&body) || declared == Some(0) => {
            UpstreamBody::empty()
        }
        OutBody::Stream(body) => UpstreamBody::Stream {
            inner: body,
            seen: 0,
            limit: route.max_body_bytes,
            exceeded: exceeded.insert(Arc::new(AtomicBool::new(false))).clone(),
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
            if exceeded.is_some_and(|e| e.load(Ordering::Acquire)) {
                return Err(ProxyError::BodyTooLarge {
                    limit: route.max_body_bytes,
                });
            }
            // The caller's body failed on the way: its doing, not the upstream's.
            if let Some(caller_fault) = fault.error() {
                tracing::info!(route = %route.name, error = %error_chain(&err), "the caller's request body failed");
                return Err(caller_fault);
            }
            // hyper's errors name no URL (which may carry an injected query credential).
            tracing::warn!(route = %route.name, error = %error_chain(&err), "upstream request failed");
            return Err(ProxyError::UpstreamUnreachable);
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if needles.is_some() && !scrubbable(response.headers()) {
        // Asked for identity and got a compressed body anyway: it cannot be checked for the
        // credential, so it is not passed on (fail closed).
        tracing::warn!(route = %route.name, "upstream sent a compressed body although asked for identity; refused because it cannot be scrubbed");
        return Err(ProxyError::UpstreamUnreachable);
    }
    let (head, upstream_body) = response.into_parts();
    // Cleaned in place: every rule below goes by the header's name, so a name is removed
    // with all its values, and only scrubbed values are replaced.
    let mut out_headers = head.headers;
    let named = connection_tokens(&out_headers);
    // Inline: nearly every response drops one or two (`Connection`, `Keep-Alive`).
    let mut dropped: smallvec::SmallVec<[HeaderName; 4]> = smallvec::SmallVec::new();
    for (name, value) in out_headers.iter_mut() {
        if is_hop_by_hop_or_framing(name) && name != header::CONTENT_LENGTH
            || route.response_headers_remove.contains(name)
            // Only credproxy's own answers carry it: an upstream cannot pose as credproxy.
            || name == crate::headers::X_CREDPROXY_ERROR
            || named.iter().any(|t| t == name.as_str())
        {
            if dropped.last() != Some(name) {
                dropped.push(name.clone());
            }
            continue;
        }
        let Some(n) = needles else {
            continue;
        };
        if n.in_header_name(name) {
            // A header *named* after the credential cannot be cleaned: it is dropped.
            count(1);
            if dropped.last() != Some(name) {
                dropped.push(name.clone());
            }
            continue;
        }
        if let Some((clean, n)) = n.header_value(value) {
            count(n);
            *value = clean;
        }
    }
    for name in &dropped {
        out_headers.remove(name);
    }
    out_headers.insert(X_REQUEST_ID, request_id.clone());
    let known = http_body::Body::size_hint(&upstream_body).exact();
    let stream = IdleTimeout::new(
        http_body_util::BodyDataStream::new(upstream_body),
        route.idle_timeout,
    );
    // A small body of known length (most API answers) is read whole: scrubbed in one pass,
    // answered with its exact Content-Length instead of chunked, and its upstream connection
    // pooled again before the caller has read a byte.
    if let Some(len) = known.filter(|len| !is_head && (1..=WHOLE_BODY_MAX).contains(len)) {
        let whole = read_whole(stream, len as usize, &route.name, route.idle_timeout).await?;
        let whole = match needles {
            Some(needles) => {
                let (clean, n) = needles.scrub_whole(whole);
                count(n);
                clean
            }
            None => whole,
        };
        // The upstream's Content-Length stands unless scrubbing changed the length.
        if whole.len() as u64 != len {
            out_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(whole.len()));
        }
        let mut out = http::Response::new(super::whole(whole));
        *out.status_mut() = status;
        *out.headers_mut() = out_headers;
        return Ok(out);
    }
    let body = match needles {
        Some(needles) => {
            // Scrubbing may change the length; a HEAD answer has no body to change.
            if !is_head {
                out_headers.remove(header::CONTENT_LENGTH);
            }
            Body::from_stream(
                ScrubStream::new(stream, needles.clone(), scrubbed.clone())
                    .counting_into(route_scrubbed.clone()),
            )
        }
        None => Body::from_stream(stream),
    };
    let mut out = http::Response::new(super::streamed(body));
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    Ok(out)
}

/// The largest response body of known length that is read whole before answering.
pub const WHOLE_BODY_MAX: u64 = 64 * 1024;

/// Reads a body of `len` bytes (its declared length) whole. A body that stalls for `idle`
/// is a 504, one that fails or ends short a 502: the caller has not been answered yet.
async fn read_whole<S>(
    mut stream: IdleTimeout<S>,
    len: usize,
    route: &str,
    idle: Duration,
) -> Result<Bytes, ProxyError>
where
    S: Stream<Item = Result<Bytes, hyper::Error>> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut rest = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                return Err(ProxyError::UpstreamTimeout(idle.as_secs()));
            }
            Err(err) => {
                tracing::warn!(route = %route, error = %error_chain(&err), "upstream response body failed");
                return Err(ProxyError::UpstreamUnreachable);
            }
        };
        match &first {
            None if rest.is_empty() => first = Some(chunk),
            _ => {
                if let Some(first) = first.take() {
                    rest.reserve(len);
                    rest.extend_from_slice(&first);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    let whole = first.unwrap_or_else(|| rest.freeze());
    if whole.len() != len {
        // hyper enforces the declared length; this is the belt to its braces.
        tracing::warn!(route = %route, "upstream response body did not match its Content-Length");
        return Err(ProxyError::UpstreamUnreachable);
    }
    Ok(whole)
}

/// Whether a response body arrives as sent, so that it can be scrubbed: every
/// `Content-Encoding` header lists only `identity`, and every `Transfer-Encoding` header only
/// `chunked` (which hyper has already decoded).
fn scrubbable(headers: &HeaderMap) -> bool {
    let only = |name: header::HeaderName, allowed: &str| {
        headers.get_all(name).iter().all(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .map(str::trim)
                    .all(|t| t.is_empty() || t.eq_ignore_ascii_case(allowed))
            })
        })
    };
    only(header::CONTENT_ENCODING, "identity") && only(header::TRANSFER_ENCODING, "chunked")
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
