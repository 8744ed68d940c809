//! Credentials: where a route's secret comes from, the cache in front of every source, and
//! the prepared value injected into every forwarded request.
//!
//! - A [`SecretEntry`] per distinct secret reference holds the last good value ([`Fetched`])
//!   behind an `ArcSwap`: the request path reads it with one atomic load, no lock, no I/O.
//! - A background refresher per entry that can change (`versions/latest` in Secret Manager,
//!   `file:`) re-reads it before `cache_ttl_seconds` run out (refresh ahead), retries failures
//!   with backoff, and keeps serving the last good value up to `max_stale_seconds` past the
//!   TTL. Events and upstream 401s wake it early.
//! - A cold read (no value yet, e.g. `warm_on_start: false`) goes through a moka cache's
//!   `try_get_with`, so N concurrent first requests cause one Secret Manager call.
//! - A route's [`Credential`] prepares the injected form once per fetched value (header
//!   value built, basic auth encoded, query pair encoded), not once per request.
//!
//! Secret values live in `secrecy` types or sensitive `HeaderValue`s; neither prints its
//! content through `Debug`, and no error here carries a value.

mod env;
pub mod events;
mod file;
pub mod oauth2;
pub mod reference;
pub mod secret_manager;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{Config, CredentialSpec, Injection, SecretsSettings};
pub use reference::SecretRef;
use secret_manager::{SecretManager, StoreFailure, Urgency};

/// Why a credential could not be resolved. Messages name the secret, never its value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// The source has no value (unset variable, unreadable file, missing secret).
    #[error("secret {resource} is not available: {detail}")]
    Unavailable {
        /// The reference without version.
        resource: String,
        /// What went wrong, without the value.
        detail: String,
    },
    /// The payload is not UTF-8.
    #[error("secret {resource} is not valid UTF-8")]
    NotUtf8 {
        /// The reference without version.
        resource: String,
    },
    /// `field` is set but the payload is not a JSON object with that string field.
    #[error("secret {resource} has no string field `{field}` (its payload must be a JSON object)")]
    MissingField {
        /// The reference without version.
        resource: String,
        /// The configured field.
        field: String,
    },
    /// The value is empty.
    #[error("secret {resource} is empty")]
    Empty {
        /// The reference without version.
        resource: String,
    },
    /// Secret Manager did not give a value.
    #[error("secret {resource} cannot be read from Secret Manager: {failure}")]
    Store {
        /// The reference without version.
        resource: String,
        /// Why.
        failure: StoreFailure,
    },
    /// The OAuth2 token endpoint did not give an access token.
    #[error("route credential {resource}: no OAuth2 access token: {message}")]
    OAuth2 {
        /// The reference without version.
        resource: String,
        /// `oauth2_invalid_client`, `oauth2_unreachable`, ... (the audit reason).
        code: &'static str,
        /// The token endpoint's error, never a secret.
        message: String,
    },
    /// Every refresh failed for longer than `cache_ttl_seconds + max_stale_seconds`.
    #[error(
        "secret {resource} could not be refreshed for {age_seconds} s (more than cache_ttl_seconds + max_stale_seconds); its last value is no longer served"
    )]
    Stale {
        /// The reference without version.
        resource: String,
        /// Age of the last good value.
        age_seconds: u64,
    },
    /// The value cannot go into an HTTP header (control characters such as a newline).
    #[error("secret {resource} has characters that cannot be sent in an HTTP header")]
    NotHeaderSafe {
        /// The reference without version.
        resource: String,
    },
}

/// The credential in the form it is injected.
pub enum Prepared {
    /// Set this header (sensitive value).
    Header {
        /// Header name.
        name: HeaderName,
        /// Value, marked sensitive.
        value: HeaderValue,
    },
    /// Add this query parameter.
    Query {
        /// Parameter name (decoded), for removing caller-supplied copies.
        name: String,
        /// `name=value`, percent-encoded.
        pair: SecretString,
    },
    /// Sign each request with this HMAC key (the route's `HmacSpec` says how).
    Hmac {
        /// The key.
        key: SecretSlice<u8>,
    },
    /// Sign each request with AWS SigV4.
    AwsSigV4 {
        /// Access key id and secret.
        credentials: crate::signing::AwsCredentials,
    },
    /// Mint OAuth2 access tokens with these client credentials.
    OAuth2 {
        /// Client id and secret.
        credentials: Arc<oauth2::ClientCredentials>,
    },
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prepared::Header { name, .. } => write!(f, "Header({name}: [redacted])"),
            Prepared::Query { name, .. } => write!(f, "Query({name}=[redacted])"),
            Prepared::Hmac { .. } => f.write_str("Hmac([redacted])"),
            Prepared::AwsSigV4 { .. } => f.write_str("AwsSigV4([redacted])"),
            Prepared::OAuth2 { .. } => f.write_str("OAuth2([redacted])"),
        }
    }
}

