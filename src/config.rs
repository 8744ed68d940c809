//! Configuration: the YAML file of the SPEC, parsed into types that cannot be invalid.
//!
//! Loading runs in three passes so that `credproxy check` can report every problem at once,
//! each with its key path (`routes.stripe.allow[0].paths[1]`) and line:
//!
//! 1. `saphyr` parses the YAML into a tree that remembers where each node stood; the tree
//!    becomes a `serde_json::Value` plus an index from key path to line.
//! 2. serde deserialises the value into the `Raw*` structs ([`crate::raw`]): `serde_ignored`
//!    collects *every* unknown key (serde's `deny_unknown_fields` would stop at the first
//!    one) and `serde_path_to_error` names the key of a type error.
//! 3. [`validate`] turns the raw structs into [`Config`], collecting every semantic problem
//!    (bad patterns, bad secret references, plaintext upstreams, ...) instead of stopping.
//!
//! Environment overrides go through a passed-in lookup so tests never touch the process
//! environment.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue, Method};
use reqwest::Url;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde::Deserialize;

use crate::inject::{CredentialSpec, Injection};
use crate::policy::{CallerPattern, Decoys, PathPattern, Rule};
use crate::secrets::reference::SecretRef;

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
// Raw schema (serde). Field names are the SPEC's keys.

/// An empty section (`secrets:` with nothing under it, or only comments) means defaults.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    listen: Option<String>,
    environment: Option<String>,
    project_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    server: RawServer,
    #[serde(default, deserialize_with = "null_as_default")]
    metrics: RawMetrics,
    #[serde(default, deserialize_with = "null_as_default")]
    decoys: RawDecoys,
    identity: Option<RawIdentity>,
    #[serde(default, deserialize_with = "null_as_default")]
    secrets: RawSecrets,
    events: Option<RawEvents>,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
}

#[derive(Debug, Deserialize)]
struct RawEvents {
    pubsub_push_audience: Option<String>,
    #[serde(default)]
    pubsub_push_callers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawServer {
    max_in_flight: Option<i64>,
    header_read_timeout_seconds: Option<i64>,
    trusted_proxy_hops: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMetrics {
    #[serde(default)]
    enabled: bool,
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDecoys {
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    callers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawIdentity {
    #[serde(default)]
    audiences: Vec<String>,
    jwks_url: Option<String>,
    issuers: Option<Vec<String>>,
    leeway_seconds: Option<i64>,
    #[serde(default)]
    cloud_run_invoker_check: bool,
}

#[derive(Debug, Default, Deserialize)]
struct RawSecrets {
    cache_ttl_seconds: Option<i64>,
    max_stale_seconds: Option<i64>,
    warm_on_start: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    secret_manager: RawSecretManager,
}

#[derive(Debug, Default, Deserialize)]
struct RawSecretManager {
    endpoint: Option<String>,
    credentials: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawRoute {
    upstream: String,
    credential: RawCredential,
    upstream_tls: Option<RawUpstreamTls>,
    #[serde(default)]
    allow: Vec<RawRule>,
    #[serde(default, deserialize_with = "null_as_default")]
    request_headers: RawRequestHeaders,
    #[serde(default, deserialize_with = "null_as_default")]
    response_headers: RawResponseHeaders,
    scrub_responses: Option<bool>,
    source_ranges: Option<Vec<String>>,
    rate_limit: Option<RawRate>,
    route_rate_limit: Option<RawRate>,
    timeout_seconds: Option<i64>,
    idle_timeout_seconds: Option<i64>,
    max_body_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct RawUpstreamTls {
    client_certificate: String,
    client_key: String,
    ca_bundle: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawRate {
    per_second: f64,
    burst: i64,
}

#[derive(Debug, Deserialize)]
struct RawCredential {
    secret: String,
    field: Option<String>,
    inject: crate::inject::RawInject,
}

#[derive(Debug, Deserialize)]
struct RawRule {
    #[serde(default)]
    callers: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    expires: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRequestHeaders {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawResponseHeaders {
    #[serde(default)]
    remove: Vec<String>,
}

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
    /// Slow or endless request headers are cut off after this.
    pub header_read_timeout: Duration,
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
    /// Host name, to check that a built URL never leaves it.
    pub host: String,
    /// Port, explicit or the scheme's default.
    pub port: u16,
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

// ------------------------------------------------------------------------------------------
// Loading

/// Reads and validates a configuration file. `env` looks up environment variables.
pub fn load_file(
    path: &std::path::Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<Problem>), Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            severity: Severity::Error,
            path: String::new(),
            line: None,
            message: format!("cannot read config file {}: {e}", path.display()),
        }])
    })?;
    parse(&text, env)
}

/// Parses and validates configuration text. On success returns the config and any warnings;
/// otherwise every problem found (errors and warnings).
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<Problem>), Problems> {
    let (value, lines) = yaml_to_json(text).map_err(|p| Problems(vec![p]))?;
    let mut problems = Vec::new();
    let crate::raw::Deserialized { unknown, value } = crate::raw::deserialize::<RawConfig>(value);
    for path in unknown {
        let line = lines.locate(&path);
        problems.push(Problem {
            severity: Severity::Error,
            line,
            message:
                "unknown key (check its spelling and nesting against the configuration reference)"
                    .to_string(),
            path,
        });
    }
    let raw = match value {
        Ok(raw) => raw,
        Err(err) => {
            problems.push(Problem {
                severity: Severity::Error,
                line: lines.locate(&err.path),
                message: err.message,
                path: err.path,
            });
            return Err(Problems(problems));
        }
    };
    let mut v = Validator {
        problems,
        lines: &lines,
    };
    let config = v.config(raw, env);
    let has_error = v.problems.iter().any(|p| p.severity == Severity::Error);
    match config {
        Some(config) if !has_error => Ok((config, v.problems)),
        _ => Err(Problems(v.problems)),
    }
}

/// Line numbers of key paths in the source text.
#[derive(Debug, Default)]
struct LineIndex(HashMap<String, usize>);

impl LineIndex {
    /// Line of `path`, else of its nearest ancestor that has one.
    fn locate(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.0.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

fn yaml_to_json(text: &str) -> Result<(serde_json::Value, LineIndex), Problem> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| Problem {
        severity: Severity::Error,
        path: String::new(),
        line: Some(e.marker().line()),
        message: format!("not valid YAML: {}", e.info()),
    })?;
    let Some(doc) = docs.first() else {
        return Err(Problem {
            severity: Severity::Error,
            path: String::new(),
            line: None,
            message: "the configuration file is empty".to_string(),
        });
    };
    if docs.len() > 1 {
        return Err(Problem {
            severity: Severity::Error,
            path: String::new(),
            line: docs.get(1).map(|d| d.span.start.line()),
            message: "the configuration must be a single YAML document".to_string(),
        });
    }
    let mut lines = LineIndex::default();
    let value = node_to_json(doc, String::new(), &mut lines)?;
    if !value.is_object() {
        return Err(Problem {
            severity: Severity::Error,
            path: String::new(),
            line: Some(doc.span.start.line()),
            message: "the configuration must be a YAML mapping of keys".to_string(),
        });
    }
    Ok((value, lines))
}

fn node_to_json(
    node: &MarkedYaml<'_>,
    path: String,
    lines: &mut LineIndex,
) -> Result<serde_json::Value, Problem> {
    use serde_json::Value;
    let bad = |message: &str| Problem {
        severity: Severity::Error,
        line: Some(node.span.start.line()),
        path: path.clone(),
        message: message.to_string(),
    };
    Ok(match &node.data {
        YamlData::Value(scalar) => scalar_to_json(scalar),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                lines.0.insert(item_path.clone(), item.span.start.line());
                out.push(node_to_json(item, item_path, lines)?);
            }
            Value::Array(out)
        }
        YamlData::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(other) => match scalar_to_json(other) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    },
                    _ => return Err(bad("mapping keys must be plain strings")),
                };
                let key_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                lines.0.insert(key_path.clone(), k.span.start.line());
                let value = node_to_json(v, key_path, lines)?;
                out.insert(key, value);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => node_to_json(inner, path, lines)?,
        YamlData::Alias(_) => return Err(bad("YAML aliases are not supported; repeat the value")),
        YamlData::BadValue => return Err(bad("value cannot be read as the type its tag names")),
    })
}

