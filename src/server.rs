//! The server: application state, the one request handler that runs the stages in order,
//! the reserved `/_credproxy/*` endpoints, and the accept loop with graceful shutdown.
//!
//! The accept loop is hyper-util's (not `axum::serve`) so that the header read timeout,
//! header limits and the drain deadline are ours to set.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::audit::{AuditSink, Observed, RequestContext};
use crate::config::{Config, RouteSpec};
use crate::error::ProxyError;
use crate::headers::{X_REQUEST_ID, client_address, request_id};
use crate::identity::Verifier;
use crate::metrics::RouteMetrics;
use crate::policy::{self, Decision, DenyReason};
use crate::proxy;
use crate::secrets::events::SecretEvent;
use crate::secrets::{self, Credential, Minted, Resolved, SecretStore};

/// Request bodies held whole in memory (for signing) across all requests, at most: beyond
/// it, requests that need one get 503 `overloaded` instead of exhausting memory.
pub const BODY_BUDGET_KIB: usize = 128 * 1024;

/// Where Pub/Sub pushes Secret Manager events.
pub const EVENTS_PATH: &str = "/_credproxy/events/secret-manager";
/// How long SIGTERM waits for in-flight requests (Cloud Run kills after 10 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// A route with its live credential.
#[derive(Debug)]
pub struct RouteRuntime {
    /// The configured route.
    pub spec: RouteSpec,
    /// Its credential.
    pub credential: Arc<Credential>,
    /// Its metric handles.
    pub metrics: RouteMetrics,
    /// Its rate limiters.
    pub limits: crate::limit::RouteLimits,
    /// Its mutual-TLS client, when `upstream_tls` is set.
    pub tls: Option<crate::upstream::route_tls::RouteTls>,
}

/// Everything the handler needs, shared by all requests.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// Routes by name.
    pub routes: HashMap<String, RouteRuntime>,
    /// Token verification and JWKS cache.
    pub verifier: Arc<Verifier>,
    /// Every secret and its refreshers.
    pub secrets: Arc<SecretStore>,
    /// The pooled upstream client of serving thread 0 (see [`serve`]).
    pub client: crate::upstream::UpstreamClient,
    /// One pooled upstream client per serving thread (the first is `client`), so a
    /// request's upstream connections live on the thread that serves it.
    clients: Vec<crate::upstream::UpstreamClient>,
    /// Where audit entries go.
    pub audit: AuditSink,
    in_flight: Arc<AtomicUsize>,
    /// Bytes of request bodies held in memory for signing, in KiB permits.
    body_budget: Arc<tokio::sync::Semaphore>,
    /// Metric handles of requests that resolved no route.
    unrouted: RouteMetrics,
}