/// A resolved credential version, ready to inject.
#[derive(Debug)]
pub struct Resolved {
    /// Version id from the store (`None` for `env:`/`file:`).
    pub version: Option<String>,
    /// The fetched value this was prepared from (`None` when prepared from raw bytes).
    pub source: Option<Arc<Fetched>>,
    /// The injected form.
    pub injection: Prepared,
    /// The value and its encoded forms, for scrubbing responses (`None` when too short).
    pub scrub: Option<Arc<crate::scrub::Needles>>,
}

/// Characters percent-encoded in an injected query parameter.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Turns a raw payload into the injected form: UTF-8, optional JSON field, then the
/// injection's format. `trim_newline` drops one trailing `\n` or `\r\n` (file secrets).
pub fn prepare(
    spec: &CredentialSpec,
    payload: &[u8],
    version: Option<String>,
) -> Result<Resolved, SecretError> {
    let resource = || spec.secret.resource();
    let text = std::str::from_utf8(payload).map_err(|_| SecretError::NotUtf8 {
        resource: resource(),
    })?;
    let field_value;
    let value: &str = match &spec.field {
        None => text,
        Some(field) => {
            let missing = || SecretError::MissingField {
                resource: resource(),
                field: field.clone(),
            };
            let json: serde_json::Value = serde_json::from_str(text).map_err(|_| missing())?;
            field_value = SecretString::from(
                json.get(field)
                    .and_then(|v| v.as_str())
                    .ok_or_else(missing)?
                    .to_string(),
            );
            field_value.expose_secret()
        }
    };
    if value.is_empty() {
        return Err(SecretError::Empty {
            resource: resource(),
        });
    }
    let header = |name: HeaderName, text: String| {
        let mut value = HeaderValue::from_str(&text).map_err(|_| SecretError::NotHeaderSafe {
            resource: resource(),
        })?;
        value.set_sensitive(true);
        Ok(Prepared::Header { name, value })
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
    let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.as_bytes());
    let pct = percent_encoding::utf8_percent_encode(value, QUERY).to_string();
    let mut basic_token = String::new();
    let mut extra_needle = String::new();
    let injection =
        match &spec.inject {
            Injection::Hmac(_) => Prepared::Hmac {
                key: SecretSlice::from(value.as_bytes().to_vec()),
            },
            Injection::OAuth2(_) => {
                let credentials =
                    oauth2::ClientCredentials::from_json(value.as_bytes()).map_err(|detail| {
                        SecretError::Unavailable {
                            resource: resource(),
                            detail,
                        }
                    })?;
                extra_needle = credentials.client_secret_text().to_string();
                Prepared::OAuth2 {
                    credentials: Arc::new(credentials),
                }
            }
            Injection::AwsSigV4(_) => {
                let credentials = crate::signing::AwsCredentials::from_json(value.as_bytes())
                    .map_err(|detail| SecretError::Unavailable {
                        resource: resource(),
                        detail,
                    })?;
                extra_needle = credentials.secret_access_key.expose_secret().to_string();
                Prepared::AwsSigV4 { credentials }
            }
            Injection::Header { name, format } => {
                header(name.clone(), format.replace("{secret}", value))?
            }
            Injection::Basic { username } => {
                basic_token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{value}").as_bytes());
                header(http::header::AUTHORIZATION, format!("Basic {basic_token}"))?
            }
            Injection::Query { name } => {
                let pair = format!(
                    "{}={}",
                    percent_encoding::utf8_percent_encode(name, QUERY),
                    percent_encoding::utf8_percent_encode(value, QUERY)
                );
                Prepared::Query {
                    name: name.clone(),
                    pair: SecretString::from(pair),
                }
            }
        };
    let scrub = crate::scrub::Needles::new(&[
        value.as_bytes(),
        b64.as_bytes(),
        b64_url.as_bytes(),
        pct.as_bytes(),
        basic_token.as_bytes(),
        extra_needle.as_bytes(),
    ])
    .map(Arc::new);
    Ok(Resolved {
        version,
        source: None,
        injection,
        scrub,
    })
}

