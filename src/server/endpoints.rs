//! The reserved endpoints the router answers: `/_credproxy/health`, `/_credproxy/ready` and
//! `/_credproxy/metrics` (also on its own listener with `metrics.listen`). Every other path
//! goes to the pipeline without passing through the router.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::error::ProxyError;
use crate::headers::{X_REQUEST_ID, request_id};
use crate::state::{App, ServingThread};

/// The router: reserved endpoints (any method), everything else through the pipeline.
pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/_credproxy/health", axum::routing::any(health))
        .route("/_credproxy/ready", axum::routing::any(ready))
        .route("/_credproxy/metrics", axum::routing::any(metrics_endpoint))
        .fallback(proxied)
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
    // Counts only: anyone can call this, and secret and route names are not theirs to
    // learn. The names are in the logs.
    let jwks = usize::from(!app.verifier.is_ready());
    let secrets = if app.config.secrets.warm_on_start {
        app.secrets.unresolved().len()
    } else {
        0
    };
    let credentials = if app.config.secrets.warm_on_start {
        app.routes
            .values()
            .filter(|r| !r.credential.is_ready())
            .count()
    } else {
        0
    };
    with_request_id(
        &headers,
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({
            "status": "starting",
            "waiting_for": {"jwks": jwks, "secrets": secrets, "credentials": credentials},
        }),
    )
}

/// `/_credproxy/metrics` on the main port: a verified caller listed in `metrics.callers`
/// (the series name routes and secrets).
async fn metrics_endpoint(State(app): State<Arc<App>>, headers: http::HeaderMap) -> Response {
    let id = request_id(&headers);
    if !app.config.metrics.enabled || app.config.metrics.listen.is_some() {
        return ProxyError::NotFound.into_response_with(&id);
    }
    let caller = match app.verifier.verify(&headers).await {
        Ok(caller) => caller,
        Err(err) => return ProxyError::Unauthenticated(err).into_response_with(&id),
    };
    if !app
        .config
        .metrics
        .callers
        .iter()
        .any(|c| c.matches(&caller.email))
    {
        return ProxyError::Forbidden {
            message: format!(
                "{} may not read the metrics: list it in metrics.callers",
                caller.email
            ),
            reason: "forbidden",
        }
        .into_response_with(&id);
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

/// The paths the router answers itself; every other request goes to [`crate::pipeline::handle`]
/// without passing through the router.
pub fn is_router_path(path: &str) -> bool {
    matches!(
        path,
        "/_credproxy/health" | "/_credproxy/ready" | "/_credproxy/metrics"
    )
}

/// A request the router was handed but does not answer itself.
async fn proxied(State(app): State<Arc<App>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let thread = request.extensions().get::<ServingThread>().copied();
    crate::pipeline::handle(&app, peer, thread, request)
        .await
        .map(axum::body::Body::new)
}
