//! The request's side of its audit entry: the guard that writes it exactly once, and the
//! response body that completes it when the response is over.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Buf;
use http::StatusCode;
use http_body::{Frame, SizeHint};

use super::{AuditSink, Ended, RequestContext};

/// A request's audit entry from the moment it enters the pipeline: written exactly once,
/// by [`AuditGuard::finish`] (the response is over), or when the guard is dropped without
/// it (the request future was dropped: the caller went away before the response started,
/// 499 `client_closed`, or the drain deadline cut it, 503 `shutdown`).
///
/// Writing hands the context itself to the audit thread, which builds and serialises the
/// entry: the request path only stamps the end time and moves a pointer.
pub struct AuditGuard {
    /// Boxed: the guard moves from the request's future into its response body, and a
    /// context is about 500 bytes. `None` once handed to the writer.
    cx: Option<Box<RequestContext>>,
    sink: AuditSink,
}

impl AuditGuard {
    /// Guards `cx`; its entry goes to `sink`.
    pub fn new(cx: RequestContext, sink: &AuditSink) -> Self {
        AuditGuard {
            cx: Some(Box::new(cx)),
            sink: sink.clone(),
        }
    }

    fn write(&mut self, status: StatusCode, bytes: u64) {
        if let Some(cx) = self.cx.take() {
            let end = Ended {
                status,
                response_size: bytes,
                latency: cx.started.elapsed(),
                time: std::time::SystemTime::now(),
            };
            self.sink.submit(cx, end);
        }
    }

    /// Writes the entry of a response of `status` whose body sent `bytes`.
    pub fn finish(mut self, status: StatusCode, bytes: u64) {
        self.write(status, bytes);
    }
}

impl std::ops::Deref for AuditGuard {
    type Target = RequestContext;
    fn deref(&self) -> &RequestContext {
        // Taken only by the final write, in `finish(self)` or `drop`: never seen after.
        self.cx
            .as_deref()
            .expect("a guard's context lives until its entry is written")
    }
}

impl std::ops::DerefMut for AuditGuard {
    fn deref_mut(&mut self) -> &mut RequestContext {
        self.cx
            .as_deref_mut()
            .expect("a guard's context lives until its entry is written")
    }
}

/// Status of a request whose caller closed the connection before it was answered (nginx's).
const CLIENT_CLOSED: u16 = 499;

impl Drop for AuditGuard {
    fn drop(&mut self) {
        let Some(cx) = self.cx.as_deref_mut() else {
            return;
        };
        let (status, reason) = if self.sink.shutting_down.load(Ordering::Acquire) {
            (StatusCode::SERVICE_UNAVAILABLE, "shutdown")
        } else {
            (
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST),
                "client_closed",
            )
        };
        cx.reason = Some(reason);
        self.write(status, 0);
    }
}

/// Runs once when the response is over: writes the audit entry and releases what the request
/// held (its in-flight slot).
pub struct Completion {
    guard: AuditGuard,
    status: StatusCode,
    _hold: Box<dyn Send + Sync>,
}

impl Completion {
    fn finish(self, bytes: u64) {
        self.guard.finish(self.status, bytes);
    }
}

/// A response body that counts the bytes sent and completes the request when it ends or is
/// dropped.
pub struct Observed {
    inner: Body,
    bytes: u64,
    completion: Option<Completion>,
}

impl Observed {
    /// Wraps `response`'s body; `hold` lives until the body is over.
    pub fn wrap(
        response: axum::response::Response,
        guard: AuditGuard,
        hold: Box<dyn Send + Sync>,
    ) -> axum::response::Response {
        let status = response.status();
        let (parts, body) = response.into_parts();
        let observed = Observed {
            inner: body,
            bytes: 0,
            completion: Some(Completion {
                guard,
                status,
                _hold: hold,
            }),
        };
        axum::response::Response::from_parts(parts, Body::new(observed))
    }

    fn complete(&mut self) {
        if let Some(c) = self.completion.take() {
            c.finish(self.bytes);
        }
    }
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.remaining() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.complete(),
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.complete();
    }
}
