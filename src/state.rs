//! Shared state and wiring: the loaded config, each route with its live credential,
//! limiters, metrics and mutual-TLS client, the verifier, the store, the upstream clients
//! (one per serving thread) and the audit sink. Built once at start by [`App::new`]; every
//! request reads it, nothing on the request path writes it but counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::audit::AuditSink;
use crate::config::{Config, RouteSpec};
use crate::credential::Credential;
use crate::identity::Verifier;
use crate::metrics::RouteMetrics;
use crate::secrets::SecretStore;
use crate::upstream::upstream_client;

/// Request bodies held whole in memory (for signing) across all requests, at most: beyond
/// it, requests that need one get 503 `overloaded` instead of exhausting memory.
pub const BODY_BUDGET_KIB: usize = (crate::config::BODY_BUDGET_BYTES / 1024) as usize;

/// How long SIGTERM waits for in-flight requests by default (Cloud Run kills after 10 s).
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// The serving thread a request arrived on (a request extension), which picks its
/// upstream client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingThread(pub usize);

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
    /// Its name and its secret reference as the audit entry names them: shared, so a
    /// request's entry takes a reference count instead of copying them.
    pub audit_names: (Arc<str>, Arc<str>),
    /// Whether any of its rules (`allow` or `shadow_allow`) has `expires`: only then does
    /// judging a request read the calendar clock.
    pub expiring: bool,
}

/// Everything the handler needs, shared by all requests.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// Routes by name.
    pub routes: HashMap<String, RouteRuntime, foldhash::fast::RandomState>,
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
    /// Shared rate limits (`rate_limits.backend: redis`); `None`: each route's `limits`.
    pub shared_limits: Option<Arc<crate::limit::redis::SharedLimits>>,
    /// Requests in flight per caller (`server.max_in_flight_per_caller`).
    pub concurrency: Arc<crate::limit::concurrency::Concurrency>,
    /// How long SIGTERM waits for in-flight requests before cutting them.
    pub drain_timeout: std::time::Duration,
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// Bytes of request bodies held in memory for signing, in KiB permits.
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    /// Metric handles of requests that resolved no route.
    pub(crate) unrouted: RouteMetrics,
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
                let metrics = RouteMetrics::new(&spec.name)
                    .with_shadow(&spec.name, spec.shadow_allow.is_some());
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
                        expiring: spec
                            .allow
                            .iter()
                            .chain(spec.shadow_allow.iter().flatten())
                            .any(|r| r.expires.is_some()),
                        audit_names: (
                            Arc::from(spec.name.as_str()),
                            Arc::from(credential.resource()),
                        ),
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
        let concurrency =
            crate::limit::concurrency::Concurrency::new(config.server.max_in_flight_per_caller);
        let shared_limits = match &config.rate_limits.redis {
            None => None,
            Some(settings) => Some(Arc::new(
                crate::limit::redis::SharedLimits::new(
                    settings,
                    &config.routes,
                    secrets.clone(),
                    threads,
                )
                .map_err(crate::StartError::Setting)?,
            )),
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        // The in-flight gauge reads this counter when scraped.
        crate::metrics::metrics().in_flight.track(&in_flight);
        Ok(App {
            client,
            clients,
            routes,
            verifier,
            secrets,
            config,
            audit,
            concurrency,
            shared_limits,
            drain_timeout: DRAIN_TIMEOUT,
            in_flight,
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
