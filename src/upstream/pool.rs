//! The request path's connection pool, on hyper's connection API (as the bench's
//! hyper-floor does) instead of hyper-util's legacy client.
//!
//! Each serving thread has its own [`Pools`] (one [`super::UpstreamClient`] per thread), so
//! its locks are never contended and a connection's task runs on the thread that uses it.
//! Per upstream origin (scheme and authority) it keeps:
//!
//! - HTTP/1 connections, idle ones last-in first-out, at most
//!   [`super::POOL_MAX_IDLE_PER_HOST`], each dropped after [`super::POOL_IDLE_TIMEOUT`]
//!   idle (on checkout and checkin, and by a reaper task every [`REAP_EVERY`]);
//! - one shared HTTP/2 connection, used when the upstream picks `h2` by ALPN.
//!
//! A connection goes back to the pool once its response body has been read to the end and
//! hyper is ready to send on it again (a request body may still be going out after an early
//! answer: the connection is then pooled when that upload ends); a body dropped early closes
//! it, as hyper must. A connection the upstream closed while idle
//! is noticed on checkout; one it closed just as the request went out (the request was not
//! written: hyper hands it back) is retried once on a new connection, as hyper-util does.
//! Connecting (DNS, TCP options, TLS, ALPN) is the connector of [`super::UpstreamClient`].
//!
//! What this saves against hyper-util per request: hashing the pool key twice with SipHash
//! (`Authority` hashes byte by byte), the checkout/connect race and its boxed futures, and
//! the task spawned to return a connection whose body is still being read (here a task is
//! spawned only when the connection is not ready when its response ends).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::{Connector, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_HOST, UpstreamBody};

/// How often idle connections past [`POOL_IDLE_TIMEOUT`] are closed when nothing else
/// touches the pool.
pub const REAP_EVERY: Duration = Duration::from_secs(15);

type H1 = http1::SendRequest<UpstreamBody>;
type H2 = http2::SendRequest<UpstreamBody>;
type Hasher = foldhash::fast::RandomState;
/// Origins by authority.
type ByAuthority = HashMap<Box<str>, Arc<Host>, Hasher>;

/// One serving thread's connections, per upstream origin.
pub struct Pools {
    connector: Connector,
    /// By authority, for `http` and `https` origins.
    hosts: Mutex<[ByAuthority; 2]>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pools")
    }
}

/// Why an exchange failed before the response head arrived.
#[derive(Debug)]
pub struct Error {
    connect: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    fn connect(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error {
            connect: true,
            source: source.into(),
        }
    }

    fn send(source: hyper::Error) -> Self {
        Error {
            connect: false,
            source: Box::new(source),
        }
    }

    /// Whether no connection could be made (DNS, TCP, TLS, the HTTP handshake).
    pub fn is_connect(&self) -> bool {
        self.connect
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.connect {
            "cannot connect to the upstream"
        } else {
            "the upstream exchange failed"
        })
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The connections to one origin.
struct Host {
    /// `scheme://authority/`, what the connector dials.
    dst: Uri,
    /// `Host` of HTTP/1 requests: the authority without a default port.
    host: HeaderValue,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Idle HTTP/1 connections, oldest first, with when each went idle.
    h1: VecDeque<(H1, Instant)>,
    /// The shared HTTP/2 connection.
    h2: Option<H2>,
}

/// A connection for one request.
enum Conn {
    H1(H1),
    H2(H2),
}

impl Host {
    /// The absolute URI of `target` at this origin, for HTTP/2's `:scheme` and `:authority`.
    fn absolute(&self, target: Option<http::uri::PathAndQuery>) -> Result<Uri, Error> {
        let mut parts = self.dst.clone().into_parts();
        parts.path_and_query =
            Some(target.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        Uri::from_parts(parts).map_err(Error::connect)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pooled connection that is ready, or `None`.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let tx = {
                let mut idle = self.idle();
                if let Some(h2) = &idle.h2 {
                    if !h2.is_closed() {
                        return Some(Conn::H2(h2.clone()));
                    }
                    idle.h2 = None;
                }
                let now = Instant::now();
                expire(&mut idle.h1, now);
                idle.h1.pop_back()?.0
            };
            // Only ready connections are pooled (see [`ResponseBody`]); one that is not
            // ready any more has closed since.
            if tx.is_ready() {
                return Some(Conn::H1(tx));
            }
        }
    }

    /// Returns an HTTP/1 connection that is ready for its next request.
    fn checkin(&self, tx: H1) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        expire(&mut idle.h1, now);
        if idle.h1.len() < POOL_MAX_IDLE_PER_HOST {
            idle.h1.push_back((tx, now));
        }
    }

    /// Dials the origin: HTTP/2 when its TLS picked `h2`, else HTTP/1.
    async fn connect(&self, connector: &Connector) -> Result<Conn, Error> {
        let io = connector
            .clone()
            .oneshot(self.dst.clone())
            .await
            .map_err(Error::connect)?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(Error::connect)?;
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, "upstream HTTP/2 connection ended");
                }
            });
            let mut idle = self.idle();
            if idle.h2.as_ref().is_none_or(H2::is_closed) {
                idle.h2 = Some(tx.clone());
            }
            Ok(Conn::H2(tx))
        } else {
            let (tx, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(Error::connect)?;
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, "upstream connection ended");
                }
            });
            Ok(Conn::H1(tx))
        }
    }
}