impl App {
    /// Assembles the state from a config, a verifier and resolved credentials (one per route,
    /// in config order).
    pub fn new(
        config: Config,
        verifier: Arc<Verifier>,
        secrets: Arc<SecretStore>,
        credentials: Vec<Arc<Credential>>,
        audit: AuditSink,
        threads: usize,
    ) -> Result<Self, crate::StartError> {
        let routes = config
            .routes
            .iter()
            .cloned()
            .zip(credentials)
            .map(|(spec, credential)| {
                let metrics = RouteMetrics::new(&spec.name);
                let limits = crate::limit::RouteLimits::new(spec.rate_limit, spec.route_rate_limit);
                // The store registered every upstream_tls reference; a missing one is a bug,
                // and must stop the start rather than fall back to a client without a
                // certificate.
                let tls = match &spec.upstream_tls {
                    None => None,
                    Some(t) => {
                        let entry = |r| {
                            secrets.entry(r).ok_or_else(|| {
                                crate::StartError::Internal(format!(
                                    "route {}: no secret entry for {}",
                                    spec.name,
                                    r.resource()
                                ))
                            })
                        };
                        Some(crate::upstream::route_tls::RouteTls::new(
                            &spec.name,
                            secrets.clone(),
                            entry(&t.certificate)?,
                            entry(&t.key)?,
                            t.ca_bundle.as_ref().map(entry).transpose()?,
                            threads,
                        ))
                    }
                };
                Ok((
                    spec.name.clone(),
                    RouteRuntime {
                        spec,
                        credential,
                        metrics,
                        limits,
                        tls,
                    },
                ))
            })
            .collect::<Result<_, crate::StartError>>()?;
        let client = upstream_client().map_err(crate::StartError::UpstreamClient)?;
        let clients = std::iter::once(Ok(client.clone()))
            .chain((1..threads).map(|_| upstream_client()))
            .collect::<Result<_, _>>()
            .map_err(crate::StartError::UpstreamClient)?;
        Ok(App {
            client,
            clients,
            routes,
            verifier,
            secrets,
            config,
            audit,
            in_flight: Arc::new(AtomicUsize::new(0)),
            body_budget: Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_KIB)),
            unrouted: RouteMetrics::new(""),
        })
    }

    /// Serving threads: connections are spread over this many threads.
    pub fn threads(&self) -> usize {
        self.clients.len()
    }

    /// The upstream client of the thread serving a request.
    pub fn client_for(&self, thread: Option<ServingThread>) -> &crate::upstream::UpstreamClient {
        thread
            .and_then(|t| self.clients.get(t.0))
            .unwrap_or(&self.client)
    }

    /// Ready when the JWKS was fetched and (with `warm_on_start`) every secret resolved once.
    pub fn is_ready(&self) -> bool {
        self.verifier.is_ready()
            && (!self.config.secrets.warm_on_start
                || (self.secrets.all_resolved()
                    && self.routes.values().all(|r| r.credential.is_ready())))
    }
}

use crate::upstream::upstream_client;

/// The router: reserved endpoints (any method), everything else through [`handle`].
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/_credproxy/health", axum::routing::any(health))
        .route("/_credproxy/ready", axum::routing::any(ready))
        .route("/_credproxy/metrics", axum::routing::any(metrics_endpoint))
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
    if app.config.secrets.warm_on_start {
        waiting.extend(
            app.secrets
                .unresolved()
                .into_iter()
                .map(|s| format!("secret:{s}")),
        );
    }
    with_request_id(
        &headers,
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({"status": "starting", "waiting_for": waiting}),
    )
}

async fn metrics_endpoint(State(app): State<Arc<App>>, headers: http::HeaderMap) -> Response {
    if !app.config.metrics.enabled || app.config.metrics.listen.is_some() {
        return ProxyError::NotFound.into_response_with(&request_id(&headers));
    }
    metrics_text()
}

/// The Prometheus text exposition response.
pub fn metrics_text() -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::metrics().encode(),
    )
        .into_response()
}

/// A router serving only `/_credproxy/metrics` (for `metrics.listen`).
pub fn metrics_router() -> axum::Router {
    axum::Router::new().route(
        "/_credproxy/metrics",
        axum::routing::get(|| async { metrics_text() }),
    )
}

/// Holds one in-flight slot until the response body is over.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::metrics().in_flight.dec();
    }
}

/// Every proxied request: the stages of `lib.rs`, in order, then one audit entry when the
/// response body is over.
async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let thread = request.extensions().get::<ServingThread>().copied();
    proxy_request(&app, peer, thread, request).await
}

/// The paths the router answers itself; every other request goes to [`proxy_request`]
/// without passing through the router.
fn is_router_path(path: &str) -> bool {
    matches!(
        path,
        "/_credproxy/health" | "/_credproxy/ready" | "/_credproxy/metrics"
    )
}

