//! A route's live credential: its secret's store entry, the value prepared for injection
//! (once per fetched value, not per request), the OAuth2 token source and its refresher,
//! and what happens after an upstream 401.
//!
//! - [`Credential::resolve`]: the value to inject now. Warm, this is two atomic loads.
//! - [`Credential::minted`]: for OAuth2 routes, the access token for that value.
//! - [`Credential::after_unauthorized`]: after an upstream 401, a value worth one replay (a
//!   newer secret version, or a re-minted token), or nothing.
//!
//! Failures are the store's ([`SecretError`]: unreachable, missing, stale) or the value's
//! ([`InjectError`]: wrong shape, not header-safe, no OAuth2 token); [`CredentialError`]
//! carries either to the request path.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use crate::config::Config;
use crate::inject::oauth2::{self, AccessToken, Minted};
use crate::inject::{self, CredentialSpec, InjectError, Injection, Prepared};
use crate::scrub::Needles;
use crate::secrets::{Fetched, SecretEntry, SecretError, SecretStore};

/// Why a route's credential cannot be had now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// The store has no usable value.
    #[error(transparent)]
    Store(#[from] SecretError),
    /// The value cannot be injected, or no OAuth2 token could be minted with it.
    #[error(transparent)]
    Inject(#[from] InjectError),
}

/// Why the credentials could not be built at start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An `env:`/`file:` value that cannot be injected.
    #[error("route `{route}`: {source}")]
    Value {
        /// The route.
        route: String,
        /// What failed.
        source: CredentialError,
    },
    /// A client or entry the credential needs is missing.
    #[error("{0}")]
    Setup(String),
}

/// A resolved credential version, ready to inject.
#[derive(Debug)]
pub struct Resolved {
    /// Version id from the store (`None` for `env:`/`file:`).
    pub version: Option<String>,
    /// The fetched value this was prepared from.
    pub source: Option<Arc<Fetched>>,
    /// The injected form.
    pub injection: Prepared,
    /// The value and its encoded forms, for scrubbing responses (`None` when too short).
    pub scrub: Option<Arc<Needles>>,
}

impl Resolved {
    /// Prepares `payload` for `spec` (no store: for tests and tools).
    pub fn prepare(
        spec: &CredentialSpec,
        payload: &[u8],
        version: Option<String>,
    ) -> Result<Self, InjectError> {
        let ready = inject::prepare(spec, payload)?;
        Ok(Resolved {
            version,
            source: None,
            injection: ready.injection,
            scrub: ready.scrub,
        })
    }
}

/// A route's credential: the injected form of its secret's current value.
pub struct Credential {
    route: String,
    spec: CredentialSpec,
    resource: String,
    entry: Arc<SecretEntry>,
    store: Arc<SecretStore>,
    prepared: ArcSwapOption<Resolved>,
    /// OAuth2 routes: mints and caches access tokens.
    token_source: Option<oauth2::TokenSource>,
    /// The current token's scrub needles, computed once per token.
    token_scrub: ArcSwapOption<(Arc<AccessToken>, Option<Arc<Needles>>)>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.resource)
    }
}

/// One [`Credential`] per route, in config order. A value that cannot be injected (not
/// UTF-8, no such field, a newline in a header) fails the start for `env:`/`file:`; Secret
/// Manager values fail per request.
pub async fn build_all(
    config: &Config,
    store: &Arc<SecretStore>,
) -> Result<Vec<Arc<Credential>>, BuildError> {
    let mut credentials = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let entry = store.entry(&route.credential.secret).ok_or_else(|| {
            BuildError::Setup(format!(
                "internal: no secret entry for route {}",
                route.name
            ))
        })?;
        let token_source = match &route.credential.inject {
            Injection::OAuth2(spec) => Some(oauth2::TokenSource::new(
                spec.clone(),
                crate::upstream::reqwest_client().map_err(|e| {
                    BuildError::Setup(format!("cannot build the OAuth2 client: {e}"))
                })?,
            )),
            _ => None,
        };
        let credential = Arc::new(Credential {
            route: route.name.clone(),
            spec: route.credential.clone(),
            resource: route.credential.secret.resource(),
            entry,
            store: store.clone(),
            prepared: ArcSwapOption::empty(),
            token_source,
            token_scrub: ArcSwapOption::empty(),
        });
        if credential.entry.current().is_some() {
            credential
                .resolve()
                .await
                .map_err(|source| BuildError::Value {
                    route: route.name.clone(),
                    source,
                })?;
        }
        credentials.push(credential);
    }
    Ok(credentials)
}

impl Credential {
    /// The secret reference without version, for audit entries.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The route's credential spec.
    pub fn spec(&self) -> &CredentialSpec {
        &self.spec
    }

    /// Whether the secret has a value (readiness).
    pub fn is_resolved(&self) -> bool {
        self.entry.current().is_some()
    }

    /// Whether requests can be replayed after a 401 (a rotated secret or a re-minted token).
    pub fn retries_on_401(&self) -> bool {
        self.entry.refreshes() || self.token_source.is_some()
    }