fn scalar_to_json(scalar: &Scalar<'_>) -> serde_json::Value {
    use serde_json::Value;
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::from(*i),
        Scalar::FloatingPoint(f) => serde_json::Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

// ------------------------------------------------------------------------------------------
// Semantic validation

struct Validator<'a> {
    problems: Vec<Problem>,
    lines: &'a LineIndex,
}

impl Validator<'_> {
    fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            severity,
            path: path.to_string(),
            line: self.lines.locate(path),
            message: message.into(),
        });
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    fn seconds(&mut self, path: &str, value: Option<i64>, default: u64) -> Duration {
        match value {
            None => Duration::from_secs(default),
            Some(v) if v > 0 => Duration::from_secs(v as u64),
            Some(v) => {
                self.error(
                    path,
                    format!("must be a whole number of seconds above 0, got {v}"),
                );
                Duration::from_secs(default)
            }
        }
    }

    fn config(&mut self, raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Option<Config> {
        let listen = match raw.listen {
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.error(
                        "listen",
                        format!("`{text}` is not an address:port such as 0.0.0.0:8080"),
                    );
                    None
                }
            },
            None => {
                let port = env("PORT");
                match port.as_deref().map(str::parse::<u16>) {
                    None => Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
                    Some(Ok(port)) => Some(SocketAddr::from(([0, 0, 0, 0], port))),
                    Some(Err(_)) => {
                        self.error(
                            "listen",
                            format!(
                                "listen is not set and $PORT=`{}` is not a port number",
                                port.unwrap_or_default()
                            ),
                        );
                        None
                    }
                }
            }
        };

        let server = self.server(&raw.server);
        let metrics = self.metrics(&raw.metrics);
        let decoys = self.decoys(&raw.decoys, &raw.routes);
        let events = raw.events.map(|e| self.events(e));
        let identity = match raw.identity {
            Some(identity) => self.identity(identity, env),
            None => {
                self.error(
                    "identity",
                    "the identity section is missing; it is required: at least `identity: { audiences: [\"https://YOUR-CREDPROXY-URL\"] }`",
                );
                None
            }
        };
        let secrets = self.secrets(raw.secrets, env);

        let mut routes = Vec::with_capacity(raw.routes.len());
        if raw.routes.is_empty() {
            self.push(
                Severity::Warning,
                "routes",
                "no routes are configured: every request will be refused",
            );
        }
        for (name, route) in raw.routes {
            if let Some(route) = self.route(name, route) {
                routes.push(route);
            }
        }
        Some(Config {
            listen: listen?,
            environment: raw.environment,
            project_id: raw.project_id,
            server,
            identity: identity?,
            secrets,
            events: events.flatten(),
            metrics,
            decoys,
            routes,
        })
    }

    fn metrics(&mut self, raw: &RawMetrics) -> MetricsSettings {
        let listen = raw
            .listen
            .as_deref()
            .and_then(|text| match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.error(
                        "metrics.listen",
                        format!("`{text}` is not an address:port such as 0.0.0.0:9090"),
                    );
                    None
                }
            });
        MetricsSettings {
            enabled: raw.enabled,
            listen,
        }
    }

    fn decoys(&mut self, raw: &RawDecoys, routes: &BTreeMap<String, RawRoute>) -> Decoys {
        let mut callers = Vec::new();
        for (i, c) in raw.callers.iter().enumerate() {
            match CallerPattern::parse(c) {
                Ok(c) => callers.push(c),
                Err(e) => self.error(&format!("decoys.callers[{i}]"), e),
            }
        }
        for (i, r) in raw.routes.iter().enumerate() {
            if routes.contains_key(r) {
                self.push(
                    Severity::Warning,
                    &format!("decoys.routes[{i}]"),
                    format!("`{r}` is also a configured route: every request to it will be refused and raise an alert"),
                );
            }
        }
        Decoys {
            routes: raw.routes.clone(),
            callers,
        }
    }

    fn events(&mut self, raw: RawEvents) -> Option<EventsSettings> {
        let audience = match raw.pubsub_push_audience.filter(|a| !a.trim().is_empty()) {
            Some(a) => Some(a),
            None => {
                self.error(
                    "events.pubsub_push_audience",
                    "required: the audience of the push subscription's OIDC token, e.g. https://CREDPROXY-URL/_credproxy/events/secret-manager",
                );
                None
            }
        };
        if raw.pubsub_push_callers.is_empty() {
            self.error(
                "events.pubsub_push_callers",
                "required: the push subscription's service account email(s)",
            );
        }
        let mut callers = Vec::new();
        for (i, c) in raw.pubsub_push_callers.iter().enumerate() {
            match CallerPattern::parse(c) {
                Ok(c) => callers.push(c),
                Err(e) => self.error(&format!("events.pubsub_push_callers[{i}]"), e),
            }
        }
        Some(EventsSettings {
            audience: audience?,
            callers,
        })
    }

    fn server(&mut self, raw: &RawServer) -> ServerSettings {
        let max_in_flight = match raw.max_in_flight {
            None => 1000,
            Some(v) if v > 0 => v as usize,
            Some(v) => {
                self.error(
                    "server.max_in_flight",
                    format!("must be at least 1, got {v}"),
                );
                1000
            }
        };
        let trusted_proxy_hops = match raw.trusted_proxy_hops {
            None => 0,
            Some(v) if (0..=10).contains(&v) => v as usize,
            Some(v) => {
                self.error(
                    "server.trusted_proxy_hops",
                    format!("must be between 0 and 10, got {v} (1 behind Cloud Run's front end)"),
                );
                0
            }
        };
        ServerSettings {
            max_in_flight,
            header_read_timeout: self.seconds(
                "server.header_read_timeout_seconds",
                raw.header_read_timeout_seconds,
                10,
            ),
            trusted_proxy_hops,
        }
    }

    fn identity(
        &mut self,
        raw: RawIdentity,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<IdentitySettings> {
        let mut ok = true;
        if raw.audiences.is_empty() {
            self.error(
                "identity.audiences",
                "at least one audience is required: the URL callers use for credproxy, e.g. https://credproxy-abc123-uc.a.run.app",
            );
            ok = false;
        }
        for (i, aud) in raw.audiences.iter().enumerate() {
            if aud.trim().is_empty() {
                self.error(
                    &format!("identity.audiences[{i}]"),
                    "audience must not be empty",
                );
                ok = false;
            }
        }
        let (jwks_text, jwks_path) = match env("CREDPROXY_JWKS_URL") {
            Some(url) => (url, "$CREDPROXY_JWKS_URL"),
            None => (
                raw.jwks_url.unwrap_or_else(|| GOOGLE_JWKS_URL.to_string()),
                "identity.jwks_url",
            ),
        };
        let jwks_url = match self.url(jwks_path, &jwks_text) {
            Some(url) => Some(url),
            None => {
                ok = false;
                None
            }
        };
        let issuers = raw
            .issuers
            .unwrap_or_else(|| GOOGLE_ISSUERS.iter().map(|s| s.to_string()).collect());
        if issuers.is_empty() {
            self.error("identity.issuers", "at least one issuer is required");
            ok = false;
        }
        let leeway_seconds = match raw.leeway_seconds {
            None => 30,
            Some(v) if (0..=300).contains(&v) => v as u64,
            Some(v) => {
                self.error(
                    "identity.leeway_seconds",
                    format!("must be between 0 and 300 seconds, got {v}"),
                );
                ok = false;
                30
            }
        };
        if !ok {
            return None;
        }
        Some(IdentitySettings {
            audiences: raw.audiences,
            jwks_url: jwks_url?,
            issuers,
            leeway_seconds,
            cloud_run_invoker_check: raw.cloud_run_invoker_check,
        })
    }

    /// Parses a URL that must be https, or http to a loopback host.
    fn url(&mut self, path: &str, text: &str) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(e) => {
                self.error(path, format!("`{text}` is not a URL: {e}"));
                return None;
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                self.error(
                    path,
                    format!("`{text}` is plaintext http: use https (http is allowed only for loopback hosts, in tests and `dev`)"),
                );
                return None;
            }
            other => {
                self.error(
                    path,
                    format!("scheme `{other}` is not supported: use https"),
                );
                return None;
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            self.error(path, format!("`{text}` has no host"));
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.error(
                path,
                "credentials in the URL are not allowed: put them in a secret",
            );
            return None;
        }
        Some(url)
    }

    fn secrets(
        &mut self,
        raw: RawSecrets,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> SecretsSettings {
        let endpoint = env("CREDPROXY_SECRET_MANAGER_ENDPOINT").or(raw.secret_manager.endpoint);
        if let Some(c) = raw.secret_manager.credentials.as_deref()
            && c != "default"
            && c != "anonymous"
        {
            self.error(
                "secrets.secret_manager.credentials",
                format!("`{c}` is not one of: default, anonymous"),
            );
        }
        SecretsSettings {
            cache_ttl: self.seconds("secrets.cache_ttl_seconds", raw.cache_ttl_seconds, 60),
            max_stale: match raw.max_stale_seconds {
                None => Duration::from_secs(600),
                Some(v) if v >= 0 => Duration::from_secs(v as u64),
                Some(v) => {
                    self.error(
                        "secrets.max_stale_seconds",
                        format!("must be 0 or more seconds, got {v}"),
                    );
                    Duration::from_secs(600)
                }
            },
            warm_on_start: raw.warm_on_start.unwrap_or(true),
            secret_manager_endpoint: endpoint,
            secret_manager_anonymous: raw.secret_manager.credentials.as_deref()
                == Some("anonymous"),
        }
    }

    fn route(&mut self, name: String, raw: RawRoute) -> Option<RouteSpec> {
        let p = format!("routes.{name}");
        let mut ok = true;
        if !valid_route_name(&name) {
            self.error(
                &p,
                format!("route name `{name}` must be 1-63 characters of a-z, A-Z, 0-9, `-`, `_` and `.`, not starting with `_` or `.` (it is the first path segment)"),
            );
            ok = false;
        }
        let upstream = self.upstream(&format!("{p}.upstream"), &raw.upstream);
        let credential = self.credential(&format!("{p}.credential"), raw.credential);

        let mut upstream_tls = None;
        if let Some(tls) = &raw.upstream_tls {
            if upstream
                .as_ref()
                .is_some_and(|u| u.origin.starts_with("http://"))
            {
                self.error(
                    &format!("{p}.upstream_tls"),
                    "needs an https:// upstream: over http:// no client certificate would be sent",
                );
                ok = false;
            }
            let mut reference = |key: &str, text: &str| match SecretRef::parse(text) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.error(&format!("{p}.upstream_tls.{key}"), e);
                    None
                }
            };
            let certificate = reference("client_certificate", &tls.client_certificate);
            let key = reference("client_key", &tls.client_key);
            let ca_bundle = tls.ca_bundle.as_deref().map(|c| reference("ca_bundle", c));
            match (certificate, key, ca_bundle) {
                (Some(certificate), Some(key), None) => {
                    upstream_tls = Some(UpstreamTls {
                        certificate,
                        key,
                        ca_bundle: None,
                    });
                }
                (Some(certificate), Some(key), Some(Some(ca))) => {
                    upstream_tls = Some(UpstreamTls {
                        certificate,
                        key,
                        ca_bundle: Some(ca),
                    });
                }
                _ => ok = false,
            }
        }
        let mut source_ranges = None;
        if let Some(ranges) = &raw.source_ranges {
            let mut nets = Vec::with_capacity(ranges.len());
            if ranges.is_empty() {
                self.error(
                    &format!("{p}.source_ranges"),
                    "an empty list would refuse every request: remove the key to allow any address",
                );
                ok = false;
            }
            for (i, text) in ranges.iter().enumerate() {
                let parsed = text
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from));
                match parsed {
                    Ok(net) => nets.push(net.trunc()),
                    Err(_) => {
                        self.error(
                            &format!("{p}.source_ranges[{i}]"),
                            format!(
                                "`{text}` is not a CIDR range such as 10.8.0.0/24 or 2001:db8::/32"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            source_ranges = Some(nets);
        }
        let mut rate = |key: &str, raw: &Option<RawRate>| match raw {
            None => None,
            Some(r) => match crate::limit::RateSpec::parse(r.per_second, r.burst) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    self.error(&format!("{p}.{key}"), e);
                    None
                }
            },
        };
        let rate_limit = rate("rate_limit", &raw.rate_limit);
        let route_rate_limit = rate("route_rate_limit", &raw.route_rate_limit);
        ok &= raw.rate_limit.is_none() || rate_limit.is_some();
        ok &= raw.route_rate_limit.is_none() || route_rate_limit.is_some();

        if raw.allow.is_empty() {
            self.push(
                Severity::Warning,
                &format!("{p}.allow"),
                "no allow rules: every request to this route will be refused",
            );
        }
        let mut allow = Vec::with_capacity(raw.allow.len());
        for (i, rule) in raw.allow.into_iter().enumerate() {
            match self.rule(&format!("{p}.allow[{i}]"), rule) {
                Some(rule) => allow.push(rule),
                None => ok = false,
            }
        }

        let injected_header = credential.as_ref().and_then(|c| c.inject.owned_header());
        let mut request_headers_set = Vec::new();
        for (hname, value) in raw.request_headers.set {
            let hp = format!("{p}.request_headers.set.{hname}");
            let Some(header) = self.header_name(&hp, &hname) else {
                ok = false;
                continue;
            };
            if crate::headers::is_protected_request_header(&header)
                || Some(&header) == injected_header.as_ref()
            {
                self.error(
                    &hp,
                    format!("`{hname}` cannot be set here: credproxy owns it (credentials are injected with credential.inject)"),
                );
                ok = false;
                continue;
            }
            match HeaderValue::from_str(&value) {
                Ok(v) => request_headers_set.push((header, v)),
                Err(_) => {
                    self.error(
                        &hp,
                        "header value has characters not allowed in HTTP headers",
                    );
                    ok = false;
                }
            }
        }
        let mut request_headers_remove = Vec::new();
        for (i, hname) in raw.request_headers.remove.iter().enumerate() {
            match self.header_name(&format!("{p}.request_headers.remove[{i}]"), hname) {
                Some(h) => request_headers_remove.push(h),
                None => ok = false,
            }
        }
        let mut response_headers_remove = Vec::new();
        for (i, hname) in raw.response_headers.remove.iter().enumerate() {
            match self.header_name(&format!("{p}.response_headers.remove[{i}]"), hname) {
                Some(h) => response_headers_remove.push(h),
                None => ok = false,
            }
        }

        let timeout = self.seconds(&format!("{p}.timeout_seconds"), raw.timeout_seconds, 30);
        let idle_timeout = self.seconds(
            &format!("{p}.idle_timeout_seconds"),
            raw.idle_timeout_seconds,
            60,
        );
        let max_body_bytes = match raw.max_body_bytes {
            None => 10 * 1024 * 1024,
            Some(v) if v >= 0 => v as u64,
            Some(v) => {
                self.error(
                    &format!("{p}.max_body_bytes"),
                    format!("must be 0 or more bytes, got {v}"),
                );
                ok = false;
                0
            }
        };
        if !ok {
            return None;
        }
        Some(RouteSpec {
            name,
            upstream: upstream?,
            credential: credential?,
            allow,
            request_headers_set,
            request_headers_remove,
            response_headers_remove,
            timeout,
            idle_timeout,
            max_body_bytes,
            scrub_responses: raw.scrub_responses.unwrap_or(true),
            source_ranges,
            upstream_tls,
            rate_limit,
            route_rate_limit,
        })
    }

    fn header_name(&mut self, path: &str, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.error(path, format!("`{name}` is not a valid HTTP header name"));
                None
            }
        }
    }

    fn upstream(&mut self, path: &str, text: &str) -> Option<Upstream> {
        let url = self.url(path, text)?;
        if url.query().is_some() || url.fragment().is_some() {
            self.error(
                path,
                "an upstream may carry a base path but no query or fragment",
            );
            return None;
        }
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default()?;
        let origin = match url.port() {
            Some(port) => format!("{}://{}:{port}", url.scheme(), host),
            None => format!("{}://{}", url.scheme(), host),
        };
        let base_path = url.path().trim_end_matches('/').to_string();
        Some(Upstream {
            origin,
            base_path,
            host,
            port,
        })
    }

    fn credential(&mut self, p: &str, raw: RawCredential) -> Option<CredentialSpec> {
        let secret = match SecretRef::parse(&raw.secret) {
            Ok(r) => Some(r),
            Err(e) => {
                self.error(&format!("{p}.secret"), e);
                None
            }
        };
        if raw.field.as_deref() == Some("") {
            self.error(&format!("{p}.field"), "field must not be empty");
        }
        let ip = format!("{p}.inject");
        let inject = match Injection::parse(raw.inject) {
            Ok(inject) => inject,
            Err(problems) => {
                for problem in problems {
                    let path = if problem.key.is_empty() {
                        ip.clone()
                    } else {
                        format!("{ip}.{}", problem.key)
                    };
                    self.error(&path, problem.message);
                }
                return None;
            }
        };
        Some(CredentialSpec {
            secret: secret?,
            field: raw.field,
            inject,
        })
    }

    fn rule(&mut self, p: &str, raw: RawRule) -> Option<Rule> {
        let mut ok = true;
        for (key, empty) in [
            ("callers", raw.callers.is_empty()),
            ("methods", raw.methods.is_empty()),
            ("paths", raw.paths.is_empty()),
        ] {
            if empty {
                self.error(
                    &format!("{p}.{key}"),
                    format!("a rule needs at least one entry in `{key}`"),
                );
                ok = false;
            }
        }
        let mut callers = Vec::new();
        for (i, c) in raw.callers.iter().enumerate() {
            match CallerPattern::parse(c) {
                Ok(c) => callers.push(c),
                Err(e) => {
                    self.error(&format!("{p}.callers[{i}]"), e);
                    ok = false;
                }
            }
        }
        let mut methods = Vec::new();
        for (i, m) in raw.methods.iter().enumerate() {
            match parse_method(m) {
                Ok(m) => methods.push(m),
                Err(e) => {
                    self.error(&format!("{p}.methods[{i}]"), e);
                    ok = false;
                }
            }
        }
        let mut paths = Vec::new();
        for (i, text) in raw.paths.iter().enumerate() {
            match PathPattern::parse(text) {
                Ok(pat) => paths.push(pat),
                Err(e) => {
                    self.error(&format!("{p}.paths[{i}]"), e);
                    ok = false;
                }
            }
        }
        let expires = match raw.expires.as_deref() {
            None => None,
            Some(text) => match DateTime::parse_from_rfc3339(text) {
                Ok(t) => {
                    let t = t.with_timezone(&Utc);
                    let now = Utc::now();
                    if t <= now {
                        self.push(
                            Severity::Warning,
                            &format!("{p}.expires"),
                            format!("this grant expired at {text}: it no longer allows anything"),
                        );
                    } else if t - now < chrono::Duration::days(7) {
                        self.push(
                            Severity::Warning,
                            &format!("{p}.expires"),
                            format!("this grant expires within 7 days ({text})"),
                        );
                    }
                    Some(t)
                }
                Err(_) => {
                    self.error(
                        &format!("{p}.expires"),
                        format!("`{text}` is not an RFC 3339 time with a zone, e.g. 2026-12-31T00:00:00Z"),
                    );
                    ok = false;
                    None
                }
            },
        };
        if !ok {
            return None;
        }
        Some(Rule {
            callers,
            methods,
            paths,
            expires,
        })
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    const ALLOWED: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let upper = text.to_ascii_uppercase();
    if ALLOWED.contains(&upper.as_str()) {
        Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "`{text}` is not a method credproxy forwards; use one of {}",
            ALLOWED.join(", ")
        ))
    }
}