/// A request for the proxy (or the events endpoint), from client address `peer`, on
/// serving thread `thread`.
pub async fn proxy_request(
    app: &App,
    peer: Option<IpAddr>,
    thread: Option<ServingThread>,
    request: Request,
) -> Response {
    let client = client_address(
        request.headers(),
        peer,
        app.config.server.trusted_proxy_hops,
    );
    let mut cx = RequestContext::new(
        request_id(request.headers()),
        request.method(),
        request.uri(),
        request.headers(),
        client.map(|ip| ip.to_string()),
    );
    cx.client_ip = client;
    let count = app.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let slot = InFlight(app.in_flight.clone());
    crate::metrics::metrics().in_flight.inc();
    let result = if count > app.config.server.max_in_flight {
        Err(ProxyError::Overloaded)
    } else {
        pipeline(app, &mut cx, thread, request).await
    };
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            // Causes are logged where they happen, once per interval (the store) or per
            // upstream failure; the audit entry records every refusal.
            cx.reason = Some(if cx.decoy { "decoy" } else { err.reason() });
            err.into_response_with(&cx.request_id)
        }
    };
    let route_metrics = cx
        .route
        .as_deref()
        .and_then(|r| app.routes.get(r))
        .map_or(&app.unrouted, |r| &r.metrics);
    route_metrics.count(cx.allowed, response.status().as_u16());
    let total = cx.elapsed();
    if let Some(upstream) = cx.upstream_elapsed {
        route_metrics.upstream.observe(upstream.as_secs_f64());
        route_metrics
            .overhead
            .observe(total.saturating_sub(upstream).as_secs_f64());
    } else {
        route_metrics.overhead.observe(total.as_secs_f64());
    }
    let scrubbed = route_metrics.scrubbed.clone();
    Observed::wrap(response, cx, &app.audit, Box::new(slot), Some(scrubbed))
}

