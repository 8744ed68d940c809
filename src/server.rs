//! The server: application state, the one request handler that runs the stages in order,
//! the reserved `/_credproxy/*` endpoints, and the accept loop with graceful shutdown.
//!
//! The accept loop is hyper-util's (not `axum::serve`) so that the header read timeout,
//! header limits and the drain deadline are ours to set.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::audit::{AuditSink, Observed, RequestContext};
use crate::config::{Config, RouteSpec};
use crate::error::ProxyError;
use crate::identity::Verifier;
use crate::policy::{self, Decision, DenyReason};
use crate::proxy;
use crate::secrets::Credential;

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// How long SIGTERM waits for in-flight requests (Cloud Run kills after 10 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// A route with its live credential.
#[derive(Debug)]
pub struct RouteRuntime {
    /// The configured route.
    pub spec: RouteSpec,
    /// Its credential.
    pub credential: Arc<Credential>,
}

/// Everything the handler needs, shared by all requests.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// Routes by name.
    pub routes: HashMap<String, RouteRuntime>,
    /// Token verification and JWKS cache.
    pub verifier: Arc<Verifier>,
    /// The one pooled upstream client.
    pub client: reqwest::Client,
    /// Where audit entries go.
    pub audit: AuditSink,
    in_flight: Arc<AtomicUsize>,
}

impl App {
    /// Assembles the state from a config, a verifier and resolved credentials (one per route,
    /// in config order).
    pub fn new(
        config: Config,
        verifier: Arc<Verifier>,
        credentials: Vec<Arc<Credential>>,
        audit: AuditSink,
    ) -> Result<Self, reqwest::Error> {
        let routes = config
            .routes
            .iter()
            .cloned()
            .zip(credentials)
            .map(|(spec, credential)| (spec.name.clone(), RouteRuntime { spec, credential }))
            .collect();
        Ok(App {
            client: upstream_client()?,
            routes,
            verifier,
            config,
            audit,
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Ready when the JWKS was fetched and every credential resolved once.
    pub fn is_ready(&self) -> bool {
        self.verifier.is_ready() && self.routes.values().all(|r| r.credential.is_resolved())
    }
}

/// The shared upstream client: pooled keep-alive connections, rustls, no proxy from the
/// environment (it could divert credentials), redirects passed back, never followed.
pub fn upstream_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
}

/// The router: reserved endpoints (any method), everything else through [`handle`].
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/_credproxy/health", axum::routing::any(health))
        .route("/_credproxy/ready", axum::routing::any(ready))
        .fallback(handle)
        .with_state(app)
}

fn with_request_id(
    headers: &http::HeaderMap,
    status: StatusCode,
    body: serde_json::Value,
) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(X_REQUEST_ID, request_id(headers));
    response
}

async fn health(headers: http::HeaderMap) -> Response {
    with_request_id(
        &headers,
        StatusCode::OK,
        serde_json::json!({"status": "ok"}),
    )
}

async fn ready(State(app): State<Arc<App>>, headers: http::HeaderMap) -> Response {
    if app.is_ready() {
        return with_request_id(
            &headers,
            StatusCode::OK,
            serde_json::json!({"status": "ready"}),
        );
    }
    let mut waiting = Vec::new();
    if !app.verifier.is_ready() {
        waiting.push("jwks".to_string());
    }
    for r in app.routes.values() {
        if !r.credential.is_resolved() {
            waiting.push(format!("credential:{}", r.spec.name));
        }
    }
    with_request_id(
        &headers,
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({"status": "starting", "waiting_for": waiting}),
    )
}

/// A caller-supplied request id is kept when it is a sane token, else one is generated.
pub fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        {
            return v.clone();
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Holds one in-flight slot until the response body is over.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every proxied request: the stages of `lib.rs`, in order, then one audit entry when the
/// response body is over.
async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let mut cx = RequestContext::new(
        request_id(request.headers()),
        request.method(),
        request.uri(),
        request.headers(),
        peer,
    );
    let count = app.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let slot = InFlight(app.in_flight.clone());
    let result = if count > app.config.server.max_in_flight {
        Err(ProxyError::Overloaded)
    } else {
        pipeline(&app, &mut cx, request).await
    };
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            cx.reason = Some(err.reason());
            if err.status().is_server_error() {
                tracing::warn!(request_id = ?cx.request_id, code = err.code(), error = %err, "request failed");
            }
            err.into_response_with(&cx.request_id)
        }
    };
    Observed::wrap(response, cx, &app.audit, Box::new(slot))
}