fn valid_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['_', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != ".."
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Path of the config file: `--config`, else `$CREDPROXY_CONFIG`, else the default.
pub fn config_path(flag: Option<PathBuf>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    flag.or_else(|| env("CREDPROXY_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const MINIMAL: &str = r#"
identity:
  audiences: ["https://credproxy.example"]
routes:
  stripe:
    upstream: "https://api.stripe.com/base/"
    credential:
      secret: "env:STRIPE_KEY"
      inject:
        header: { name: "Authorization", format: "Bearer {secret}" }
    allow:
      - callers: ["daily@acme.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/v1/charges", "/v1/charges/*"]
"#;

    #[test]
    fn applies_defaults() {
        let (c, warnings) = parse(MINIMAL, &no_env).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.listen, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(c.identity.jwks_url.as_str(), GOOGLE_JWKS_URL);
        assert_eq!(c.identity.issuers.len(), 2);
        assert_eq!(c.identity.leeway_seconds, 30);
        assert_eq!(c.secrets.cache_ttl, Duration::from_secs(60));
        let r = &c.routes[0];
        assert_eq!(r.upstream.origin, "https://api.stripe.com");
        assert_eq!(r.upstream.base_path, "/base");
        assert_eq!(r.timeout, Duration::from_secs(30));
        assert_eq!(r.idle_timeout, Duration::from_secs(60));
        assert_eq!(r.max_body_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn env_overrides_port_and_jwks() {
        let env = |k: &str| match k {
            "PORT" => Some("9999".to_string()),
            "CREDPROXY_JWKS_URL" => Some("http://127.0.0.1:1/certs".to_string()),
            "CREDPROXY_SECRET_MANAGER_ENDPOINT" => Some("http://127.0.0.1:2".to_string()),
            _ => None,
        };
        let (c, _) = parse(MINIMAL, &env).expect("valid");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.identity.jwks_url.as_str(), "http://127.0.0.1:1/certs");
        assert_eq!(
            c.secrets.secret_manager_endpoint.as_deref(),
            Some("http://127.0.0.1:2")
        );
    }

    #[test]
    fn reports_every_unknown_key_with_path_and_line() {
        let text = MINIMAL.replace("routes:\n", "routs: 1\nroutes:\n").replace(
            "        methods:",
            "        method: [GET]\n        methods:",
        );
        let err = parse(&text, &no_env).expect_err("invalid");
        let paths: Vec<_> = err.0.iter().map(|p| (p.path.as_str(), p.line)).collect();
        assert!(paths.contains(&("routs", Some(4))), "{paths:?}");
        assert!(
            paths.contains(&("routes.stripe.allow[0].method", Some(14))),
            "{paths:?}"
        );
    }

    #[test]
    fn reports_every_semantic_problem_at_once() {
        let text = MINIMAL
            .replace("https://api.stripe.com/base/", "http://api.stripe.com")
            .replace("env:STRIPE_KEY", "vault:stripe")
            .replace("\"/v1/charges\", ", "\"v1/charges\", \"/v1/a*b\", ");
        let err = parse(&text, &no_env).expect_err("invalid");
        let paths: Vec<_> = err.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes.stripe.upstream",
                "routes.stripe.credential.secret",
                "routes.stripe.allow[0].paths[0]",
                "routes.stripe.allow[0].paths[1]",
            ]
        );
        assert_eq!(err.0[0].line, Some(6));
        assert!(err.0[0].message.contains("plaintext"), "{}", err.0[0]);
    }

    #[test]
    fn empty_sections_mean_defaults() {
        let text = format!("server:\nsecrets:\nmetrics:\ndecoys:\n{MINIMAL}");
        let (c, _) = parse(&text, &no_env).expect("valid");
        assert_eq!(c.server.max_in_flight, 1000);
    }

    #[test]
    fn type_errors_name_the_key() {
        let text = MINIMAL.replace("routes:\n", "server: { max_in_flight: lots }\nroutes:\n");
        let err = parse(&text, &no_env).expect_err("invalid");
        assert_eq!(err.0[0].path, "server.max_in_flight");
        assert_eq!(err.0[0].line, Some(4));
    }

    #[test]
    fn malformed_yaml_gives_a_line() {
        let err = parse("identity: [\n  audiences: x\n", &no_env).expect_err("invalid");
        assert!(err.0[0].line.is_some());
        assert!(err.0[0].message.contains("not valid YAML"));
    }

    #[test]
    fn missing_identity_is_an_error() {
        let err = parse("routes: {}\n", &no_env).expect_err("invalid");
        assert!(err.0[0].message.contains("identity"), "{}", err.0[0]);
    }

    #[test]
    fn requires_exactly_one_injection() {
        let text = MINIMAL.replace(
            "header: { name: \"Authorization\", format: \"Bearer {secret}\" }",
            "header: { name: \"Authorization\" }\n        query: { name: key }",
        );
        let err = parse(&text, &no_env).expect_err("invalid");
        assert_eq!(err.0[0].path, "routes.stripe.credential.inject");
    }

    /// MINIMAL with its `header:` injection (line 10) replaced by `block`.
    fn with_inject(block: &str) -> String {
        MINIMAL.replace(
            "        header: { name: \"Authorization\", format: \"Bearer {secret}\" }\n",
            block,
        )
    }

    fn paths_and_lines(err: &Problems) -> Vec<(&str, Option<usize>)> {
        err.0.iter().map(|p| (p.path.as_str(), p.line)).collect()
    }

    #[test]
    fn reports_every_hmac_problem_with_key_and_line() {
        let text = with_inject(concat!(
            "        hmac:\n",
            "          header: \"X-Signature\"\n",
            "          algoritm: sha256\n",
            "          encoding: base32\n",
            "          signed: [body, headers]\n",
        ));
        let err = parse(&text, &no_env).expect_err("invalid");
        let hmac = "routes.stripe.credential.inject.hmac";
        assert_eq!(
            paths_and_lines(&err),
            [
                (format!("{hmac}.algoritm").as_str(), Some(12)),
                (format!("{hmac}.algorithm").as_str(), Some(10)),
                (format!("{hmac}.encoding").as_str(), Some(13)),
                (format!("{hmac}.signed[1]").as_str(), Some(14)),
            ]
        );
        assert!(err.0[0].message.contains("unknown key"), "{}", err.0[0]);
        assert!(
            err.0[1].message.contains("`algorithm` is required"),
            "{}",
            err.0[1]
        );
        assert!(
            err.0[3].message.contains("unknown part `headers`"),
            "{}",
            err.0[3]
        );
    }

    #[test]
    fn a_mistyped_hmac_value_is_named_by_key_and_line() {
        let text = with_inject(concat!(
            "        hmac:\n",
            "          header: \"X-Signature\"\n",
            "          algorithm: sha256\n",
            "          encoding: hex\n",
            "          signed: 3\n",
        ));
        let err = parse(&text, &no_env).expect_err("invalid");
        assert_eq!(
            paths_and_lines(&err),
            [("routes.stripe.credential.inject.hmac.signed", Some(14))]
        );
        assert!(
            err.0[0].message.contains("expected a sequence"),
            "{}",
            err.0[0]
        );
        let err = parse(&with_inject("        hmac: sha256\n"), &no_env).expect_err("invalid");
        assert_eq!(err.0[0].path, "routes.stripe.credential.inject.hmac");
        assert!(
            err.0[0].message.contains("expected a mapping"),
            "{}",
            err.0[0]
        );
    }

    #[test]
    fn signing_and_oauth2_problems_are_named_by_key() {
        let inject = "routes.stripe.credential.inject";
        for (block, paths) in [
            (
                "        aws_sigv4: { service: S3 }\n",
                vec![
                    format!("{inject}.aws_sigv4.service"),
                    format!("{inject}.aws_sigv4.region"),
                ],
            ),
            (
                "        oauth2_client_credentials: { token_url: \"https://a.example/t\", scopes: [a, \"b c\"], audiences: x }\n",
                vec![
                    format!("{inject}.oauth2_client_credentials.audiences"),
                    format!("{inject}.oauth2_client_credentials.scopes[1]"),
                ],
            ),
        ] {
            let err = parse(&with_inject(block), &no_env).expect_err(block);
            let got: Vec<_> = err.0.iter().map(|p| p.path.clone()).collect();
            assert_eq!(got, paths, "{block}");
            assert!(err.0.iter().all(|p| p.line == Some(10)), "{err}");
        }
    }

    #[test]
    fn rejects_setting_authorization_through_request_headers() {
        let text = MINIMAL.replace(
            "    allow:",
            "    request_headers: { set: { authorization: x } }\n    allow:",
        );
        let err = parse(&text, &no_env).expect_err("invalid");
        assert_eq!(
            err.0[0].path,
            "routes.stripe.request_headers.set.authorization"
        );
    }

    #[test]
    fn plaintext_allowed_only_for_loopback() {
        for (url, ok) in [
            ("http://127.0.0.1:9000", true),
            ("http://localhost:9000", true),
            ("http://[::1]:9000", true),
            ("http://10.0.0.1", false),
            ("http://example.com", false),
            ("ftp://example.com", false),
            ("https://user:pw@example.com", false),
            ("https://example.com/?q=1", false),
        ] {
            let text = MINIMAL.replace("https://api.stripe.com/base/", url);
            assert_eq!(parse(&text, &no_env).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn upstream_tls_needs_an_https_upstream() {
        let tls = "    upstream_tls:\n      client_certificate: \"env:C\"\n      client_key: \"env:K\"\n    allow:";
        let text = MINIMAL.replace("    allow:", tls);
        assert!(parse(&text, &no_env).is_ok());
        let text = text.replace("https://api.stripe.com/base/", "http://127.0.0.1:9000");
        let err = parse(&text, &no_env).expect_err("invalid");
        assert_eq!(err.0[0].path, "routes.stripe.upstream_tls");
        assert!(
            err.0[0].message.contains("https://"),
            "{}",
            err.0[0].message
        );
    }

    #[test]
    fn warns_about_grants_expiring_soon_and_rejects_zoneless_times() {
        let soon = (Utc::now() + chrono::Duration::days(2)).to_rfc3339();
        let text = MINIMAL.replace(
            "        paths:",
            &format!("        expires: \"{soon}\"\n        paths:"),
        );
        let (_, warnings) = parse(&text, &no_env).expect("valid");
        assert_eq!(warnings[0].path, "routes.stripe.allow[0].expires");
        let text = MINIMAL.replace(
            "        paths:",
            "        expires: \"2026-12-31T00:00:00\"\n        paths:",
        );
        let err = parse(&text, &no_env).expect_err("invalid");
        assert_eq!(err.0[0].path, "routes.stripe.allow[0].expires");
    }

    #[test]
    fn rejects_nonsensical_limits_with_their_key() {
        for (limit, path) in [
            (
                "rate_limit: { per_second: 1, burst: 0 }",
                "routes.stripe.rate_limit",
            ),
            (
                "route_rate_limit: { per_second: -1, burst: 5 }",
                "routes.stripe.route_rate_limit",
            ),
            (
                "source_ranges: [\"10.0.0.0/33\"]",
                "routes.stripe.source_ranges[0]",
            ),
            ("max_body_bytes: -5", "routes.stripe.max_body_bytes"),
            ("timeout_seconds: 0", "routes.stripe.timeout_seconds"),
        ] {
            let text = MINIMAL.replace("    allow:", &format!("    {limit}\n    allow:"));
            let err = parse(&text, &no_env).expect_err(limit);
            assert_eq!(err.0[0].path, path, "{limit}");
        }
    }

    #[test]
    fn rejects_bad_route_names() {
        for name in ["_credproxy", ".hidden", "a/b"] {
            let text = MINIMAL.replace("  stripe:", &format!("  \"{name}\":"));
            assert!(parse(&text, &no_env).is_err(), "{name}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// YAML-ish documents built from the schema's own keys, YAML syntax and junk, so the
    /// generator reaches deep into the parser and the validator.
    fn yamlish() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("identity"),
            Just("audiences"),
            Just("routes"),
            Just("upstream"),
            Just("credential"),
            Just("secret"),
            Just("inject"),
            Just("header"),
            Just("name"),
            Just("format"),
            Just("allow"),
            Just("callers"),
            Just("methods"),
            Just("paths"),
            Just("expires"),
            Just("server"),
            Just("max_in_flight"),
            Just("source_ranges"),
            Just("events"),
            Just("decoys"),
            Just("metrics"),
            Just("hmac"),
            Just("aws_sigv4"),
            Just("query"),
            Just("basic"),
            Just("field"),
            Just("timeout_seconds"),
            Just("x"),
        ];
        let value = prop_oneof![
            Just("\"https://api.example.com\"".to_string()),
            Just("\"env:K\"".to_string()),
            Just("\"projects/p/secrets/s/versions/latest\"".to_string()),
            Just("[GET, POST]".to_string()),
            Just("[\"/v1/**\", \"/a/*\"]".to_string()),
            Just("{}".to_string()),
            Just("[]".to_string()),
            Just("null".to_string()),
            Just("-1".to_string()),
            Just("99999999999999999999".to_string()),
            Just("&a x".to_string()),
            Just("*a".to_string()),
            Just("!!binary x".to_string()),
            "[ -~]{0,12}",
        ];
        let line = (0usize..4, key, prop::option::of(value)).prop_map(|(indent, k, v)| match v {
            Some(v) => format!("{}{k}: {v}", "  ".repeat(indent)),
            None => format!("{}{k}:", "  ".repeat(indent)),
        });
        prop_oneof![
            prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n")),
            "\\PC{0,200}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn parsing_never_panics_and_every_error_has_a_message(text in yamlish()) {
            if let Err(problems) = parse(&text, &|_| None) {
                prop_assert!(!problems.0.is_empty());
                for p in &problems.0 {
                    prop_assert!(!p.message.is_empty());
                }
            }
        }
    }
}
