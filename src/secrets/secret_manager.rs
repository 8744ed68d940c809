//! The Secret Manager source: the real `google-cloud-secretmanager-v1` client (HTTP/JSON),
//! with Application Default Credentials in production and `anonymous` for emulators and tests.
//!
//! The client's default retry budget (many attempts over a minute) would stall a request, so
//! every call sets its own: a short one when a request is waiting ([`Urgency::Request`]), a
//! patient one for background refreshes. Only `UNAVAILABLE` is retried (AIP-194).
//!
//! The client does not verify `dataCrc32c`; [`SecretManager::access`] does, and a mismatch is
//! an error, never an injected value.

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::options::RequestOptionsBuilder as _;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt as _};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use secrecy::SecretSlice;

/// Who is waiting for a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A request waits: give up fast.
    Request,
    /// A background refresh: be patient.
    Background,
}

/// Why Secret Manager did not give a value, in terms an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFailure {
    /// 403 `PERMISSION_DENIED`.
    PermissionDenied,
    /// 404 `NOT_FOUND`.
    NotFound,
    /// 400 `FAILED_PRECONDITION`: the version is disabled or destroyed.
    Disabled,
    /// `dataCrc32c` does not match the payload.
    Checksum,
    /// Anything else (unavailable, timeout, credentials), with a description.
    Other(String),
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreFailure::PermissionDenied => f.write_str(
                "permission denied: grant roles/secretmanager.secretAccessor on this secret to credproxy's service account",
            ),
            StoreFailure::NotFound => f.write_str("the secret or version does not exist"),
            StoreFailure::Disabled => f.write_str(
                "the version is disabled or destroyed (versions/latest names the newest version even when disabled: roll back by adding a version, not by disabling the newest)",
            ),
            StoreFailure::Checksum => f.write_str(
                "the payload does not match its dataCrc32c checksum; the value was discarded",
            ),
            StoreFailure::Other(detail) => f.write_str(detail),
        }
    }
}

/// One access result.
pub struct Accessed {
    /// The payload bytes.
    pub payload: SecretSlice<u8>,
    /// The resolved version id (`7`).
    pub version: String,
    /// The secret's canonical name, with the project number (`projects/123/secrets/x`).
    pub canonical: String,
}

/// A connected Secret Manager client.
#[derive(Clone, Debug)]
pub struct SecretManager {
    client: SecretManagerService,
}

impl SecretManager {
    /// Builds the client: `endpoint` overrides Google's, `anonymous` skips authentication
    /// (emulators, tests); otherwise Application Default Credentials.
    pub async fn connect(endpoint: Option<&str>, anonymous: bool) -> Result<Self, String> {
        let mut builder = SecretManagerService::builder();
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        } else {
            let credentials = google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| format!("cannot load Application Default Credentials: {e}"))?;
            builder = builder.with_credentials(credentials);
        }
        let client = builder
            .build()
            .await
            .map_err(|e| format!("cannot build the Secret Manager client: {e}"))?;
        Ok(SecretManager { client })
    }

    /// Accesses `name` (`projects/P/secrets/S/versions/V`).
    pub async fn access(&self, name: &str, urgency: Urgency) -> Result<Accessed, StoreFailure> {
        let (attempts, total, per_attempt) = match urgency {
            Urgency::Request => (2, Duration::from_secs(3), Duration::from_secs(2)),
            Urgency::Background => (3, Duration::from_secs(10), Duration::from_secs(5)),
        };
        let response = self
            .client
            .access_secret_version()
            .set_name(name)
            .with_retry_policy(
                Aip194Strict
                    .with_attempt_limit(attempts)
                    .with_time_limit(total),
            )
            .with_attempt_timeout(per_attempt)
            .send()
            .await
            .map_err(|e| {
                match e.status().map(|s| s.code) {
                    Some(Code::PermissionDenied) => StoreFailure::PermissionDenied,
                    Some(Code::NotFound) => StoreFailure::NotFound,
                    Some(Code::FailedPrecondition) => StoreFailure::Disabled,
                    _ => StoreFailure::Other(
                        // The client's errors carry no payload; keep the chain for operators.
                        crate::telemetry::error_chain(&e),
                    ),
                }
            })?;
        let payload = response
            .payload
            .ok_or_else(|| StoreFailure::Other("the response has no payload".to_string()))?;
        if let Some(expected) = payload.data_crc32c
            && i64::from(crc32c::crc32c(&payload.data)) != expected
        {
            return Err(StoreFailure::Checksum);
        }
        let (canonical, version) = response
            .name
            .rsplit_once("/versions/")
            .map(|(s, v)| (s.to_string(), v.to_string()))
            .ok_or_else(|| {
                StoreFailure::Other(format!("unexpected version name `{}`", response.name))
            })?;
        Ok(Accessed {
            payload: SecretSlice::from(payload.data.to_vec()),
            version,
            canonical,
        })
    }
}
