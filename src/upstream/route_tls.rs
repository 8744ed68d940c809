//! A route's mutual-TLS client: built from its certificate, key and CA bundle secrets, and
//! rebuilt when any of them rotates, without a restart.
//!
//! The request path compares the three secrets' generations (three atomic loads) with the
//! ones the current client was built from; only after a rotation does it rebuild (once:
//! unchanged material, by fingerprint, keeps the client and its pooled connections). The
//! certificate and the key rotate as separate secrets, so a short window where they do not
//! match is expected: the previous client is kept, and the mismatch is logged once.
//!
//! A build makes one client per serving thread from the same TLS configuration, so, as on
//! routes without mutual TLS, a request's upstream connection lives on the thread serving
//! it.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use secrecy::SecretSlice;

use crate::secrets::{SecretEntry, SecretError, SecretStore};
use crate::upstream::UpstreamClient;
use crate::upstream::mtls::{TlsMaterial, build_tls_config, fingerprint};

type Generations = (u64, u64, u64);

struct Built {
    generations: Generations,
    fingerprint: [u8; 32],
    /// One client per serving thread, all from the same material, so a request's upstream
    /// connection lives on the thread serving it.
    clients: Vec<UpstreamClient>,
}

impl Built {
    fn client(&self, thread: usize) -> Result<UpstreamClient, SecretError> {
        self.clients
            .get(thread)
            .or_else(|| self.clients.first())
            .cloned()
            .ok_or_else(|| SecretError::Unavailable {
                resource: "upstream_tls".to_string(),
                detail: "no client was built".to_string(),
            })
    }
}

/// The TLS material of one route and the client built from it.
pub struct RouteTls {
    route: String,
    store: Arc<SecretStore>,
    certificate: Arc<SecretEntry>,
    key: Arc<SecretEntry>,
    ca_bundle: Option<Arc<SecretEntry>>,
    /// Serving threads (clients per build).
    threads: usize,
    built: ArcSwapOption<Built>,
    /// Generations whose material failed to build, so a bad pair is not retried per request.
    failed: Mutex<Option<Generations>>,
}

impl std::fmt::Debug for RouteTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteTls({})", self.route)
    }
}

impl RouteTls {
    /// The material of `route`, from its secret entries, for `threads` serving threads.
    pub fn new(
        route: &str,
        store: Arc<SecretStore>,
        certificate: Arc<SecretEntry>,
        key: Arc<SecretEntry>,
        ca_bundle: Option<Arc<SecretEntry>>,
        threads: usize,
    ) -> Self {
        RouteTls {
            route: route.to_string(),
            store,
            certificate,
            key,
            ca_bundle,
            threads: threads.max(1),
            built: ArcSwapOption::empty(),
            failed: Mutex::new(None),
        }
    }

    fn unavailable(&self, detail: String) -> SecretError {
        SecretError::Unavailable {
            resource: format!("upstream_tls of route {}", self.route),
            detail,
        }
    }

    /// The client serving thread `thread` uses now, rebuilt first if the material rotated.
    ///
    /// The material is read like a credential: from the cache, or (nothing read yet, as with
    /// `warm_on_start: false`) from its store on this first request, one shared read for all
    /// concurrent callers; past `cache_ttl + max_stale` without a good refresh it is refused.
    pub async fn client(&self, thread: usize) -> Result<UpstreamClient, SecretError> {
        let unavailable = |part: &str, err: SecretError| match err {
            SecretError::Unavailable { detail, .. } => {
                self.unavailable(format!("{part}: {detail}"))
            }
            other => other,
        };
        let certificate = self
            .store
            .read(&self.certificate)
            .await
            .map_err(|e| unavailable("client certificate", e))?;
        let key = self
            .store
            .read(&self.key)
            .await
            .map_err(|e| unavailable("client key", e))?;
        let ca = match &self.ca_bundle {
            Some(entry) => Some(
                self.store
                    .read(entry)
                    .await
                    .map_err(|e| unavailable("CA bundle", e))?,
            ),
            None => None,
        };
        let generations = (
            certificate.generation,
            key.generation,
            ca.as_ref().map_or(0, |c| c.generation),
        );
        let built = self.built.load_full();
        if let Some(b) = &built
            && b.generations == generations
        {
            return b.client(thread);
        }
        let keep_previous = |detail: String| match &built {
            Some(b) => b.client(thread),
            None => Err(self.unavailable(detail)),
        };
        if self.failed.lock().is_ok_and(|f| *f == Some(generations)) {
            return keep_previous("the TLS material does not build a client".to_string());
        }
        let material = TlsMaterial::new(
            certificate.payload().to_vec(),
            SecretSlice::from(key.payload().to_vec()),
            ca.as_ref().map(|c| c.payload().to_vec()),
        );
        let print = fingerprint(&material);
        if let Some(b) = &built
            && b.fingerprint == print
        {
            // Re-read, same material: keep the client and its pooled connections.
            let again = Arc::new(Built {
                generations,
                fingerprint: print,
                clients: b.clients.clone(),
            });
            self.built.store(Some(again.clone()));
            return again.client(thread);
        }
        match build_tls_config(&material) {
            Ok(config) => {
                if built.is_some() {
                    tracing::info!(route = %self.route, "upstream TLS material rotated; new client in use");
                }
                let fresh = Arc::new(Built {
                    generations,
                    fingerprint: print,
                    clients: (0..self.threads)
                        .map(|_| UpstreamClient::new(config.clone()))
                        .collect(),
                });
                self.built.store(Some(fresh.clone()));
                fresh.client(thread)
            }
            Err(detail) => {
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = Some(generations);
                }
                tracing::warn!(
                    route = %self.route,
                    error = %detail,
                    keeping_previous = built.is_some(),
                    "upstream TLS material cannot be used (a certificate and key rotating separately do not match for a moment)"
                );
                keep_previous(detail)
            }
        }
    }
}