async fn pipeline(
    app: &App,
    cx: &mut RequestContext,
    thread: Option<ServingThread>,
    request: Request,
) -> Result<Response, ProxyError> {
    let (parts, body) = request.into_parts();
    if parts.uri.path() == EVENTS_PATH {
        return events(app, cx, parts, body).await;
    }
    if parts.uri.path().starts_with("/_credproxy/") || parts.uri.path() == "/_credproxy" {
        return Err(ProxyError::NotFound);
    }
    let decoys = &app.config.decoys;
    if !decoys.routes.is_empty() {
        // Even an unauthenticated probe of a decoy route raises the alert.
        let first = parts.uri.path().trim_start_matches('/').split('/').next();
        cx.decoy = first.is_some_and(|r| decoys.route(r));
    }

    // authenticate: 401 before anything about routes is disclosed.
    let caller = app.verifier.verify(&parts.headers).await?;
    cx.caller = Some(caller.email.clone());
    cx.decoy |= decoys.caller(&caller.email);

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

    // authorize: default deny. A decoy is refused exactly like a request no rule allows.
    let no_rule = || ProxyError::Forbidden {
        message: format!(
            "no rule of route `{}` allows caller {} to {} {}",
            route.spec.name, caller.email, parts.method, target.path
        ),
        reason: "forbidden",
    };
    if cx.decoy {
        return Err(no_rule());
    }
    if let Some(ranges) = &route.spec.source_ranges
        && !cx
            .client_ip
            .is_some_and(|ip| ranges.iter().any(|net| net.contains(&ip)))
    {
        return Err(ProxyError::Forbidden {
            message: format!(
                "client address {} is not in the source ranges of route `{}`",
                cx.client_ip
                    .map_or_else(|| "(unknown)".to_string(), |ip| ip.to_string()),
                route.spec.name
            ),
            reason: "source_not_allowed",
        });
    }
    match policy::authorize(
        &route.spec.allow,
        &caller.email,
        &parts.method,
        &target.path,
        chrono::Utc::now(),
    ) {
        Decision::Allow { .. } => cx.allowed = true,
        Decision::Deny(DenyReason::NoRule) => return Err(no_rule()),
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

    // limit: before the upstream (or the secret store) is contacted.
    if let Err(limited) = route.limits.check(&caller.email) {
        let scope = match limited.scope {
            crate::limit::LimitScope::Caller => "caller",
            crate::limit::LimitScope::Route => "route",
        };
        crate::metrics::metrics()
            .rate_limited
            .get_or_create(&crate::metrics::LimitLabels {
                route: route.spec.name.clone(),
                scope,
            })
            .inc();
        return Err(ProxyError::RateLimited(limited));
    }

    // resolve (and, for OAuth2 routes, the access token)
    let mut resolved = route.credential.current().await?;
    cx.secret_version = resolved.version.clone();
    let mut minted = route.credential.minted(&resolved).await?;

    // rewrite + forward; a small body is held so that a 401 caused by a rotated credential
    // or an expired token can be retried once with the new one.
    let mut _body_permit = None;
    let body = if route.spec.credential.inject.needs_body() {
        let expected = http_body::Body::size_hint(&body)
            .exact()
            .unwrap_or(route.spec.max_body_bytes)
            .min(route.spec.max_body_bytes);
        let kib = u32::try_from(expected.div_ceil(1024)).unwrap_or(u32::MAX);
        _body_permit = Some(
            app.body_budget
                .clone()
                .try_acquire_many_owned(kib)
                .map_err(|_| ProxyError::Overloaded)?,
        );
        proxy::buffered(body, route.spec.max_body_bytes).await?
    } else if route.credential.retries_on_401() {
        proxy::replayable(body, route.spec.max_body_bytes).await?
    } else {
        proxy::OutBody::Stream(body)
    };
    // Replayable: no body, or one held in memory of at most 64 KiB.
    let replay = match &body {
        proxy::OutBody::Full(bytes) if bytes.len() as u64 <= proxy::REPLAY_LIMIT => {
            Some(bytes.clone())
        }
        _ => None,
    };
    let query = proxy::caller_query(parts.uri.query(), &resolved);
    cx.set_query(parts.uri.path(), query.as_deref());
    let caller_sent_length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let outgoing = |resolved: &Resolved,
                    minted: Option<&Minted>,
                    body: proxy::OutBody|
     -> Result<proxy::Outgoing, ProxyError> {
        let mut out = proxy::Outgoing {
            method: parts.method.clone(),
            uri: proxy::upstream_url(
                &route.spec,
                &target.upstream_path,
                query.as_deref(),
                resolved,
            )?,
            headers: proxy::upstream_headers(&parts.headers, &route.spec, resolved, &cx.request_id),
            caller_sent_length,
            body,
        };
        if let Some(minted) = minted {
            out.headers.insert(
                http::header::AUTHORIZATION,
                minted.token.authorization().clone(),
            );
        }
        proxy::sign(&route.spec, resolved, &mut out)?;
        Ok(out)
    };
    let needles = |resolved: &Resolved, minted: Option<&Minted>| {
        let needles = match minted {
            Some(m) => m.scrub.clone(),
            None => resolved.scrub.clone(),
        };
        needles.filter(|_| route.spec.scrub_responses)
    };
    let route_client;
    let client = match &route.tls {
        Some(tls) => {
            route_client = tls.client(thread.map_or(0, |t| t.0))?;
            &route_client
        }
        None => app.client_for(thread),
    };
    let sent = tokio::time::Instant::now();
    let mut response = proxy::forward(
        client,
        &route.spec,
        outgoing(&resolved, minted.as_ref(), body)?,
        needles(&resolved, minted.as_ref()).as_ref(),
        &cx.request_id,
        &cx.scrubbed,
    )
    .await?;
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(replay) = replay
    {
        let retry = if let Some(newer) = route.credential.newer_than(&resolved).await {
            tracing::info!(
                route = %route.spec.name,
                from_version = resolved.version.as_deref().unwrap_or(""),
                to_version = newer.version.as_deref().unwrap_or(""),
                "upstream answered 401; retrying once with the newer credential"
            );
            resolved = newer;
            cx.secret_version = resolved.version.clone();
            true
        } else if let Some(m) = &minted
            && route.credential.invalidate_token(&m.token)
        {
            tracing::info!(route = %route.spec.name, "upstream answered 401 to the access token; retrying once with a new one");
            true
        } else {
            false
        };
        if retry {
            drop(response);
            minted = route.credential.minted(&resolved).await?;
            cx.retried = true;
            response = proxy::forward(
                client,
                &route.spec,
                outgoing(&resolved, minted.as_ref(), proxy::OutBody::Full(replay))?,
                needles(&resolved, minted.as_ref()).as_ref(),
                &cx.request_id,
                &cx.scrubbed,
            )
            .await?;
        }
    }
    cx.upstream_status = Some(response.status().as_u16());
    cx.upstream_elapsed = Some(sent.elapsed());
    Ok(response)
}

/// `POST /_credproxy/events/secret-manager`: Pub/Sub push of Secret Manager events.
async fn events(
    app: &App,
    cx: &mut RequestContext,
    parts: http::request::Parts,
    body: Body,
) -> Result<Response, ProxyError> {
    let Some(settings) = &app.config.events else {
        return Err(ProxyError::NotFound);
    };
    if parts.method != http::Method::POST {
        return Err(ProxyError::NotFound);
    }
    let pusher = app
        .verifier
        .verify_push(
            &parts.headers,
            &settings.audience,
            app.config.identity.cloud_run_invoker_check,
        )
        .await?;
    cx.caller = Some(pusher.email.clone());
    if !settings.callers.iter().any(|c| c.matches(&pusher.email)) {
        return Err(ProxyError::Forbidden {
            message: format!("{} may not deliver Secret Manager events", pusher.email),
            reason: "forbidden",
        });
    }
    cx.allowed = true;
    use http_body_util::BodyExt as _;
    let bytes = http_body_util::Limited::new(body, EVENT_BODY_LIMIT)
        .collect()
        .await
        .map_err(|_| {
            ProxyError::BadRequest(format!(
                "the event body is unreadable or over {EVENT_BODY_LIMIT} bytes"
            ))
        })?
        .to_bytes();
    let event = secrets::events::parse(&bytes).map_err(ProxyError::BadRequest)?;
    match event {
        SecretEvent::VersionChanged {
            secret_id,
            event_type,
        } => {
            let outcome = app.secrets.on_version_event(&secret_id);
            tracing::info!(secret_id, event_type, outcome = ?outcome, "Secret Manager event");
        }
        SecretEvent::RotationDue { secret_id } => {
            let configured = app.secrets.rotation_reminders(&secret_id);
            if !configured.is_empty() {
                tracing::warn!(
                    secret_id,
                    configured = ?configured,
                    "rotation is due for this secret: add a new version (credproxy picks it up at once)"
                );
            }
        }
        SecretEvent::Other { event_type } => {
            tracing::debug!(event_type = ?event_type, "Secret Manager event ignored");
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(X_REQUEST_ID, cx.request_id.clone());
    Ok(response)
}

/// Largest Pub/Sub push body read.
const EVENT_BODY_LIMIT: usize = 1024 * 1024;

/// The serving thread a request arrived on (a request extension), which picks its
/// upstream client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingThread(pub usize);

type ConnBuilder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

fn connection_builder(app: &App) -> ConnBuilder {
    let mut builder = ConnBuilder::new(TokioExecutor::new());
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
    builder
}

/// Serves one accepted connection on the current runtime until it closes or drains.
fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    thread: usize,
    app: &Arc<App>,
    router: &axum::Router,
    builder: &ConnBuilder,
    graceful: hyper_util::server::graceful::Watcher,
) -> impl Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    let router = router.clone();
    let app = app.clone();
    // Proxied requests skip the router (its matching, boxing and request extensions): it
    // only answers the three fixed `/_credproxy/*` endpoints.
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            if is_router_path(req.uri().path()) {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(ServingThread(thread));
                futures_util::future::Either::Left(router.clone().oneshot(req.map(Body::new)))
            } else {
                let app = app.clone();
                futures_util::future::Either::Right(async move {
                    let thread = Some(ServingThread(thread));
                    let response =
                        proxy_request(&app, Some(peer.ip()), thread, req.map(Body::new)).await;
                    Ok::<_, std::convert::Infallible>(response)
                })
            }
        });
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let conn = graceful.watch(conn);
    async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }
}