/// A raw secret value as read from its source, with when it was read.
pub struct Fetched {
    payload: SecretSlice<u8>,
    /// Version id (Secret Manager) or `None`.
    pub version: Option<String>,
    /// When it was read.
    pub fetched_at: Instant,
    /// Increases whenever the value changes (not on a re-read of the same value): what
    /// derived state such as OAuth2 tokens is keyed on.
    pub generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fetched(version {:?}, [redacted])", self.version)
    }
}

impl Fetched {
    fn new(payload: Vec<u8>, version: Option<String>) -> Self {
        Fetched {
            payload: SecretSlice::from(payload),
            version,
            fetched_at: Instant::now(),
            generation: next_generation(),
        }
    }

    /// The raw payload.
    pub fn payload(&self) -> &[u8] {
        self.payload.expose_secret()
    }

    /// Same version and same bytes.
    fn same_value(&self, other: &Fetched) -> bool {
        self.version == other.version
            && self.payload.expose_secret() == other.payload.expose_secret()
    }
}

/// Minimum time between two event-triggered re-reads of one secret.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);
/// Minimum time between two refresher wake-ups caused by requests finding a value stale.
pub const REQUEST_WAKE_INTERVAL: Duration = Duration::from_secs(5);
/// Minimum time between two rotation reminders for one secret.
pub const ROTATION_REMINDER_INTERVAL: Duration = Duration::from_secs(300);
/// Minimum time between two store reads of one secret caused by upstream 401s.
pub const UNAUTHORIZED_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How often the same store failure of one secret is logged.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(300);

/// One distinct secret reference, shared by every route that uses it.
pub struct SecretEntry {
    reference: SecretRef,
    key: String,
    current: ArcSwapOption<Fetched>,
    /// `projects/NUMBER/secrets/ID`, learned from the first access.
    canonical: ArcSwapOption<String>,
    wake: Notify,
    /// Serialises 401-triggered store reads: a request waiting here sees the value the
    /// previous one found.
    unauthorized_gate: tokio::sync::Mutex<Option<Instant>>,
    last_event: Mutex<Option<Instant>>,
    last_failure_log: Mutex<Option<(String, Instant)>>,
    /// Rotation reminders (`SECRET_ROTATE`) logged at most once per interval.
    last_rotation_reminder: Mutex<Option<Instant>>,
    /// Request-triggered wake-ups of the refresher, at most one per interval: a failing
    /// store must not be re-read at request rate.
    last_request_wake: Mutex<Option<Instant>>,
    /// A failed cold read, held (with a growing hold) so requests do not each re-read.
    cold_failure: Mutex<Option<(Instant, Duration, SecretError)>>,
    counters: SecretCounters,
}

/// Metric handles of one secret.
struct SecretCounters {
    hits: Counter,
    misses: Counter,
    failures: Counter,
    stale: Counter,
}

impl fmt::Debug for SecretEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretEntry({})", self.key)
    }
}

impl SecretEntry {
    fn new(reference: SecretRef, key: String) -> Self {
        let m = crate::metrics::metrics();
        let label = crate::metrics::SecretLabel {
            secret: reference.resource(),
        };
        let counters = SecretCounters {
            hits: m.secret_hits.get_or_create_owned(&label),
            misses: m.secret_misses.get_or_create_owned(&label),
            failures: m.secret_refresh_failures.get_or_create_owned(&label),
            stale: m.secret_stale_serves.get_or_create_owned(&label),
        };
        SecretEntry {
            counters,
            reference,
            key,
            current: ArcSwapOption::empty(),
            canonical: ArcSwapOption::empty(),
            wake: Notify::new(),
            unauthorized_gate: tokio::sync::Mutex::new(None),
            last_event: Mutex::new(None),
            last_failure_log: Mutex::new(None),
            last_rotation_reminder: Mutex::new(None),
            last_request_wake: Mutex::new(None),
            cold_failure: Mutex::new(None),
        }
    }

    /// Whether the value can change, so it is refreshed (and may go stale).
    fn refreshes(&self) -> bool {
        match &self.reference {
            SecretRef::Env(_) => false,
            SecretRef::File(_) => true,
            SecretRef::SecretManager { version, .. } => version == "latest",
        }
    }

    /// Claims one slot of a per-interval budget; false when the last claim is too recent.
    fn claim(slot: &Mutex<Option<Instant>>, interval: Duration) -> bool {
        let Ok(mut last) = slot.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < interval) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Every secret the configuration names, their sources and the cold-read cache.
pub struct SecretStore {
    settings: SecretsSettings,
    secret_manager: Option<SecretManager>,
    entries: HashMap<String, Arc<SecretEntry>>,
    cold: moka::future::Cache<String, Arc<Fetched>>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretStore({} secrets)", self.entries.len())
    }
}

