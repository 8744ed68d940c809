//! [`SecretError`]: what the store can fail with. Messages name the secret, never its value.

use super::secret_manager::StoreFailure;

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
    /// Secret Manager did not give a value.
    #[error("secret {resource} cannot be read from Secret Manager: {failure}")]
    Store {
        /// The reference without version.
        resource: String,
        /// Why.
        failure: StoreFailure,
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
}