async fn pipeline(
    app: &App,
    cx: &mut RequestContext,
    request: Request,
) -> Result<Response, ProxyError> {
    let (parts, body) = request.into_parts();
    if parts.uri.path().starts_with("/_credproxy/") || parts.uri.path() == "/_credproxy" {
        return Err(ProxyError::NotFound);
    }

    // authenticate: 401 before anything about routes is disclosed.
    let caller = app.verifier.verify(&parts.headers).await?;
    cx.caller = Some(caller.email.clone());

    // route: origin-form only (HTTP/2 always carries an authority, HTTP/1 absolute-form does
    // not belong here), then normalise.
    if parts.version < Version::HTTP_2
        && (parts.uri.scheme().is_some() || parts.uri.authority().is_some())
    {
        return Err(ProxyError::BadRequest(
            "absolute-form request targets are not accepted: send the path only".to_string(),
        ));
    }
    let target = policy::normalise(parts.uri.path())?;
    let route = app
        .routes
        .get(target.route.as_ref())
        .ok_or_else(|| ProxyError::UnknownRoute(target.route.to_string()))?;
    cx.route = Some(route.spec.name.clone());
    cx.secret = Some(route.credential.resource().to_string());

    // authorize: default deny.
    match policy::authorize(
        &route.spec.allow,
        &caller.email,
        &parts.method,
        &target.path,
        chrono::Utc::now(),
    ) {
        Decision::Allow { .. } => cx.allowed = true,
        Decision::Deny(DenyReason::NoRule) => {
            return Err(ProxyError::Forbidden {
                message: format!(
                    "no rule of route `{}` allows caller {} to {} {}",
                    route.spec.name, caller.email, parts.method, target.path
                ),
                reason: "forbidden",
            });
        }
        Decision::Deny(DenyReason::GrantExpired { rule }) => {
            return Err(ProxyError::Forbidden {
                message: format!(
                    "the grant routes.{}.allow[{rule}] that allowed caller {} to {} {} has expired",
                    route.spec.name, caller.email, parts.method, target.path
                ),
                reason: "grant_expired",
            });
        }
    }

    // resolve
    let resolved = route.credential.current()?;
    cx.secret_version = resolved.version.clone();

    // rewrite
    let query = proxy::caller_query(parts.uri.query(), &resolved);
    cx.set_query(parts.uri.path(), query.as_deref());
    let url = proxy::upstream_url(
        &route.spec,
        &target.upstream_path,
        query.as_deref(),
        &resolved,
    )?;
    let headers = proxy::upstream_headers(&parts.headers, &route.spec, &resolved, &cx.request_id);
    let caller_sent_length = parts.headers.contains_key(http::header::CONTENT_LENGTH);

    // forward
    let response = proxy::forward(
        &app.client,
        &route.spec,
        proxy::Outgoing {
            method: parts.method,
            url,
            headers,
            caller_sent_length,
            body,
        },
        &resolved,
        &cx.request_id,
        &cx.scrubbed,
    )
    .await?;
    cx.upstream_status = Some(response.status().as_u16());
    Ok(response)
}

/// Serves until `shutdown` completes, then stops accepting and drains in-flight requests for
/// up to [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router(app.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.server.header_read_timeout)
        .max_headers(100)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req.map(Body::new))
            });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!(
            seconds = DRAIN_TIMEOUT.as_secs(),
            "in-flight requests still running at the drain deadline; exiting"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_request_ids_and_replaces_others() {
        let mut h = http::HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc.DEF_1-2"));
        assert_eq!(request_id(&h), "abc.DEF_1-2");
        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).expect("value"));
            let id = request_id(&h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
    }
}
