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

/// A response body on its way back to the caller.
pub enum Answer {
    /// Read whole (a small answer of known length): sent as one frame, with no allocation
    /// for the body itself. `None` once sent.
    Whole(Option<Bytes>),
    /// Streamed (a large or open-ended answer), or one of credproxy's own answers.
    Body(Body),
}

impl From<Body> for Answer {
    fn from(body: Body) -> Self {
        Answer::Body(body)
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        match self.get_mut() {
            Answer::Whole(bytes) => {
                std::task::Poll::Ready(bytes.take().map(|b| Ok(http_body::Frame::data(b))))
            }
            Answer::Body(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Whole(bytes) => bytes.is_none(),
            Answer::Body(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Answer::Whole(bytes) => {
                http_body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Answer::Body(body) => body.size_hint(),
        }
    }
}

/// Largest body held for a replay after an upstream 401.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

#[cfg(test)]
mod tests;