/// A serving thread: its own single-threaded runtime, fed accepted connections.
struct Worker {
    connections: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Connections it is serving now.
    open: Arc<AtomicUsize>,
    /// Completes (or fails) once it has drained after its queue was closed.
    drained: tokio::sync::oneshot::Receiver<()>,
}

/// Counts one connection of a serving thread while it lives (also if its task panics).
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts serving thread `index`. It serves the connections it is handed, each for its
/// whole life; when its queue closes it drains them and ends.
fn spawn_worker(
    index: usize,
    app: Arc<App>,
    router: axum::Router,
    builder: ConnBuilder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Worker> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
    let (drained_tx, drained) = tokio::sync::oneshot::channel();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    std::thread::Builder::new()
        .name(format!("credproxy-serve-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let graceful = hyper_util::server::graceful::GracefulShutdown::new();
                while let Some((stream, peer)) = rx.recv().await {
                    // Registered with this thread's runtime, so its readiness events and
                    // every task of the connection stay on this thread.
                    let stream = match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => stream,
                        Err(err) => {
                            counter.fetch_sub(1, Ordering::AcqRel);
                            tracing::warn!(error = %err, "cannot register an accepted connection");
                            continue;
                        }
                    };
                    let open = OpenConnection(counter.clone());
                    let conn = serve_connection(
                        stream,
                        peer,
                        index,
                        &app,
                        &router,
                        &builder,
                        graceful.watcher(),
                    );
                    tokio::spawn(async move {
                        let _open = open;
                        conn.await;
                    });
                }
                graceful.shutdown().await;
                let _ = drained_tx.send(());
                // Tasks on this runtime can still serve other threads (pooled connections of
                // a shared mutual-TLS client, a shared token mint): it lives until every
                // thread has drained.
                let _ = stop.wait_for(|stop| *stop).await;
            });
        })?;
    Ok(Worker {
        connections: tx,
        open,
        drained,
    })
}

