//! Configuration: the YAML file of the SPEC, parsed into types that cannot be invalid.
//!
//! Loading runs in three passes so that `credproxy check` can report every problem at once,
//! each with its key path (`routes.stripe.allow[0].paths[1]`) and line:
//!
//! 1. `saphyr` parses the YAML into a tree that remembers where each node stood; the tree
//!    becomes a `serde_json::Value` plus an index from key path to line.
//! 2. serde deserialises the value into the `Raw*` structs. `serde_ignored` collects *every*
//!    unknown key (serde's `deny_unknown_fields` would stop at the first one) and
//!    `serde_path_to_error` names the key of a type error.
//! 3. [`validate`] turns the raw structs into [`Config`], collecting every semantic problem
//!    (bad patterns, bad secret references, plaintext upstreams, ...) instead of stopping.
//!
//! Environment overrides go through a passed-in lookup so tests never touch the process
//! environment.

//! Files: [`raw`] the serde structs (the SPEC's keys, unvalidated), [`load`] the YAML
//! loader with its line index, [`validate`] the semantic checks; this file is the validated
//! model, plain data that the rest of credproxy reads (as linkerd's `app/core/config.rs`
//! against the `env.rs` loader on top).

mod load;
mod rate_limits;
mod raw;
mod route;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use reqwest::Url;

use crate::inject::CredentialSpec;
use crate::policy::{CallerPattern, Decoys, Rule};
use crate::secrets::reference::SecretRef;

pub use load::{config_path, load_file, parse};

/// Request bodies held whole in memory (for signing) across all requests, at most: beyond
/// it, requests that need one get 503 `overloaded` instead of exhausting memory.
pub const BODY_BUDGET_BYTES: u64 = 128 * 1024 * 1024;

/// Default path of the configuration file when neither `--config` nor `$CREDPROXY_CONFIG` is set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/credproxy/config.yaml";
/// Google's JWKS for ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Issuers of Google ID tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

// ------------------------------------------------------------------------------------------
// Problems

/// How bad a [`Problem`] is: errors stop `serve` and fail `check`, warnings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Worth a look; the configuration is still valid.
    Warning,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Key path such as `routes.stripe.allow[0].paths[1]`; empty for the whole file.
    pub path: String,
    /// 1-based line of the key (or of its nearest ancestor) when known.
    pub line: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let path = if self.path.is_empty() {
            "(file)"
        } else {
            &self.path
        };
        match self.line {
            Some(line) => write!(f, "{kind}: {path} (line {line}): {}", self.message),
            None => write!(f, "{kind}: {path}: {}", self.message),
        }
    }
}

/// Every problem of a configuration that could not be loaded.
#[derive(Debug, Clone)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

// ------------------------------------------------------------------------------------------
// Validated configuration

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Label copied into every audit entry.
    pub environment: Option<String>,
    /// Project id for trace ids in audit entries.
    pub project_id: Option<String>,
    /// Connection-level settings.
    pub server: ServerSettings,
    /// Caller token verification.
    pub identity: IdentitySettings,
    /// Secret resolution settings.
    pub secrets: SecretsSettings,
    /// Secret Manager event notifications (Pub/Sub push), when configured.
    pub events: Option<EventsSettings>,
    /// The metrics endpoint.
    pub metrics: MetricsSettings,
    /// Where `rate_limit` and `route_rate_limit` are counted (`rate_limits:`).
    pub rate_limits: RateLimitsSettings,
    /// Honeytoken routes and callers.
    pub decoys: Decoys,
    /// Routes, sorted by name.
    pub routes: Vec<RouteSpec>,
}

/// `server:` settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// More concurrent requests are answered 503 `overloaded`.
    pub max_in_flight: usize,
    /// More concurrent requests of one caller are answered 429 (`caller_concurrency`).
    pub max_in_flight_per_caller: usize,
    /// Slow or endless request headers are cut off after this.
    pub header_read_timeout: Duration,
    /// A request body pausing longer than this between bytes gets 408.
    pub body_idle_timeout: Duration,
    /// `X-Forwarded-For` entries to trust for the client address.
    pub trusted_proxy_hops: usize,
}

/// `identity:` settings.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Where the signing keys are published.
    pub jwks_url: Url,
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Clock skew allowed on `exp`, `iat` and `nbf`.
    pub leeway_seconds: u64,
    /// Whether Cloud Run's IAM invoker check runs in front of credproxy.
    pub cloud_run_invoker_check: bool,
}

/// `secrets:` settings.
#[derive(Debug, Clone)]
pub struct SecretsSettings {
    /// How long a resolved secret is served before re-resolving.
    pub cache_ttl: Duration,
    /// How long the last good value is served while the store fails.
    pub max_stale: Duration,
    /// Whether readiness waits for every credential to resolve once.
    pub warm_on_start: bool,
    /// Secret Manager endpoint override.
    pub secret_manager_endpoint: Option<String>,
    /// `credentials: anonymous` (emulators, tests) instead of Application Default Credentials.
    pub secret_manager_anonymous: bool,
}

