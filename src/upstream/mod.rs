//! The request path's upstream client: hyper's HTTP/1 and HTTP/2 connections in a
//! per-thread pool ([`pool`]), dialed by hyper-util's connector over hyper-rustls.
//!
//! reqwest stays for the control plane (JWKS, OAuth2 token endpoints, the metadata server),
//! but not on the request path: per request it parses the URL into a `Uri`, its redirect
//! layer parses it back into a `Url` (with IDNA processing), and it clones its connector
//! stack; under the bench load those layers were about 7% of all CPU. This client is set up
//! as the reqwest one was:
//!
//! - no proxy from the environment (hyper never reads `HTTPS_PROXY`: a proxy could divert
//!   credentials), and redirects are passed back, never followed;
//! - a 10 s connect timeout, `TCP_NODELAY`, TCP keepalive (15 s, 3 probes) and a 30 s TCP
//!   user timeout, pooled keep-alive connections (90 s idle, up to 256 idle per host),
//!   HTTP/2 when the upstream offers it by ALPN;
//! - rustls with the platform verifier (the system roots), or for a route with
//!   `upstream_tls` only its CA bundle, plus its client certificate.
//!
//! Unlike reqwest, nothing is added to the request: no `Accept: */*` default. `Host` (or
//! `:authority`) comes from the URI. Nor is a request an HTTP/2 upstream refused
//! (`REFUSED_STREAM`) retried: that is a 502. The caller's request trailers are dropped:
//! they would reach an HTTP/2 upstream past the header hygiene of `upstream_headers`.

pub mod mtls;
pub mod pool;
pub mod route_tls;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keepalive idle time and probe interval.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// How long sent data may stay unacknowledged before the connection is dropped.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per upstream host.
pub const POOL_MAX_IDLE_PER_HOST: usize = 256;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A pooled upstream client. Clones share the pool.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    inner: Arc<pool::Pools>,
}

/// Why an exchange failed before response headers arrived.
pub type Error = pool::Error;

/// An upstream response body; its connection returns to the pool at its end.
pub type ResponseBody = pool::ResponseBody;

impl UpstreamClient {
    /// A client verifying servers with `tls`.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // reqwest's defaults, so a pooled connection a NAT silently dropped is noticed
        // instead of hanging until the route's timeout.
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE));
        http.set_keepalive_retries(Some(3));
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        UpstreamClient {
            inner: Arc::new(pool::Pools::new(https)),
        }
    }

    /// The shared client: system roots, no client certificate.
    pub fn with_system_roots() -> Result<Self, String> {
        Ok(Self::new(tls_config(None, None)?))
    }

    /// Sends `request` (an absolute URI) and resolves to the response head; the body
    /// streams.
    pub async fn request(
        &self,
        request: http::Request<UpstreamBody>,
    ) -> Result<http::Response<ResponseBody>, Error> {
        self.inner.request(request).await
    }
}

/// The crypto provider of upstream TLS (reqwest's choice too): the process default, else
/// aws-lc-rs.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The rustls configuration of an upstream client: trust only `roots` when given, else the
/// platform verifier (system roots); present `identity` (chain, key) when given.
pub fn tls_config(
    roots: Option<Vec<CertificateDer<'static>>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, String> {
    let provider = crypto_provider();
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for cert in roots {
                store
                    .add(cert)
                    .map_err(|err| format!("a CA certificate is not a usable root: {err}"))?;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|err| format!("cannot build the certificate verifier: {err}"))?
        }
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|err| format!("cannot load the system roots: {err}"))?,
        ),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot configure TLS: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|err| format!("unusable client identity: {err}")),
    }
}

/// A request body on its way upstream.
pub enum UpstreamBody {
    /// Held in memory (or empty).
    Full(Option<Bytes>),
    /// The caller's body as it arrives, failing once more than `limit` bytes went through
    /// (and recording that, so the caller gets 413 rather than 502).
    Stream {
        /// The caller's body.
        inner: axum::body::Body,
        /// Bytes passed so far.
        seen: u64,
        /// The route's `max_body_bytes`.
        limit: u64,
        /// Set when the limit was crossed.
        exceeded: Arc<AtomicBool>,
    },
}

impl UpstreamBody {
    /// An empty body.
    pub fn empty() -> Self {
        UpstreamBody::Full(None)
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            UpstreamBody::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            UpstreamBody::Stream {
                inner,
                seen,
                limit,
                exceeded,
            } => loop {
                match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let Some(data) = frame.data_ref() else {
                            // Trailers: dropped (see the module docs).
                            continue;
                        };
                        *seen += data.len() as u64;
                        if *seen > *limit {
                            exceeded.store(true, Ordering::Release);
                            return Poll::Ready(Some(Err(io::Error::other(
                                "request body over the limit",
                            ))));
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Poll::Ready(Some(Err(err))) => {
                        return Poll::Ready(Some(Err(io::Error::other(err))));
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            UpstreamBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpstreamBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// The shared upstream client: pooled keep-alive connections, rustls with the system roots,
/// no proxy from the environment (it could divert credentials), redirects passed back, never
/// followed.
pub fn upstream_client() -> Result<UpstreamClient, String> {
    UpstreamClient::with_system_roots()
}

/// A reqwest client with the same settings, for calls made on a route's behalf outside the
/// request path (OAuth2 token endpoints).
pub fn reqwest_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .tcp_nodelay(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_fails_and_says_so() {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = UpstreamBody::Stream {
            inner: axum::body::Body::from(vec![b'x'; 11]),
            seen: 0,
            limit: 10,
            exceeded: exceeded.clone(),
        };
        assert!(body.collect().await.is_err());
        assert!(exceeded.load(Ordering::Acquire));

        let exceeded = Arc::new(AtomicBool::new(false));
        let body = UpstreamBody::Stream {
            inner: axum::body::Body::from(vec![b'x'; 10]),
            seen: 0,
            limit: 10,
            exceeded: exceeded.clone(),
        };
        let bytes = body.collect().await.expect("within the limit").to_bytes();
        assert_eq!(bytes.len(), 10);
        assert!(!exceeded.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn the_callers_trailers_never_go_upstream() {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Ok(Frame::trailers({
                let mut t = http::HeaderMap::new();
                t.insert(
                    "authorization",
                    http::HeaderValue::from_static("Bearer mine"),
                );
                t.insert("x-api-key", http::HeaderValue::from_static("caller-chosen"));
                t
            })),
        ];
        let body = UpstreamBody::Stream {
            inner: axum::body::Body::new(http_body_util::StreamBody::new(
                futures_util::stream::iter(frames),
            )),
            seen: 0,
            limit: 100,
            exceeded: Arc::new(AtomicBool::new(false)),
        };
        let collected = body.collect().await.expect("body");
        assert!(collected.trailers().is_none(), "trailers were passed on");
        assert_eq!(collected.to_bytes(), "part");
    }

    #[tokio::test]
    async fn a_full_body_is_one_frame_with_an_exact_size() {
        let body = UpstreamBody::Full(Some(Bytes::from_static(b"hello")));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        assert!(!http_body::Body::is_end_stream(&body));
        assert_eq!(body.collect().await.expect("body").to_bytes(), "hello");
        let empty = UpstreamBody::empty();
        assert!(http_body::Body::is_end_stream(&empty));
        assert_eq!(http_body::Body::size_hint(&empty).exact(), Some(0));
    }

    #[test]
    fn the_system_roots_load() {
        assert!(UpstreamClient::with_system_roots().is_ok());
    }
}
