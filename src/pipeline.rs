//! The request path as code: [`handle`] wraps every request in its audit entry, and
//! [`pipeline`] runs the stages of the table in `lib.rs`, in order, each a plain function
//! below it that returns `Result<_, ProxyError>`.
//!
//! The one replay after an upstream 401 sits here, in the driver, the way pingora's
//! `process_request` owns its retry loop: a stage never re-runs another stage.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::Request;
use http::request::Parts;
use http::{StatusCode, Version};

use crate::audit::{AuditGuard, Observed, RequestContext};
use crate::credential::Resolved;
use crate::error::ProxyError;
use crate::headers::{client_address, request_id_of};
use crate::identity::Caller;
use crate::inject::oauth2::Minted;
use crate::limit::concurrency::Slot;
use crate::policy::{self, Attempt, Target};
use crate::proxy::{self, Answer, OutBody, rewrite::Rewrite};
use crate::state::{App, RouteRuntime, ServingThread};
use crate::upstream::UpstreamClient;

/// Where Pub/Sub pushes Secret Manager events.
pub const EVENTS_PATH: &str = "/_credproxy/events/secret-manager";

/// A response on its way to the caller: its body completes the audit entry and releases the
/// request's holds when it is over.
pub type Response = http::Response<Served>;

/// The body of a [`Response`].
pub type Served = Observed<Answer, Holds>;

/// Every request but the three the router answers: the stages in order (or the events
/// endpoint), then one audit entry when the response body is over. `peer` is the TCP peer,
/// `thread` the serving thread.
pub async fn handle(
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
    let optional = crate::headers::optional(request.headers());
    let cx = RequestContext::new(
        request_id_of(request.headers(), optional.request_id),
        request.method(),
        request.uri(),
        request.headers(),
        optional,
        client,
    );
    // From here on the request is audited, whatever happens to this future.
    let mut cx = AuditGuard::new(cx, &app.audit);
    let count = app.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let mut holds = Holds {
        _in_flight: InFlight(app.in_flight.clone()),
        caller: None,
    };
    // The route, once known: its metrics count the response.
    let mut routed = None;
    let path = request.uri().path();
    let result = if count > app.config.server.max_in_flight {
        Err(ProxyError::Overloaded)
    } else if path == EVENTS_PATH {
        // Rare paths are boxed here and below: their futures would otherwise make every
        // request's future larger, and every move of it a longer copy.
        Box::pin(crate::events::receive(app, &mut cx, request))
            .await
            .map(|r| r.map(proxy::streamed))
    } else if path.starts_with("/_credproxy/") || path == "/_credproxy" {
        Err(ProxyError::NotFound)
    } else {
        pipeline(app, &mut cx, thread, request, &mut holds, &mut routed).await
    };
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            // Causes are logged where they happen, once per interval (the store) or per
            // upstream failure; the audit entry records every refusal.
            cx.reason = Some(if cx.decoy { "decoy" } else { err.reason() });
            err.into_response_with(&cx.request_id).map(proxy::streamed)
        }
    };
    let route_metrics = routed.map_or(&app.unrouted, |r: &RouteRuntime| &r.metrics);
    // Each serving thread writes its own shard of the route's metrics.
    let shard = thread.map_or(0, |t| t.0);
    route_metrics.count(shard, cx.allowed, response.status().as_u16());
    let total = cx.elapsed();
    if let Some(upstream) = cx.upstream_elapsed {
        route_metrics.upstream.observe(shard, upstream);
        route_metrics
            .overhead
            .observe(shard, total.saturating_sub(upstream));
    } else {
        route_metrics.overhead.observe(shard, total);
    }
    Observed::wrap(response, cx, holds)
}