/// `metrics:` settings.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// Serve `/_credproxy/metrics`.
    pub enabled: bool,
    /// Serve it on this address instead of the main port.
    pub listen: Option<SocketAddr>,
    /// On the main port, only these verified callers may read it.
    pub callers: Vec<CallerPattern>,
}

/// `rate_limits:` settings.
#[derive(Debug, Clone, Default)]
pub struct RateLimitsSettings {
    /// `backend: redis`: the shared store; `None` is `backend: local` (per instance).
    pub redis: Option<RedisSettings>,
}

/// `rate_limits.redis` (with `backend: redis`), `on_backend_failure` and `max_instances`.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL, without credentials.
    pub url: Url,
    /// The AUTH string, from a secret.
    pub auth: Option<SecretRef>,
    /// The only CA trusted for `rediss://`, from a secret.
    pub ca_bundle: Option<SecretRef>,
    /// Bounds the whole Redis exchange of one request.
    pub timeout: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
    /// What requests get while Redis fails.
    pub on_backend_failure: crate::limit::shared::FailureMode,
    /// Instances sharing the limits (required with `on_backend_failure: local`; else 1).
    pub max_instances: u32,
}

impl RedisSettings {
    /// The secret references, AUTH first.
    pub fn references(&self) -> impl Iterator<Item = &SecretRef> {
        [self.auth.as_ref(), self.ca_bundle.as_ref()]
            .into_iter()
            .flatten()
    }
}

/// `events:` settings.
#[derive(Debug, Clone)]
pub struct EventsSettings {
    /// `aud` of the push subscription's OIDC token.
    pub audience: String,
    /// Push service accounts allowed to deliver events.
    pub callers: Vec<CallerPattern>,
}

/// One route: `/{name}/...` forwarded to `upstream`.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// First path segment.
    pub name: String,
    /// Where requests go.
    pub upstream: Upstream,
    /// The credential injected into every forwarded request.
    pub credential: CredentialSpec,
    /// Allow rules; none matching means deny.
    pub allow: Vec<Rule>,
    /// Candidate rules judged beside `allow` but never enforced (`None`: not configured).
    pub shadow_allow: Option<Vec<Rule>>,
    /// Headers set on every upstream request.
    pub request_headers_set: Vec<(HeaderName, HeaderValue)>,
    /// Caller headers never forwarded.
    pub request_headers_remove: Vec<HeaderName>,
    /// Upstream response headers never passed back.
    pub response_headers_remove: Vec<HeaderName>,
    /// Until the upstream's response headers arrive.
    pub timeout: Duration,
    /// Longest pause inside a streaming response body.
    pub idle_timeout: Duration,
    /// Larger request bodies get 413.
    pub max_body_bytes: u64,
    /// Replace the injected value in upstream responses.
    pub scrub_responses: bool,
    /// Client addresses allowed (none: any).
    pub source_ranges: Option<Vec<ipnet::IpNet>>,
    /// Client certificate for mutual TLS to the upstream.
    pub upstream_tls: Option<UpstreamTls>,
    /// Per caller on this route.
    pub rate_limit: Option<crate::limit::RateSpec>,
    /// All callers of this route together.
    pub route_rate_limit: Option<crate::limit::RateSpec>,
}

impl RouteSpec {
    /// What the route allows, for [`crate::policy::authorize_request`].
    pub fn access(&self) -> crate::policy::Access<'_> {
        crate::policy::Access {
            route: &self.name,
            rules: &self.allow,
            shadow: self.shadow_allow.as_deref(),
            source_ranges: self.source_ranges.as_deref(),
        }
    }
}

/// An upstream base URL: scheme, authority and an optional base path (no trailing slash).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `https://host[:port]` with no trailing slash.
    pub origin: String,
    /// Base path without trailing slash, possibly empty.
    pub base_path: String,
    /// The scheme of `origin`, parsed once for the request path.
    pub scheme: http::uri::Scheme,
    /// The authority of `origin` (`host[:port]`), parsed once for the request path.
    pub authority: http::uri::Authority,
}

/// `upstream_tls:`: the secrets holding a client certificate, its key and optionally the
/// only CA bundle trusted for the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// PEM certificate chain, leaf first.
    pub certificate: SecretRef,
    /// PEM private key.
    pub key: SecretRef,
    /// PEM CA certificates; when set, the only roots trusted.
    pub ca_bundle: Option<SecretRef>,
}

impl UpstreamTls {
    /// The secret references, certificate first.
    pub fn references(&self) -> impl Iterator<Item = &SecretRef> {
        [
            Some(&self.certificate),
            Some(&self.key),
            self.ca_bundle.as_ref(),
        ]
        .into_iter()
        .flatten()
    }
}

#[cfg(test)]
mod tests;
