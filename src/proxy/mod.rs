//! Rewrite and forward: header hygiene, credential injection, and the streaming exchange
//! with the upstream. [`rewrite`] builds the request that goes upstream, [`forward`] sends
//! it and cleans the response.
//!
//! What the caller sent is never trusted to reach the upstream as is: its credentials
//! (`Authorization`, `X-Serverless-Authorization`, `Cookie`), proxy and hop-by-hop headers
//! (and any named in `Connection`), method overrides, forwarding headers, and any header or
//! query parameter of the injected credential's name are dropped first; the credential is
//! added last, so nothing can override it. Bodies stream both ways; a request body over the
//! route's limit aborts the upstream request.

pub mod body;
pub mod forward;
pub mod rewrite;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method};

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
    /// What went wrong with the caller's body, if anything (a streamed body fails late).
    pub fault: body::Fault,
}

/// A request body on its way upstream.
pub enum OutBody {
    /// Streamed as it arrives (not replayable).
    Stream(Body),
    /// Held in memory (small bodies of routes whose credential can rotate), so the request
    /// can be replayed once after an upstream 401.
    Full(Bytes),
}

/// A response body on its way back to the caller: read whole (a small answer of known
/// length, one frame with no allocation for the body itself), or streamed (a large or
/// open-ended answer, or one of credproxy's own). Build it with [`whole`] and [`streamed`].
pub type Answer = http_body_util::Either<http_body_util::Full<Bytes>, Body>;

/// An answer read whole.
pub fn whole(bytes: Bytes) -> Answer {
    http_body_util::Either::Left(http_body_util::Full::new(bytes))
}

/// A streamed answer, or one of credproxy's own.
pub fn streamed(body: Body) -> Answer {
    http_body_util::Either::Right(body)
}

/// Largest body held for a replay after an upstream 401.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

#[cfg(test)]
mod tests;