/// Drops the idle connections that went idle more than [`POOL_IDLE_TIMEOUT`] ago, or that
/// closed.
fn expire(h1: &mut VecDeque<(H1, Instant)>, now: Instant) {
    while h1.front().is_some_and(|(tx, since)| {
        now.duration_since(*since) >= POOL_IDLE_TIMEOUT || tx.is_closed()
    }) {
        h1.pop_front();
    }
}

impl Pools {
    /// Empty pools dialing with `connector`.
    pub fn new(connector: Connector) -> Self {
        Pools {
            connector,
            hosts: Mutex::new([HashMap::default(), HashMap::default()]),
        }
    }

    /// The pool of `uri`'s origin, made (with its reaper) on first use.
    fn host(&self, uri: &Uri) -> Result<Arc<Host>, Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(Error::connect("the upstream URL is not absolute"));
        };
        let https = match scheme {
            "https" => true,
            "http" => false,
            other => return Err(Error::connect(format!("unsupported scheme {other}"))),
        };
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let by_authority = &mut hosts[usize::from(https)];
        if let Some(host) = by_authority.get(authority.as_str()) {
            return Ok(host.clone());
        }
        let dst = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(Error::connect)?;
        let default_port = if https { 443 } else { 80 };
        let host_text = match authority.port_u16() {
            Some(port) if port != default_port => authority.as_str(),
            _ => authority.host(),
        };
        let host = Arc::new(Host {
            dst,
            host: HeaderValue::from_str(host_text).map_err(Error::connect)?,
            idle: Mutex::new(Idle::default()),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&host)));
        }
        by_authority.insert(authority.as_str().into(), host.clone());
        Ok(host)
    }

    /// Sends `request` (an absolute URI) and resolves to the response head; the body
    /// streams, and its connection returns to the pool when it is over.
    pub async fn request(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, Error> {
        let host = self.host(request.uri())?;
        // One more try, on a new connection, when a pooled one closed before the request
        // was written.
        let mut fresh = false;
        loop {
            // The route's origin is the pool's; only the path and query go on. Taken from
            // the request each time (a request handed back still carries them), so they
            // are never cloned: a clone of a fresh URI's bytes is an allocation.
            let target = std::mem::take(request.uri_mut())
                .into_parts()
                .path_and_query;
            let pooled = if fresh { None } else { host.checkout() };
            let reused = pooled.is_some();
            let conn = match pooled {
                Some(conn) => conn,
                // Boxed: dialing's futures (DNS, TLS, handshakes) are large, and every
                // request's future would otherwise carry them.
                None => Box::pin(host.connect(&self.connector)).await?,
            };
            let sent = match conn {
                Conn::H2(mut tx) => {
                    *request.uri_mut() = host.absolute(target)?;
                    request.headers_mut().remove(header::HOST);
                    tx.try_send_request(request)
                        .await
                        .map(|response| response.map(|body| ResponseBody::new(body, None)))
                }
                Conn::H1(mut tx) => {
                    *request.uri_mut() = origin_form(target);
                    request
                        .headers_mut()
                        .entry(header::HOST)
                        .or_insert_with(|| host.host.clone());
                    match tx.try_send_request(request).await {
                        Ok(response) => {
                            let back = if tx.is_ready() {
                                // The whole response was read with its head.
                                host.checkin(tx);
                                None
                            } else {
                                Some(Checkin {
                                    tx,
                                    host: host.clone(),
                                })
                            };
                            Ok(response.map(|body| ResponseBody::new(body, back)))
                        }
                        Err(err) => Err(err),
                    }
                }
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => {
                        fresh = true;
                        request = unsent;
                    }
                    _ => return Err(Error::send(err.into_error())),
                },
            }
        }
    }
}

/// The path and query of a request, for an HTTP/1 request line.
fn origin_form(target: Option<http::uri::PathAndQuery>) -> Uri {
    match target {
        Some(pq) if pq.as_str() != "/" => Uri::from(pq),
        _ => Uri::default(),
    }
}

/// Closes `host`'s expired idle connections every [`REAP_EVERY`], while it exists.
async fn reap(host: Weak<Host>) {
    let mut every = tokio::time::interval(REAP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(host) = host.upgrade() else {
            return;
        };
        expire(&mut host.idle().h1, Instant::now());
    }
}

/// An HTTP/1 connection to return once its response body is over.
struct Checkin {
    tx: H1,
    host: Arc<Host>,
}

/// An upstream response body: hyper's, returning its connection to the pool at its end.
pub struct ResponseBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("pooled_on_end", &self.checkin.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    fn new(inner: Incoming, checkin: Option<Checkin>) -> Self {
        ResponseBody { inner, checkin }
    }

    /// Pools the connection once it is ready for another request: at once when it is (the
    /// usual case: the last chunk was read and the request was written), else from a task
    /// that waits for it. The request body may still be going out (an upstream can answer
    /// before it has read it all), and a request sent on the connection meanwhile would
    /// wait behind that upload.
    fn release(&mut self) {
        let Some(Checkin { mut tx, host }) = self.checkin.take() else {
            return;
        };
        if tx.is_ready() {
            host.checkin(tx);
        } else if !tx.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if tx.ready().await.is_ok() {
                    host.checkin(tx);
                }
            });
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.release(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.release(),
            // A failed body leaves the connection unusable.
            Some(Err(_)) => self.checkin = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body never polled because it is empty (HEAD, 204, 304, `Content-Length: 0`) is
        // over too; one dropped part way is not, and its connection closes.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests;