/// Why the store could not be built at start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An `env:`/`file:` secret is missing or unusable.
    #[error("route `{route}`: {source}")]
    Secret {
        /// The route.
        route: String,
        /// What failed.
        source: SecretError,
    },
    /// The Secret Manager client could not be built.
    #[error("{0}")]
    SecretManager(String),
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// These secrets are being re-read.
    Refreshing(Vec<String>),
    /// Matching secrets were re-read less than [`EVENT_INTERVAL`] ago.
    RateLimited,
    /// No configured secret matches.
    Ignored,
}

impl SecretStore {
    /// Builds the store and one [`Credential`] per route (in config order). `env:` and
    /// `file:` values are read now: missing ones fail the start. Secret Manager values are
    /// read by the refreshers ([`SecretStore::spawn_refreshers`]).
    pub async fn build(
        config: &Config,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<(Arc<SecretStore>, Vec<Arc<Credential>>), BuildError> {
        let needs_sm = config
            .routes
            .iter()
            .any(|r| matches!(r.credential.secret, SecretRef::SecretManager { .. }));
        let secret_manager = if needs_sm {
            Some(
                SecretManager::connect(
                    config.secrets.secret_manager_endpoint.as_deref(),
                    config.secrets.secret_manager_anonymous,
                )
                .await
                .map_err(BuildError::SecretManager)?,
            )
        } else {
            None
        };
        let mut entries: HashMap<String, Arc<SecretEntry>> = HashMap::new();
        let references = config.routes.iter().flat_map(|route| {
            std::iter::once(&route.credential.secret)
                .chain(route.upstream_tls.iter().flat_map(|t| t.references()))
                .map(move |r| (route, r))
        });
        for (route, reference) in references {
            let key = reference_key(reference);
            if entries.contains_key(&key) {
                continue;
            }
            let entry = Arc::new(SecretEntry::new(reference.clone(), key.clone()));
            let initial = match reference {
                SecretRef::Env(name) => Some(
                    env::read(name, env)
                        .map(|v| Fetched::new(v.expose_secret().as_bytes().to_vec(), None)),
                ),
                SecretRef::File(path) => Some(
                    file::read(path)
                        .await
                        .map(|v| Fetched::new(v.expose_secret().as_bytes().to_vec(), None)),
                ),
                SecretRef::SecretManager { .. } => None,
            };
            if let Some(initial) = initial {
                let fetched = initial.map_err(|detail| BuildError::Secret {
                    route: route.name.clone(),
                    source: SecretError::Unavailable {
                        resource: reference.resource(),
                        detail,
                    },
                })?;
                entry.current.store(Some(Arc::new(fetched)));
            }
            entries.insert(key, entry);
        }
        let store = Arc::new(SecretStore {
            cold: moka::future::Cache::builder()
                .max_capacity(entries.len() as u64 + 16)
                .time_to_live(config.secrets.cache_ttl)
                .build(),
            settings: config.secrets.clone(),
            secret_manager,
            entries,
        });
        let mut credentials = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let entry = store
                .entries
                .get(&reference_key(&route.credential.secret))
                .cloned()
                .ok_or_else(|| BuildError::SecretManager("internal: entry missing".to_string()))?;
            let token_source = match &route.credential.inject {
                Injection::OAuth2(spec) => Some(oauth2::TokenSource::new(
                    spec.clone(),
                    crate::upstream::reqwest_client().map_err(|e| {
                        BuildError::SecretManager(format!("cannot build the OAuth2 client: {e}"))
                    })?,
                )),
                _ => None,
            };
            let credential = Arc::new(Credential {
                spec: route.credential.clone(),
                resource: route.credential.secret.resource(),
                entry,
                store: store.clone(),
                prepared: ArcSwapOption::empty(),
                token_source,
                token_scrub: ArcSwapOption::empty(),
            });
            // A value that cannot be injected (not UTF-8, no such field, a newline in a
            // header) fails the start for env:/file:; Secret Manager values fail per request.
            if credential.entry.current.load().is_some() {
                credential
                    .current()
                    .await
                    .map_err(|source| BuildError::Secret {
                        route: route.name.clone(),
                        source,
                    })?;
            }
            credentials.push(credential);
        }
        Ok((store, credentials))
    }

    /// Starts one background refresher per secret that can change, and a one-time warmer for
    /// pinned Secret Manager versions; they run until the runtime stops.
    pub fn spawn_refreshers(self: &Arc<Self>) {
        for entry in self.entries.values() {
            if entry.refreshes() || entry.current.load().is_none() {
                tokio::spawn(self.clone().refresh_loop(entry.clone()));
            }
        }
    }