/// The stage table of `lib.rs`, in order.
pub async fn pipeline<'a>(
    app: &'a App,
    cx: &mut RequestContext,
    thread: Option<ServingThread>,
    request: Request,
    holds: &mut Holds,
    routed: &mut Option<&'a RouteRuntime>,
) -> Result<http::Response<Answer>, ProxyError> {
    let (parts, body) = request.into_parts();
    // Even an unauthenticated probe of a decoy route raises the alert.
    cx.decoy = app.config.decoys.probed(parts.uri.path());

    let caller = authenticate(app, cx, &parts).await?;
    let (route, target) = route(app, cx, &parts)?;
    *routed = Some(route);
    authorize(app, cx, route, &caller, &parts, &target)?;
    holds.caller = Some(limit(app, route, &caller, thread).await?);
    let (mut resolved, mut minted) = resolve(route, cx).await?;
    let body = proxy::rewrite::body_plan(
        &route.spec,
        &parts.headers,
        route.credential.retries_on_401(),
        &app.body_budget,
        app.config.server.body_idle_timeout,
        body,
    )
    .await?;
    let rewrite = Rewrite::new(&parts, &route.spec, &target, &resolved);
    cx.set_query(&parts.uri, rewrite.query());
    let client = upstream_client(app, route, thread).await?;

    let sent = tokio::time::Instant::now();
    let outgoing = rewrite.outgoing(
        &resolved,
        minted.as_ref(),
        body.body,
        &body.fault,
        &cx.request_id,
    )?;
    let mut response = forward(&client, route, cx, outgoing, &resolved, minted.as_ref()).await?;
    // One replay after a 401, with a rotated secret or a fresh token, when the body was held.
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(replay) = body.replay
        && let Some(newer) = Box::pin(
            route
                .credential
                .after_unauthorized(&resolved, minted.as_ref()),
        )
        .await
    {
        drop(response);
        resolved = newer;
        cx.secret_version = resolved.version.clone();
        minted = route.credential.minted(&resolved).await?;
        cx.retried = true;
        let outgoing = rewrite.outgoing(
            &resolved,
            minted.as_ref(),
            OutBody::Full(replay),
            &body.fault,
            &cx.request_id,
        )?;
        response = forward(&client, route, cx, outgoing, &resolved, minted.as_ref()).await?;
    }
    cx.upstream_status = Some(response.status().as_u16());
    cx.upstream_elapsed = Some(sent.elapsed());
    drop(body.permit);
    Ok(response)
}

/// authenticate: verify the bearer token (401 before anything about routes is disclosed).
async fn authenticate(
    app: &App,
    cx: &mut RequestContext,
    parts: &Parts,
) -> Result<Caller, ProxyError> {
    let caller = app.verifier.verify(&parts.headers).await?;
    cx.caller = Some(caller.email.clone());
    cx.decoy |= app.config.decoys.caller(&caller.email);
    Ok(caller)
}

/// route: origin-form target only (HTTP/2 always carries an authority; HTTP/1
/// absolute-form does not belong here), normalised, then the route (400, 404).
fn route<'a, 'p>(
    app: &'a App,
    cx: &mut RequestContext,
    parts: &'p Parts,
) -> Result<(&'a RouteRuntime, Target<'p>), ProxyError> {
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
    cx.route = Some(route.audit_names.0.clone());
    cx.secret = Some(route.audit_names.1.clone());
    Ok((route, target))
}

