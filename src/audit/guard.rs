//! The request's side of its audit entry: the guard that writes it exactly once, and the
//! response body that completes it when the response is over.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

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
/// held (`H`: its in-flight slots).
pub struct Completion<H> {
    guard: AuditGuard,
    status: StatusCode,
    _hold: H,
}

impl<H> Completion<H> {
    fn finish(self, bytes: u64) {
        self.guard.finish(self.status, bytes);
    }
}

/// A response body (`B`) that counts the bytes sent and completes the request when it ends
/// or is dropped, releasing `H` then.
///
/// Generic rather than boxed: the serving loop hands it to hyper as it is, so a response
/// costs no allocation for its body and no virtual call per frame.
pub struct Observed<B, H> {
    inner: B,
    bytes: u64,
    completion: Option<Completion<H>>,
}

impl<B, H> Observed<B, H> {
    /// Wraps `response`'s body; `hold` lives until the body is over.
    pub fn wrap(
        response: http::Response<B>,
        guard: AuditGuard,
        hold: H,
    ) -> http::Response<Observed<B, H>> {
        let status = response.status();
        response.map(|body| Observed {
            inner: body,
            bytes: 0,
            completion: Some(Completion {
                guard,
                status,
                _hold: hold,
            }),
        })
    }

    fn complete(&mut self) {
        if let Some(c) = self.completion.take() {
            c.finish(self.bytes);
        }
    }
}

impl<B, H> http_body::Body for Observed<B, H>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    H: Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

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

impl<B, H> Drop for Observed<B, H> {
    fn drop(&mut self) {
        self.complete();
    }
}
