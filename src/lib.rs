//! credproxy: a credential-injecting HTTP proxy for data pipelines on Google Cloud.
//!
//! A pipeline calls `METHOD /{route}/{rest}` with the Google-signed ID token of its service
//! account; credproxy verifies the token, checks a default-deny policy, injects the route's
//! credential and streams the exchange with the upstream. Pipelines never hold the secret.
//!
//! # Layout
//!
//! One crate in layers. A module imports only from its own layer or the layers below it, and
//! its own layer without cycles; the test `layers::modules_import_only_downwards` holds the
//! code to this table (a submodule not listed belongs to its nearest listed parent).
//!
//! | layer | module | what it owns |
//! |---|---|---|
//! | 0 | `headers` | the request id, the client address, the header tables credproxy owns |
//! | 0 | `policy` | path normalisation, patterns, decoys, `authorize_request` (no I/O: serve and explain share it) |
//! | 0 | `limit` | per-caller and per-route GCRA limiters; the shared limits' keys, memo and breaker (`limit::shared`) |
//! | 0 | `scrub` | finding the injected value in responses |
//! | 0 | `metrics` | the Prometheus registry and handles |
//! | 0 | `flight` | one refresh at a time, no lock held across its I/O |
//! | 0 | `telemetry` | operational logs and `error_chain` |
//! | 0 | `raw` | deserialising a value into its `Raw*` struct: every unknown key, a type error's key |
//! | 0 | `secrets::reference` | `SecretRef`, a secret reference as written |
//! | 0 | `secrets::events` | parsing Secret Manager's Pub/Sub payloads |
//! | 1 | `inject` | one file per credential kind: spec, typed parse, prepare, apply |
//! | 2 | `config` | the validated model (`mod.rs`), raw serde structs, loader, validators |
//! | 3 | `identity` | JWKS cache and ID-token verification |
//! | 3 | `secrets` | the store: sources (Secret Manager, env, file), cache, refreshers |
//! | 3 | `upstream` | the data-plane and control-plane clients, mutual TLS |
//! | 3 | `limit::redis` | shared rate limits in Redis: the script, the connections, the failure modes |
//! | 3 | `audit` | the audit entry, its writer and the body that completes it |
//! | 4 | `credential` | a route's live credential: resolve, mint, after an upstream 401 |
//! | 5 | `error` | `ProxyError`: the SPEC's status table, `From` each stage's error |
//! | 5 | `proxy` | rewrite (body plan, URL, headers) and forward (send, response hygiene) |
//! | 5 | `state` | `App` and its routes: the wiring built at start |
//! | 5 | `events` | the Pub/Sub push endpoint |
//! | 5 | `pipeline` | the stage table as code, audit wrapping it |
//! | 6 | `server` | the accept loop and drain, `/_credproxy/*`, thread-per-core serving |
//! | 6 | `dev` | the offline demo |
//! | 6 | `explain` | the policy dry run |
//! | 6 | `report` | the least-privilege report: audit input, usage, findings, proposals, HTML |
//!
//! # Stage order
//!
//! Every proxied request runs these stages in [`pipeline::pipeline`], each a plain function
//! there that returns `Result<_, ProxyError>` and calls into the file named:
//!
//! | stage | file | what | failure |
//! |---|---|---|---|
//! | authenticate | `identity.rs` | verify the bearer token, before anything about routes is said | 401 `unauthenticated` |
//! | route | `policy.rs`, `state.rs` | origin-form target, normalise the path, find the route | 400 `bad_request`, 404 `unknown_route` |
//! | authorize | `policy.rs` | decoys, source ranges, expired grants, the rules (default deny) | 403 `forbidden` |
//! | limit | `limit.rs`, `limit/redis.rs` | per caller and per route, in memory or shared in Redis | 429 `rate_limited`, 503 `rate_limiter_unavailable` |
//! | resolve | `credential.rs` | the route's current credential (and OAuth2 token) | 503 `credential_unavailable` |
//! | rewrite | `proxy/rewrite.rs`, `inject/` | body plan, upstream URL, clean headers, inject, sign | 413 `body_too_large` |
//! | forward | `proxy/forward.rs` | stream to the upstream and back, scrub; one replay after a 401 | 502, 504 |
//! | audit | `audit.rs` | one entry when the response body ends or is dropped ([`pipeline::handle`]) | never fails the request |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod config;
pub mod credential;
pub mod dev;
pub mod error;
pub mod events;
pub mod explain;
pub mod flight;
pub mod headers;
pub mod identity;
pub mod inject;
pub mod limit;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod raw;
pub mod report;
pub mod scrub;
pub mod secrets;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] config::Problems),
    /// A credential could not be resolved at start, or the store could not be reached.
    #[error("{0}")]
    Secret(#[from] secrets::BuildError),
    /// Binding the listener or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A route's credential could not be prepared at start.
    #[error("{0}")]
    Credential(#[from] credential::BuildError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The upstream client could not be built.
    #[error("cannot build the upstream client: {0}")]
    UpstreamClient(String),
    /// An environment setting has a value it cannot take.
    #[error("{0}")]
    Setting(String),
    /// A broken invariant found at start.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Resolves credentials, binds the listener, keeps the JWKS fresh and serves until
/// `shutdown` completes; then drains in-flight requests.
pub async fn run(
    config: config::Config,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_with(config, env, None, shutdown).await
}

/// [`run`] on `listener` when given (bound by the caller, as `dev` does before it prints
/// anything), else on a listener bound to `listen`.
pub async fn run_with(
    config: config::Config,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let threads = serving_threads(env)?;
    let verifier = Arc::new(identity::Verifier::new(&config.identity)?);
    let store = secrets::SecretStore::build(&config, env).await?;
    let credentials = credential::build_all(&config, &store).await?;
    let project_id = project_id(&config, env).await;
    let audit = audit::AuditSink::start(
        audit::AuditConfig {
            environment: config.environment.clone(),
            project_id: project_id.clone(),
        },
        Box::new(std::io::stdout()),
    )?;
    let drain_timeout = drain_timeout(env)?;
    let mut app = state::App::new(
        config,
        verifier.clone(),
        store.clone(),
        credentials,
        audit.clone(),
        threads,
    )?;
    app.drain_timeout = drain_timeout;
    let app = Arc::new(app);
    let listener = match listener {
        Some(listener) => listener,
        None => tokio::net::TcpListener::bind(app.config.listen).await?,
    };
    tracing::info!(
        address = %listener.local_addr()?,
        routes = app.routes.len(),
        serving_threads = app.threads(),
        environment = app.config.environment.as_deref().unwrap_or(""),
        jwks_url = %app.config.identity.jwks_url,
        project_id = project_id.as_deref().unwrap_or(""),
        "credproxy listening"
    );
    if let (true, Some(addr)) = (app.config.metrics.enabled, app.config.metrics.listen) {
        let metrics_listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(address = %metrics_listener.local_addr()?, "metrics listening");
        tokio::spawn(async move {
            if let Err(err) = axum::serve(metrics_listener, server::metrics_router()).await {
                tracing::error!(error = %err, "metrics listener stopped");
            }
        });
    }
    let evictor = tokio::spawn({
        let app = app.clone();
        async move {
            let mut tick = tokio::time::interval(limit::EVICT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for route in app.routes.values() {
                    route.limits.evict_idle();
                }
                if let Some(shared) = &app.shared_limits {
                    shared.sweep();
                }
            }
        }
    });
    if let Some(shared) = app.shared_limits.clone() {
        // Tells at once whether Redis answers; never holds up readiness.
        tokio::spawn(async move { shared.warm().await });
    }
    let refresher = tokio::spawn(verifier.run_refresher());
    store.spawn_refreshers();
    for route in app.routes.values() {
        tokio::spawn(route.credential.clone().run_token_refresher());
    }
    let result = server::serve(listener, app, shutdown).await;
    refresher.abort();
    evictor.abort();
    audit.flush().await;
    result.map_err(StartError::from)
}

/// How long SIGTERM waits for in-flight requests: `$CREDPROXY_DRAIN_SECONDS` (1-3600),
/// else [`state::DRAIN_TIMEOUT`] (8 s, inside Cloud Run's 10 s grace).
pub fn drain_timeout(
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<std::time::Duration, StartError> {
    match env("CREDPROXY_DRAIN_SECONDS").filter(|v| !v.trim().is_empty()) {
        None => Ok(state::DRAIN_TIMEOUT),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n @ 1..=3600) => Ok(std::time::Duration::from_secs(n)),
            _ => Err(StartError::Setting(format!(
                "CREDPROXY_DRAIN_SECONDS={v:?} is not a drain time: use whole seconds from 1 to 3600 (default 8, within Cloud Run's 10 s termination grace)"
            ))),
        },
    }
}

/// Threads that serve connections: `$CREDPROXY_WORKER_THREADS`, else one per CPU.
pub fn serving_threads(env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Result<usize, StartError> {
    match env("CREDPROXY_WORKER_THREADS").filter(|v| !v.trim().is_empty()) {
        None => Ok(std::thread::available_parallelism().map_or(1, usize::from)),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n @ 0..=1024) => Ok(n.max(1)),
            _ => Err(StartError::Setting(format!(
                "CREDPROXY_WORKER_THREADS={v:?} is not a thread count: use a whole number from 1 to 1024, or unset it for one per CPU"
            ))),
        },
    }
}

/// The project id for trace names: config, else `$GOOGLE_CLOUD_PROJECT`, else (on Cloud Run,
/// where `$K_SERVICE` is set) the metadata server, asked once with a short timeout.
async fn project_id(
    config: &config::Config,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Option<String> {
    if let Some(p) = &config.project_id {
        return Some(p.clone());
    }
    if let Some(p) = env("GOOGLE_CLOUD_PROJECT").filter(|p| !p.is_empty()) {
        return Some(p);
    }
    env("K_SERVICE")?;
    let host = env("GCE_METADATA_HOST").unwrap_or_else(|| "metadata.google.internal".to_string());
    let url = format!("http://{host}/computeMetadata/v1/project/project-id");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(1))
        .build()
        .ok()?;
    match client
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.text().await.ok().filter(|p| !p.is_empty()),
        Ok(r) => {
            tracing::warn!(status = %r.status(), "metadata server did not give the project id; audit entries carry no trace");
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, "metadata server unreachable; audit entries carry no trace");
            None
        }
    }
}

#[cfg(test)]
mod layers;
