//! The configuration file as written: serde structs whose fields are the SPEC's keys.
//! Nothing here is validated; unknown keys are collected by the loader (`serde_ignored`),
//! not refused one at a time.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// An empty section (`secrets:` with nothing under it, or only comments) means defaults.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[derive(Debug, Deserialize)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    pub(super) environment: Option<String>,
    pub(super) project_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) server: RawServer,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) metrics: RawMetrics,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) decoys: RawDecoys,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) rate_limits: RawRateLimits,
    pub(super) identity: Option<RawIdentity>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) secrets: RawSecrets,
    pub(super) events: Option<RawEvents>,
    #[serde(default)]
    pub(super) routes: BTreeMap<String, RawRoute>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawEvents {
    pub(super) pubsub_push_audience: Option<String>,
    #[serde(default)]
    pub(super) pubsub_push_callers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServer {
    pub(super) max_in_flight: Option<i64>,
    pub(super) max_in_flight_per_caller: Option<i64>,
    pub(super) header_read_timeout_seconds: Option<i64>,
    pub(super) body_idle_timeout_seconds: Option<i64>,
    pub(super) trusted_proxy_hops: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawMetrics {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) listen: Option<String>,
    #[serde(default)]
    pub(super) callers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRateLimits {
    pub(super) backend: Option<String>,
    pub(super) redis: Option<RawRedis>,
    pub(super) on_backend_failure: Option<String>,
    pub(super) max_instances: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRedis {
    pub(super) url: Option<String>,
    pub(super) auth: Option<String>,
    pub(super) ca_bundle: Option<String>,
    pub(super) timeout_ms: Option<i64>,
    pub(super) key_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDecoys {
    #[serde(default)]
    pub(super) routes: Vec<String>,
    #[serde(default)]
    pub(super) callers: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawIdentity {
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    pub(super) jwks_url: Option<String>,
    pub(super) issuers: Option<Vec<String>>,
    pub(super) leeway_seconds: Option<i64>,
    #[serde(default)]
    pub(super) cloud_run_invoker_check: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSecrets {
    pub(super) cache_ttl_seconds: Option<i64>,
    pub(super) max_stale_seconds: Option<i64>,
    pub(super) warm_on_start: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) secret_manager: RawSecretManager,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSecretManager {
    pub(super) endpoint: Option<String>,
    pub(super) credentials: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRoute {
    pub(super) upstream: String,
    pub(super) credential: RawCredential,
    pub(super) upstream_tls: Option<RawUpstreamTls>,
    #[serde(default)]
    pub(super) allow: Vec<RawRule>,
    pub(super) shadow_allow: Option<Vec<RawRule>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) request_headers: RawRequestHeaders,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) response_headers: RawResponseHeaders,
    pub(super) scrub_responses: Option<bool>,
    pub(super) source_ranges: Option<Vec<String>>,
    pub(super) rate_limit: Option<RawRate>,
    pub(super) route_rate_limit: Option<RawRate>,
    pub(super) timeout_seconds: Option<i64>,
    pub(super) idle_timeout_seconds: Option<i64>,
    pub(super) max_body_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawUpstreamTls {
    pub(super) client_certificate: String,
    pub(super) client_key: String,
    pub(super) ca_bundle: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRate {
    pub(super) per_second: f64,
    pub(super) burst: i64,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCredential {
    pub(super) secret: String,
    pub(super) field: Option<String>,
    pub(super) inject: crate::inject::RawInject,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRule {
    #[serde(default)]
    pub(super) callers: Vec<String>,
    #[serde(default)]
    pub(super) methods: Vec<String>,
    #[serde(default)]
    pub(super) paths: Vec<String>,
    pub(super) expires: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRequestHeaders {
    #[serde(default)]
    pub(super) set: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawResponseHeaders {
    #[serde(default)]
    pub(super) remove: Vec<String>,
}

/// Line numbers of key paths in the source text.
#[derive(Debug, Default)]
pub(super) struct LineIndex(pub(super) HashMap<String, usize>);

impl LineIndex {
    /// Line of `path`, else of its nearest ancestor that has one.
    pub(super) fn locate(&self, path: &str) -> Option<usize> {
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
