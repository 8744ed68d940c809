//! The caller's request body, watched: a body that pauses longer than
//! `server.body_idle_timeout_seconds` between bytes is cut, and whatever went wrong with it
//! (a pause, broken chunked framing, an upload the caller aborted) is recorded in a
//! [`Fault`], so the caller gets 408 or 400 for its own doing instead of a 502 that looks
//! like an outage. The timer exists only once the body has had to wait.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::error::ProxyError;

const NONE: u8 = 0;
const IDLE: u8 = 1;
const BROKEN: u8 = 2;

/// What went wrong with a caller's body, shared with whoever reads it.
#[derive(Debug, Clone, Default)]
pub struct Fault(Arc<AtomicU8>);

impl Fault {
    fn set(&self, fault: u8) {
        let _ = self
            .0
            .compare_exchange(NONE, fault, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The caller's fault as the error it is answered with, if the body failed.
    pub fn error(&self) -> Option<ProxyError> {
        match self.0.load(Ordering::Acquire) {
            IDLE => Some(ProxyError::RequestTimeout),
            BROKEN => Some(ProxyError::BadRequestBody(
                "the request body broke off or is not validly framed".to_string(),
            )),
            _ => None,
        }
    }
}

/// The caller's body with an idle deadline; failures recorded in its [`Fault`].
pub struct CallerBody {
    inner: Body,
    idle: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `sleep` counts from the current wait (false after a frame arrived).
    armed: bool,
    fault: Fault,
}

impl CallerBody {
    /// Watches `inner`: a pause over `idle` fails it.
    pub fn wrap(inner: Body, idle: Duration, fault: Fault) -> Body {
        Body::new(CallerBody {
            inner,
            idle,
            sleep: None,
            armed: false,
            fault,
        })
    }
}

impl http_body::Body for CallerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.fault.set(BROKEN);
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                match &mut this.sleep {
                    None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    Some(sleep) if !this.armed => sleep.as_mut().reset(deadline),
                    Some(_) => {}
                }
                this.armed = true;
                let Some(sleep) = this.sleep.as_mut() else {
                    return Poll::Pending;
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.fault.set(IDLE);
                        Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "request body idle timeout",
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