/// Serves until `shutdown` completes, then stops accepting and drains in-flight requests for
/// up to [`DRAIN_TIMEOUT`].
///
/// With more than one serving thread ([`App::threads`]), each runs its own single-threaded
/// runtime and serves whole connections: a connection, its requests and their upstream
/// connections stay on one thread, like nginx's worker processes, so no request pays for
/// waking another thread. Each accepted connection goes to the thread serving the fewest.
/// With one, connections are served on the calling runtime.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router(app.clone());
    let builder = connection_builder(&app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = if app.threads() > 1 {
        (0..app.threads())
            .map(|i| {
                spawn_worker(
                    i,
                    app.clone(),
                    router.clone(),
                    builder.clone(),
                    stopped.clone(),
                )
            })
            .collect::<std::io::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
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
        if workers.is_empty() {
            tokio::spawn(serve_connection(
                stream,
                peer,
                0,
                &app,
                &router,
                &builder,
                graceful.watcher(),
            ));
            continue;
        }
        // Deregistered from this runtime, to be registered with the worker's.
        let mut handed = match stream.into_std() {
            Ok(stream) => (stream, peer),
            Err(err) => {
                tracing::warn!(error = %err, "cannot hand over an accepted connection");
                continue;
            }
        };
        loop {
            let Some(worker) = workers
                .iter()
                .filter(|w| !w.connections.is_closed())
                .min_by_key(|w| w.open.load(Ordering::Acquire))
            else {
                // Nothing can serve: stop, so the platform restarts the instance.
                return Err(std::io::Error::other(
                    "every serving thread has stopped; exiting",
                ));
            };
            worker.open.fetch_add(1, Ordering::AcqRel);
            match worker.connections.send(handed) {
                Ok(()) => break,
                Err(returned) => {
                    // A thread that stopped is never picked again; the next one serves it.
                    worker.open.fetch_sub(1, Ordering::AcqRel);
                    tracing::error!(
                        "a serving thread has stopped; handing its connections to the others"
                    );
                    handed = returned.0;
                }
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    // Closing a worker's queue makes it drain its connections and end.
    let drained: Vec<_> = workers
        .into_iter()
        .map(|w| {
            drop(w.connections);
            w.drained
        })
        .collect();
    let all_drained = async move {
        graceful.shutdown().await;
        for worker in drained {
            let _ = worker.await;
        }
    };
    tokio::select! {
        () = all_drained => tracing::info!("drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!(
            seconds = DRAIN_TIMEOUT.as_secs(),
            "in-flight requests still running at the drain deadline; exiting"
        ),
    }
    let _ = stop.send(true);
    Ok(())
}