    async fn refresh_loop(self: Arc<Self>, entry: Arc<SecretEntry>) {
        let mut backoff = Duration::from_secs(1);
        let mut healthy = true;
        // Warm at once unless told not to (then the first request reads it, cold).
        let mut first = entry.current.load().is_none() && self.settings.warm_on_start;
        loop {
            // Woken by an event, a 401 or a request that found the value stale: someone is
            // waiting, so use the short retry budget.
            let mut urgency = Urgency::Background;
            if !first {
                let wait = if healthy {
                    // Refresh ahead: well before the TTL runs out.
                    (self.settings.cache_ttl * 9 / 10).max(Duration::from_millis(500))
                } else {
                    backoff
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = entry.wake.notified() => urgency = Urgency::Request,
                }
            }
            first = false;
            match self.fetch(&entry, urgency).await {
                Ok(fetched) => {
                    self.install(&entry, fetched).await;
                    backoff = Duration::from_secs(1);
                    if !healthy {
                        tracing::info!(secret = %entry.reference.resource(), "secret refresh recovered");
                    }
                    healthy = true;
                    if !entry.refreshes() {
                        // A pinned version never changes: read once, cached until evicted.
                        return;
                    }
                }
                Err(err) => {
                    healthy = false;
                    entry.counters.failures.inc();
                    self.log_failure(&entry, &err);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Logs a failed read: a disabled newest version at ERROR every time it is seen, other
    /// failures once per interval per kind (not per request).
    fn log_failure(&self, entry: &SecretEntry, err: &SecretError) {
        let kind = match err {
            SecretError::Store { failure, .. } => format!("{failure:?}"),
            other => other.to_string(),
        };
        let serving_stale = entry.current.load().is_some();
        if let SecretError::Store {
            failure: StoreFailure::Disabled,
            ..
        } = err
        {
            tracing::error!(secret = %entry.reference.resource(), serving_last_good = serving_stale, error = %err, "the newest secret version is disabled or destroyed");
            return;
        }
        let due = match entry.last_failure_log.lock() {
            Ok(mut last) => {
                let now = Instant::now();
                let due = !matches!(&*last, Some((k, t)) if *k == kind && now.duration_since(*t) < FAILURE_LOG_INTERVAL);
                if due {
                    *last = Some((kind, now));
                }
                due
            }
            Err(_) => true,
        };
        if due {
            tracing::error!(secret = %entry.reference.resource(), serving_last_good = serving_stale, error = %err, "secret refresh failed");
        }
    }

    /// Reads the secret from its source.
    async fn fetch(&self, entry: &SecretEntry, urgency: Urgency) -> Result<Fetched, SecretError> {
        let resource = entry.reference.resource();
        match &entry.reference {
            SecretRef::Env(_) => entry
                .current
                .load_full()
                .map(|f| Fetched::new(f.payload.expose_secret().to_vec(), None))
                .ok_or(SecretError::Unavailable {
                    resource,
                    detail: "environment variable was not set at start".to_string(),
                }),
            SecretRef::File(path) => file::read(path)
                .await
                .map(|v| Fetched::new(v.expose_secret().as_bytes().to_vec(), None))
                .map_err(|detail| SecretError::Unavailable { resource, detail }),
            SecretRef::SecretManager { .. } => {
                let client = self
                    .secret_manager
                    .as_ref()
                    .ok_or(SecretError::Unavailable {
                        resource: resource.clone(),
                        detail: "no Secret Manager client".to_string(),
                    })?;
                let accessed = client
                    .access(&entry.key, urgency)
                    .await
                    .map_err(|failure| SecretError::Store { resource, failure })?;
                if entry.canonical.load().is_none() {
                    entry
                        .canonical
                        .store(Some(Arc::new(accessed.canonical.clone())));
                }
                Ok(Fetched {
                    payload: accessed.payload,
                    version: Some(accessed.version),
                    fetched_at: Instant::now(),
                    generation: next_generation(),
                })
            }
        }
    }

    async fn install(&self, entry: &SecretEntry, mut fetched: Fetched) -> Arc<Fetched> {
        if let Some(old) = entry.current.load_full()
            && old.same_value(&fetched)
        {
            // A re-read of the same value: derived state (OAuth2 tokens) stays valid.
            fetched.generation = old.generation;
        }
        let fetched = Arc::new(fetched);
        if let Some(old) = entry.current.load_full()
            && old.version != fetched.version
        {
            tracing::info!(
                secret = %entry.reference.resource(),
                from_version = old.version.as_deref().unwrap_or(""),
                to_version = fetched.version.as_deref().unwrap_or(""),
                "secret rotated"
            );
        }
        entry.current.store(Some(fetched.clone()));
        self.cold.insert(entry.key.clone(), fetched.clone()).await;
        fetched
    }

    /// A read with nothing cached yet: concurrent callers share one fetch.
    async fn cold_read(&self, entry: &SecretEntry) -> Result<Arc<Fetched>, SecretError> {
        if let Ok(held) = entry.cold_failure.lock()
            && let Some((until, _, err)) = held.as_ref()
            && Instant::now() < *until
        {
            return Err(err.clone());
        }
        let result = self
            .cold
            .try_get_with(entry.key.clone(), async {
                self.fetch(entry, Urgency::Request).await.map(Arc::new)
            })
            .await;
        match result {
            Ok(fetched) => {
                if entry.current.load().is_none() {
                    entry.current.store(Some(fetched.clone()));
                }
                if let Ok(mut held) = entry.cold_failure.lock() {
                    *held = None;
                }
                Ok(fetched)
            }
            Err(err) => {
                self.log_failure(entry, &err);
                // Hold the failure (1 s, doubling to 30 s) so each request does not re-read.
                if let Ok(mut held) = entry.cold_failure.lock() {
                    let hold = held.as_ref().map_or(Duration::from_secs(1), |(_, h, _)| {
                        (*h * 2).min(Duration::from_secs(30))
                    });
                    *held = Some((Instant::now() + hold, hold, (*err).clone()));
                }
                Err((*err).clone())
            }
        }
    }

    /// Whether a fetched value may still be served.
    fn usable(&self, entry: &SecretEntry, fetched: &Fetched) -> Result<(), SecretError> {
        if !entry.refreshes() {
            return Ok(());
        }
        let age = fetched.fetched_at.elapsed();
        if age <= self.settings.cache_ttl + self.settings.max_stale {
            Ok(())
        } else {
            Err(SecretError::Stale {
                resource: entry.reference.resource(),
                age_seconds: age.as_secs(),
            })
        }
    }

    /// The entry of a configured secret reference.
    pub fn entry(&self, reference: &SecretRef) -> Option<Arc<SecretEntry>> {
        self.entries.get(&reference_key(reference)).cloned()
    }

    /// Whether every secret has a value (readiness).
    pub fn all_resolved(&self) -> bool {
        self.entries.values().all(|e| e.current.load().is_some())
    }

    /// Secrets without a value yet, for the readiness answer.
    pub fn unresolved(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.current.load().is_none())
            .map(|e| e.reference.resource())
            .collect();
        out.sort();
        out
    }

    /// Handles a Secret Manager event about `secret_id` (`projects/NUMBER/secrets/ID`):
    /// wakes the refresher of every matching secret, at most once per [`EVENT_INTERVAL`].
    pub fn on_version_event(&self, secret_id: &str) -> EventOutcome {
        let matching: Vec<&Arc<SecretEntry>> = self
            .entries
            .values()
            .filter(|e| e.refreshes() && e.matches_event(secret_id))
            .collect();
        if matching.is_empty() {
            return EventOutcome::Ignored;
        }
        let mut woken = Vec::new();
        for entry in matching {
            if SecretEntry::claim(&entry.last_event, EVENT_INTERVAL) {
                entry.wake.notify_one();
                woken.push(entry.reference.resource());
            }
        }
        if woken.is_empty() {
            EventOutcome::RateLimited
        } else {
            EventOutcome::Refreshing(woken)
        }
    }

    /// The configured resources matching a `SECRET_ROTATE` event that are due a reminder
    /// (at most one per secret per [`ROTATION_REMINDER_INTERVAL`]); empty for unknown
    /// secrets, so forged events cannot flood the log.
    pub fn rotation_reminders(&self, secret_id: &str) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.matches_event(secret_id))
            .filter(|e| SecretEntry::claim(&e.last_rotation_reminder, ROTATION_REMINDER_INTERVAL))
            .map(|e| e.reference.resource())
            .collect()
    }

    /// Whether a fetched value of `entry` may still be served (`cache_ttl + max_stale`).
    pub fn check_usable(&self, entry: &SecretEntry, fetched: &Fetched) -> Result<(), SecretError> {
        self.usable(entry, fetched)
    }
}

impl SecretEntry {
    /// The current value, if any (for values used whole, such as TLS material).
    pub fn current(&self) -> Option<Arc<Fetched>> {
        self.current.load_full()
    }