/// authorize: default deny, decided by the function `explain` uses too (403); on a route with
/// `shadow_allow`, the shadow decision is recorded for the audit entry and the metric.
fn authorize(
    app: &App,
    cx: &mut RequestContext,
    route: &RouteRuntime,
    caller: &Caller,
    parts: &Parts,
    target: &Target<'_>,
) -> Result<(), ProxyError> {
    let judged = policy::judge(
        &app.config.decoys,
        route.spec.access(),
        Attempt {
            caller: &caller.email,
            client_ip: cx.client_ip,
            method: &parts.method,
            path: &target.path,
            // Only an `expires` is compared with it: without one, any time judges the same.
            now: if route.expiring {
                chrono::Utc::now()
            } else {
                chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
            },
        },
    );
    if let Some(shadow) = judged.shadow {
        route
            .metrics
            .count_shadow(judged.enforced.is_ok(), shadow.is_some());
        let rule = shadow.and_then(|i| route.spec.shadow_allow.as_deref()?.get(i));
        cx.shadow = Some(crate::audit::ShadowEntry {
            decision: if rule.is_some() { "allow" } else { "deny" },
            rule: rule.map(|r| r.id.key.clone()),
        });
    }
    let allowed = judged.enforced?;
    cx.allowed = true;
    cx.rule = route.spec.allow.get(allowed.rule).map(|r| r.id.clone());
    Ok(())
}

/// limit: the caller's requests in flight, then its rate and the route's, in memory or
/// shared in Redis (`rate_limits`), before the store or the upstream is contacted (429, or
/// 503 with `on_backend_failure: closed`). The slot is held until the response is over.
async fn limit(
    app: &App,
    route: &RouteRuntime,
    caller: &Caller,
    thread: Option<ServingThread>,
) -> Result<Slot, ProxyError> {
    use crate::limit::redis::Refusal;
    let slot = app
        .concurrency
        .acquire(&caller.email)
        .map_err(ProxyError::CallerConcurrency)?;
    let verdict = match &app.shared_limits {
        Some(shared) => {
            Box::pin(shared.check(&route.spec.name, &caller.email, thread.map_or(0, |t| t.0))).await
        }
        None => route.limits.check(&caller.email).map_err(Refusal::Limited),
    };
    let limited = match verdict {
        Ok(()) => return Ok(slot),
        Err(Refusal::Unavailable) => return Err(ProxyError::RateLimiterUnavailable),
        Err(Refusal::Limited(limited)) => limited,
    };
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
    Err(ProxyError::RateLimited(limited))
}

/// resolve: the route's current credential and, for OAuth2 routes, its access token (503).
async fn resolve(
    route: &RouteRuntime,
    cx: &mut RequestContext,
) -> Result<(Arc<Resolved>, Option<Minted>), ProxyError> {
    let resolved = route.credential.resolve().await?;
    cx.secret_version = resolved.version.clone();
    let minted = route.credential.minted(&resolved).await?;
    Ok((resolved, minted))
}

/// The client for this route on this serving thread: the route's mutual-TLS client, or the
/// thread's pooled one.
async fn upstream_client<'a>(
    app: &'a App,
    route: &RouteRuntime,
    thread: Option<ServingThread>,
) -> Result<Cow<'a, UpstreamClient>, ProxyError> {
    Ok(match &route.tls {
        Some(tls) => Cow::Owned(Box::pin(tls.client(thread.map_or(0, |t| t.0))).await?),
        None => Cow::Borrowed(app.client_for(thread)),
    })
}

/// forward: stream to the upstream and back, scrubbing the injected value (413, 502, 504).
async fn forward(
    client: &UpstreamClient,
    route: &RouteRuntime,
    cx: &RequestContext,
    outgoing: proxy::Outgoing,
    resolved: &Resolved,
    minted: Option<&Minted>,
) -> Result<http::Response<Answer>, ProxyError> {
    let needles = match minted {
        Some(m) => m.scrub.as_ref(),
        None => resolved.scrub.as_ref(),
    }
    .filter(|_| route.spec.scrub_responses);
    // Boxed: the exchange's future is most of the request's, and the request future is
    // moved (copied whole) before it first runs.
    Box::pin(proxy::forward::forward(
        client,
        &route.spec,
        outgoing,
        needles,
        &cx.request_id,
        &cx.scrubbed,
        &route.metrics.scrubbed,
    ))
    .await
}

/// What a request holds until its response body is over.
pub struct Holds {
    _in_flight: InFlight,
    caller: Option<Slot>,
}

/// Holds one in-flight slot until the response body is over.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
