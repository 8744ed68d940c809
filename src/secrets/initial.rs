//! What the store reads at start: `env:` and `file:` values, and the references that are
//! not a route's (the shared rate limiter's AUTH string and CA bundle).

use secrecy::ExposeSecret;

use super::{BuildError, Fetched, SecretError, SecretRef, env, file};
use crate::config::{Config, RouteSpec};

/// The value of an `env:` or `file:` reference, read at start (`None` for Secret Manager,
/// which the refreshers read).
pub(super) async fn initial_value(
    reference: &SecretRef,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Option<Result<Fetched, String>> {
    let read = match reference {
        SecretRef::Env(name) => env::read(name, env),
        SecretRef::File(path) => file::read(path).await,
        SecretRef::SecretManager { .. } => return None,
    };
    Some(read.map(|v| Fetched::new(v.expose_secret().as_bytes().to_vec(), None)))
}

/// The secret references of `rate_limits.redis` (AUTH string, CA bundle).
pub(super) fn rate_limit_references(config: &Config) -> impl Iterator<Item = &SecretRef> {
    config.rate_limits.redis.iter().flat_map(|r| r.references())
}

/// Why the start failed: `reference` of `route` (or of `rate_limits.redis` for `None`)
/// could not be read.
pub(super) fn start_failure(
    route: Option<&RouteSpec>,
    reference: &SecretRef,
    detail: String,
) -> BuildError {
    let source = SecretError::Unavailable {
        resource: reference.resource(),
        detail,
    };
    match route {
        Some(route) => BuildError::Secret {
            route: route.name.clone(),
            source,
        },
        None => BuildError::Setting {
            key: "rate_limits.redis".to_string(),
            source,
        },
    }
}