    /// Events name the project by number: match on the canonical name learned from the first
    /// access, else on the configured name, else (not read yet) on the secret id alone.
    fn matches_event(&self, secret_id: &str) -> bool {
        let SecretRef::SecretManager { secret, .. } = &self.reference else {
            return false;
        };
        if let Some(canonical) = self.canonical.load().as_deref() {
            return canonical.as_str() == secret_id;
        }
        secret == secret_id
            || secret
                .rsplit('/')
                .next()
                .is_some_and(|id| secret_id.rsplit('/').next() == Some(id))
    }
}

fn reference_key(reference: &SecretRef) -> String {
    match reference {
        SecretRef::SecretManager { secret, version } => format!("{secret}/versions/{version}"),
        other => other.resource(),
    }
}

/// A route's credential: the injected form of its secret's current value.
pub struct Credential {
    spec: CredentialSpec,
    resource: String,
    entry: Arc<SecretEntry>,
    store: Arc<SecretStore>,
    prepared: ArcSwapOption<Resolved>,
    /// OAuth2 routes: mints and caches access tokens.
    token_source: Option<oauth2::TokenSource>,
    /// The current token's scrub needles, computed once per token.
    token_scrub: ArcSwapOption<(Arc<oauth2::AccessToken>, Option<Arc<crate::scrub::Needles>>)>,
}

/// An OAuth2 access token to inject, with its scrub needles.
pub struct Minted {
    /// The token.
    pub token: Arc<oauth2::AccessToken>,
    /// Its value and encodings, for scrubbing responses.
    pub scrub: Option<Arc<crate::scrub::Needles>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.resource)
    }
}

