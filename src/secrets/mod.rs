//! The secret store: where each secret comes from and the cache in front of every source.
//! It deals in raw values and store failures only; what a value becomes in a request is
//! [`crate::inject`]'s, and a route's live credential is [`crate::credential`]'s.
//!
//! - A [`SecretEntry`] per distinct secret reference holds the last good value ([`Fetched`])
//!   behind an `ArcSwap`: the request path reads it with one atomic load, no lock, no I/O.
//! - A background refresher per entry that can change (`versions/latest` in Secret Manager,
//!   `file:`) re-reads it before `cache_ttl_seconds` run out (refresh ahead), retries failures
//!   with backoff, and keeps serving the last good value up to `max_stale_seconds` past the
//!   TTL. Events and upstream 401s wake it early.
//! - A cold read (no value yet, e.g. `warm_on_start: false`) goes through a moka cache's
//!   `try_get_with`, so N concurrent first requests cause one Secret Manager call.
//!
//! Secret values live in `secrecy` types or sensitive `HeaderValue`s; neither prints its
//! content through `Debug`, and no error here carries a value.

mod env;
mod error;
pub mod events;
mod file;
mod initial;
pub mod reference;
pub mod secret_manager;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use secrecy::{ExposeSecret, SecretSlice};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{Config, SecretsSettings};
pub use error::SecretError;
use initial::{initial_value, rate_limit_references, start_failure};
pub use reference::SecretRef;
use secret_manager::{SecretManager, StoreFailure, Urgency};

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
    pub fn same_value(&self, other: &Fetched) -> bool {
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
/// How long a request that got a 401 waits for another request's store read of the same
/// secret before it gives up on a replay.
const UNAUTHORIZED_WAIT: Duration = Duration::from_secs(5);
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
    /// 401-triggered store reads, one at a time: a request waiting for one sees the value
    /// it found.
    unauthorized_gate: crate::flight::Gate,
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
            unauthorized_gate: crate::flight::Gate::default(),
            last_event: Mutex::new(None),
            last_failure_log: Mutex::new(None),
            last_rotation_reminder: Mutex::new(None),
            last_request_wake: Mutex::new(None),
            cold_failure: Mutex::new(None),
        }
    }

    /// Whether the value can change, so it is refreshed (and may go stale).
    pub fn refreshes(&self) -> bool {
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
    /// A secret of a setting outside routes (`rate_limits.redis.auth`) is missing.
    #[error("{key}: {source}")]
    Setting {
        /// The setting's key path.
        key: String,
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
    /// Builds the store with one entry per distinct secret reference. `env:` and
    /// `file:` values are read now: missing ones fail the start. Secret Manager values are
    /// read by the refreshers ([`SecretStore::spawn_refreshers`]).
    pub async fn build(
        config: &Config,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Arc<SecretStore>, BuildError> {
        // Every reference counts: credentials and upstream_tls material alike.
        let needs_sm = config.routes.iter().any(|r| {
            std::iter::once(&r.credential.secret)
                .chain(r.upstream_tls.iter().flat_map(|t| t.references()))
                .any(|s| matches!(s, SecretRef::SecretManager { .. }))
        }) || rate_limit_references(config)
            .any(|s| matches!(s, SecretRef::SecretManager { .. }));
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
        // Route credentials and materials, then the shared rate limiter's AUTH string and
        // CA (`None`): all read and refreshed alike.
        let references = config
            .routes
            .iter()
            .flat_map(|route| {
                std::iter::once(&route.credential.secret)
                    .chain(route.upstream_tls.iter().flat_map(|t| t.references()))
                    .map(move |r| (Some(route), r))
            })
            .chain(rate_limit_references(config).map(|r| (None, r)));
        for (route, reference) in references {
            let key = reference_key(reference);
            if entries.contains_key(&key) {
                continue;
            }
            let entry = Arc::new(SecretEntry::new(reference.clone(), key.clone()));
            if let Some(initial) = initial_value(reference, env).await {
                let fetched = initial.map_err(|detail| start_failure(route, reference, detail))?;
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
        Ok(store)
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
        // Versions only move forward: a read that started before a newer version was
        // installed (a background refresh racing a 401-triggered read) must not put the
        // older one back.
        let previous = entry.current.rcu(|current| match current {
            Some(old) if is_older(&fetched, old) => Some(old.clone()),
            _ => Some(fetched.clone()),
        });
        if let Some(old) = previous {
            if is_older(&fetched, &old) {
                tracing::debug!(
                    secret = %entry.reference.resource(),
                    kept_version = old.version.as_deref().unwrap_or(""),
                    read_version = fetched.version.as_deref().unwrap_or(""),
                    "an older secret version was read; the newer one stays"
                );
                return old;
            }
            if old.version != fetched.version {
                tracing::info!(
                    secret = %entry.reference.resource(),
                    from_version = old.version.as_deref().unwrap_or(""),
                    to_version = fetched.version.as_deref().unwrap_or(""),
                    "secret rotated"
                );
            }
        }
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
                if let Ok(mut held) = entry.cold_failure.lock() {
                    *held = None;
                }
                // The refresher may have installed the same value meanwhile: hand out the
                // installed one, so that everything derived from it (OAuth2 tokens, the
                // prepared form) is keyed on one generation.
                if let Some(current) = entry.current.load_full()
                    && current.same_value(&fetched)
                {
                    return Ok(current);
                }
                if entry.current.load().is_none() {
                    entry.current.store(Some(fetched.clone()));
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

    /// The value of `entry` to use now. Once warm this is one atomic load; only a cold
    /// secret waits for the store (one shared fetch for all concurrent callers). A value
    /// older than `cache_ttl + max_stale` is refused, and wakes the refresher (at most once
    /// per [`REQUEST_WAKE_INTERVAL`]).
    pub async fn read(&self, entry: &SecretEntry) -> Result<Arc<Fetched>, SecretError> {
        let fetched = match entry.current.load_full() {
            Some(fetched) => {
                entry.counters.hits.inc();
                fetched
            }
            None => {
                entry.counters.misses.inc();
                // Boxed, as every rare path of the request: its future would otherwise make
                // every request's future larger, and a move of it a longer copy.
                Box::pin(self.cold_read(entry)).await?
            }
        };
        if let Err(err) = self.usable(entry, &fetched) {
            if SecretEntry::claim(&entry.last_request_wake, REQUEST_WAKE_INTERVAL) {
                entry.wake.notify_one();
            }
            return Err(err);
        }
        if entry.refreshes() && fetched.fetched_at.elapsed() > self.settings.cache_ttl {
            entry.counters.stale.inc();
        }
        Ok(fetched)
    }

    /// After the upstream answered 401 to a request made with `used`: a different value of
    /// `entry`, if the store now has one. Reads the store at most once per secret per
    /// [`UNAUTHORIZED_CHECK_INTERVAL`]; concurrent callers wait for that one read.
    pub async fn newer_than(&self, entry: &SecretEntry, used: &Fetched) -> Option<Arc<Fetched>> {
        if !entry.refreshes() {
            return None;
        }
        let differs = |f: &Fetched| !f.same_value(used);
        if let Some(current) = entry.current.load_full()
            && differs(&current)
        {
            return Some(current);
        }
        // One store read at a time per secret, at most one per interval; the others wait for
        // it (bounded) and then look at what it installed. No lock is held while it runs.
        match entry.unauthorized_gate.turn(UNAUTHORIZED_CHECK_INTERVAL) {
            crate::flight::Turn::Lead(_leader) => match self.fetch(entry, Urgency::Request).await {
                Ok(fetched) if differs(&fetched) => Some(self.install(entry, fetched).await),
                Ok(_) => None,
                Err(err) => {
                    self.log_failure(entry, &err);
                    None
                }
            },
            crate::flight::Turn::Wait(done) => {
                crate::flight::wait(done, UNAUTHORIZED_WAIT).await;
                entry.current.load_full().filter(|c| differs(c))
            }
            crate::flight::Turn::Refused => None,
        }
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

/// Whether `new` is an older Secret Manager version than `old` (`versions/N`, numerically).
fn is_older(new: &Fetched, old: &Fetched) -> bool {
    let number = |f: &Fetched| f.version.as_deref().and_then(|v| v.parse::<u64>().ok());
    matches!((number(new), number(old)), (Some(n), Some(o)) if n < o)
}

fn reference_key(reference: &SecretRef) -> String {
    match reference {
        SecretRef::SecretManager { secret, version } => format!("{secret}/versions/{version}"),
        other => other.resource(),
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod version_order {
    use super::*;

    fn fetched(version: Option<&str>, value: &str) -> Fetched {
        Fetched::new(value.as_bytes().to_vec(), version.map(str::to_string))
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one() {
        let config = crate::config::parse(
            "identity: { audiences: [a] }\nroutes:\n  r:\n    upstream: \"https://x.example\"\n    credential: { secret: \"env:K\", inject: { header: { name: X-Key } } }\n",
            &|_| None,
        )
        .expect("config")
        .0;
        let store = SecretStore::build(&config, &|_| Some("v0-value-0000".to_string()))
            .await
            .expect("store");
        let entry = store.entries.values().next().expect("entry").clone();
        let v3 = store
            .install(&entry, fetched(Some("3"), "v3-value-3333"))
            .await;
        assert_eq!(v3.version.as_deref(), Some("3"));
        // A slower read of version 2 lands afterwards: version 3 stays.
        let kept = store
            .install(&entry, fetched(Some("2"), "v2-value-2222"))
            .await;
        assert_eq!(kept.version.as_deref(), Some("3"));
        assert_eq!(entry.current().expect("value").payload(), b"v3-value-3333");
        // Forward still moves, and 10 is after 9 (numbers, not text).
        store
            .install(&entry, fetched(Some("9"), "v9-value-9999"))
            .await;
        store
            .install(&entry, fetched(Some("10"), "v10-value-1010"))
            .await;
        assert_eq!(
            entry.current().expect("value").version.as_deref(),
            Some("10")
        );
    }
}