    /// Whether the route is ready: its secret resolved and, for OAuth2, a token minted.
    pub fn is_ready(&self) -> bool {
        self.is_resolved()
            && self
                .token_source
                .as_ref()
                .is_none_or(|s| s.refresh_due_at().is_some())
    }

    /// The value to inject now. Once warm this is two atomic loads; only a cold secret waits
    /// for the store (one shared fetch for all concurrent callers).
    pub async fn resolve(&self) -> Result<Arc<Resolved>, CredentialError> {
        let fetched = self.store.read(&self.entry).await?;
        Ok(self.prepared_for(fetched)?)
    }

    fn prepared_for(&self, fetched: Arc<Fetched>) -> Result<Arc<Resolved>, InjectError> {
        if let Some(p) = self.prepared.load_full()
            && p.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, &fetched))
        {
            return Ok(p);
        }
        let mut resolved =
            Resolved::prepare(&self.spec, fetched.payload(), fetched.version.clone())?;
        resolved.source = Some(fetched);
        let resolved = Arc::new(resolved);
        self.prepared.store(Some(resolved.clone()));
        Ok(resolved)
    }

    /// For OAuth2 routes, the access token to inject with `resolved`'s client credentials;
    /// `None` for other kinds.
    pub async fn minted(&self, resolved: &Resolved) -> Result<Option<Minted>, CredentialError> {
        let (Some(source), Prepared::OAuth2 { credentials }) =
            (&self.token_source, &resolved.injection)
        else {
            return Ok(None);
        };
        let generation = resolved.source.as_ref().map_or(0, |s| s.generation);
        let token =
            source
                .token(credentials, generation)
                .await
                .map_err(|e| InjectError::OAuth2 {
                    resource: self.resource.clone(),
                    code: e.code(),
                    message: e.to_string(),
                })?;
        if let Some(cached) = self.token_scrub.load_full()
            && Arc::ptr_eq(&cached.0, &token)
        {
            return Ok(Some(Minted {
                token,
                scrub: cached.1.clone(),
            }));
        }
        let minted = Minted::new(token);
        self.token_scrub
            .store(Some(Arc::new((minted.token.clone(), minted.scrub.clone()))));
        Ok(Some(minted))
    }

    /// After the upstream answered 401 to a request made with `used` (and `minted`, for
    /// OAuth2 routes): the value to replay the request with once, or `None` when a replay
    /// would change nothing.
    ///
    /// A newer secret version comes first (the store is read at most once per secret per
    /// interval); else an OAuth2 token that got the 401 is dropped, so the replay mints a
    /// new one.
    pub async fn after_unauthorized(
        &self,
        used: &Arc<Resolved>,
        minted: Option<&Minted>,
    ) -> Option<Arc<Resolved>> {
        if let Some(source) = &used.source
            && let Some(newer) = self.store.newer_than(&self.entry, source).await
            && let Ok(newer) = self.prepared_for(newer)
        {
            tracing::info!(
                route = %self.route,
                from_version = used.version.as_deref().unwrap_or(""),
                to_version = newer.version.as_deref().unwrap_or(""),
                "upstream answered 401; retrying once with the newer credential"
            );
            return Some(newer);
        }
        if let Some(m) = minted
            && let Some(source) = &self.token_source
            && source.after_unauthorized(&m.token) != oauth2::Unauthorized::Kept
        {
            tracing::info!(route = %self.route, "upstream answered 401 to the access token; retrying once with a new one");
            return Some(used.clone());
        }
        None
    }

    /// OAuth2 routes: mints ahead of expiry (and at once when the client secret rotates) so
    /// no request waits for the token endpoint. Runs until the runtime stops.
    pub async fn run_token_refresher(self: Arc<Self>) {
        let Some(source) = &self.token_source else {
            return;
        };
        let mut backoff = Duration::from_secs(1);
        let mut last_generation = 0;
        loop {
            let resolved = match self.resolve().await {
                Ok(resolved) => resolved,
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            let Prepared::OAuth2 { credentials } = &resolved.injection else {
                return;
            };
            let generation = resolved.source.as_ref().map_or(0, |s| s.generation);
            let due = source.refresh_due_at();
            // An older generation is the same value re-read (or a cold read that lost the
            // race to install): the token minted for the newer one serves it.
            if generation <= last_generation
                && let Some(due) = due
            {
                // Sleep until the refresh is due, but look for a rotated secret every 5 s.
                let wake = due.min(Instant::now() + Duration::from_secs(5));
                tokio::time::sleep_until(wake).await;
                if Instant::now() < due {
                    continue;
                }
            }
            match source.refresh(credentials, generation).await {
                Ok(_) => {
                    last_generation = generation;
                    backoff = Duration::from_secs(1);
                }
                Err(err) => {
                    tracing::error!(credential = %self.resource, code = err.code(), error = %err, "OAuth2 token refresh failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