impl Credential {
    /// The secret reference without version, for audit entries.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Whether the secret has a value (readiness).
    pub fn is_resolved(&self) -> bool {
        self.entry.current.load().is_some()
    }

    /// Whether a newer value can appear (worth a retry after an upstream 401).
    pub fn can_rotate(&self) -> bool {
        self.entry.refreshes()
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

    /// For OAuth2 routes, the access token to inject with `resolved`'s client credentials;
    /// `None` for other kinds.
    pub async fn minted(&self, resolved: &Resolved) -> Result<Option<Minted>, SecretError> {
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
                .map_err(|e| SecretError::OAuth2 {
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
        let value = token.value().expose_secret();
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        let scrub = crate::scrub::Needles::new(&[value.as_bytes(), b64.as_bytes()]).map(Arc::new);
        self.token_scrub
            .store(Some(Arc::new((token.clone(), scrub.clone()))));
        Ok(Some(Minted { token, scrub }))
    }

    /// After an upstream 401 to `token`: drop it so the next request mints a new one; true
    /// when that happened here (so a replay makes sense).
    pub fn invalidate_token(&self, token: &oauth2::AccessToken) -> bool {
        self.token_source
            .as_ref()
            .is_some_and(|s| s.invalidate(token))
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
            let resolved = match self.current().await {
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
            if generation == last_generation
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

    /// The value to inject now. Once warm this is two atomic loads; only a cold secret waits
    /// for the store (one shared fetch for all concurrent callers).
    pub async fn current(&self) -> Result<Arc<Resolved>, SecretError> {
        let fetched = match self.entry.current.load_full() {
            Some(fetched) => {
                self.entry.counters.hits.inc();
                fetched
            }
            None => {
                self.entry.counters.misses.inc();
                self.store.cold_read(&self.entry).await?
            }
        };
        if let Err(err) = self.store.usable(&self.entry, &fetched) {
            if SecretEntry::claim(&self.entry.last_request_wake, REQUEST_WAKE_INTERVAL) {
                self.entry.wake.notify_one();
            }
            return Err(err);
        }
        if self.entry.refreshes() && fetched.fetched_at.elapsed() > self.store.settings.cache_ttl {
            self.entry.counters.stale.inc();
        }
        self.prepared_for(fetched)
    }

    fn prepared_for(&self, fetched: Arc<Fetched>) -> Result<Arc<Resolved>, SecretError> {
        if let Some(p) = self.prepared.load_full()
            && p.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, &fetched))
        {
            return Ok(p);
        }
        let mut resolved = prepare(
            &self.spec,
            fetched.payload.expose_secret(),
            fetched.version.clone(),
        )?;
        resolved.source = Some(fetched);
        let resolved = Arc::new(resolved);
        self.prepared.store(Some(resolved.clone()));
        Ok(resolved)
    }

    /// After the upstream answered 401 to `used`: a different value, if the store now has one.
    /// Reads the store at most once per secret per [`UNAUTHORIZED_CHECK_INTERVAL`].
    pub async fn newer_than(&self, used: &Resolved) -> Option<Arc<Resolved>> {
        if !self.can_rotate() {
            return None;
        }
        let used_source = used.source.as_ref()?;
        let differs = |f: &Fetched| !f.same_value(used_source);
        if let Some(current) = self.entry.current.load_full()
            && differs(&current)
        {
            return self.prepared_for(current).ok();
        }
        let mut last = self.entry.unauthorized_gate.lock().await;
        // Another request may have found a newer value while this one waited.
        if let Some(current) = self.entry.current.load_full()
            && differs(&current)
        {
            return self.prepared_for(current).ok();
        }
        if last.is_some_and(|t| t.elapsed() < UNAUTHORIZED_CHECK_INTERVAL) {
            return None;
        }
        *last = Some(Instant::now());
        match self.store.fetch(&self.entry, Urgency::Request).await {
            Ok(fetched) if differs(&fetched) => {
                let fetched = self.store.install(&self.entry, fetched).await;
                self.prepared_for(fetched).ok()
            }
            Ok(_) => None,
            Err(err) => {
                self.store.log_failure(&self.entry, &err);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(secret: &str, field: Option<&str>, inject: Injection) -> CredentialSpec {
        CredentialSpec {
            secret: SecretRef::parse(secret).expect("ref"),
            field: field.map(str::to_string),
            inject,
        }
    }

    fn bearer() -> Injection {
        Injection::Header {
            name: HeaderName::from_static("authorization"),
            format: "Bearer {secret}".to_string(),
        }
    }

    #[test]
    fn parses_references() {
        assert_eq!(
            SecretRef::parse("projects/acme/secrets/stripe-key/versions/latest"),
            Ok(SecretRef::SecretManager {
                secret: "projects/acme/secrets/stripe-key".to_string(),
                version: "latest".to_string()
            })
        );
        assert_eq!(
            SecretRef::parse("env:KEY_1").map(|r| r.resource()),
            Ok("env:KEY_1".into())
        );
        assert!(SecretRef::parse("file:/run/key").is_ok());
        for bad in [
            "env:",
            "env:A-B",
            "file:relative",
            "projects/acme/secrets/x",
            "projects/acme/secrets/x/versions/abc",
            "vault:x",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prepares_header_basic_and_query() {
        let r = prepare(&spec("env:K", None, bearer()), b"s3cr3t", None).expect("ok");
        let Prepared::Header { value, .. } = &r.injection else {
            panic!("header")
        };
        assert_eq!(value.as_bytes(), b"Bearer s3cr3t");
        assert!(value.is_sensitive());

        let basic = Injection::Basic {
            username: "api".to_string(),
        };
        let r = prepare(&spec("env:K", None, basic), b"pw", None).expect("ok");
        let Prepared::Header { value, .. } = &r.injection else {
            panic!("header")
        };
        assert_eq!(value.as_bytes(), b"Basic YXBpOnB3");

        let query = Injection::Query {
            name: "api key".to_string(),
        };
        let r = prepare(&spec("env:K", None, query), b"a&b=c", None).expect("ok");
        let Prepared::Query { pair, .. } = &r.injection else {
            panic!("query")
        };
        assert_eq!(pair.expose_secret(), "api%20key=a%26b%3Dc");
    }

    #[test]
    fn extracts_a_json_field() {
        let s = spec("env:K", Some("token"), bearer());
        let r = prepare(&s, br#"{"token":"t0k","other":1}"#, None).expect("ok");
        assert!(format!("{r:?}").contains("[redacted]"));
        let err = prepare(&s, br#"{"other":"x"}"#, None).expect_err("missing");
        assert!(matches!(err, SecretError::MissingField { .. }));
        let err = prepare(&s, b"not json", None).expect_err("not json");
        assert!(!err.to_string().contains("not json"));
    }

    #[test]
    fn errors_never_contain_the_value() {
        let s = spec("env:K", None, bearer());
        let err = prepare(&s, b"line1\nline2-SECRETVALUE", None).expect_err("newline");
        assert!(matches!(err, SecretError::NotHeaderSafe { .. }));
        assert!(!err.to_string().contains("SECRETVALUE"));
        assert!(!format!("{err:?}").contains("SECRETVALUE"));
        let err = prepare(&s, &[0xff, 0xfe], None).expect_err("utf8");
        assert!(matches!(err, SecretError::NotUtf8 { .. }));
        let err = prepare(&s, b"", None).expect_err("empty");
        assert!(matches!(err, SecretError::Empty { .. }));
    }
}
