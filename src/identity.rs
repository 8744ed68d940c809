//! Caller identity: Google ID tokens verified locally against a cached JWKS.
//!
//! The key set sits behind an `ArcSwap`: the request path loads it with one atomic read, and
//! a background task replaces it before its `Cache-Control` lifetime runs out. An unknown
//! `kid` (Google rotated its keys since the last fetch) triggers at most one refetch per
//! [`UNKNOWN_KID_REFETCH_INTERVAL`], so forged tokens with random `kid`s cannot turn into a
//! refetch storm. google-cloud-auth's verifier is not used here: it refetches on every
//! unknown `kid` and holds its cache lock across the fetch.
//!
//! Only RS256 is accepted; key locations in the token header (`jku`, `x5u`, `jwk`) are never
//! read. `iat` is checked here since jsonwebtoken does not.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::config::IdentitySettings;

/// Minimum time between two refetches caused by unknown `kid`s.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Suffix Cloud Run puts on a token whose signature it removed after its own IAM check.
pub const SIGNATURE_REMOVED: &str = ".SIGNATURE_REMOVED_BY_GOOGLE";
const MAX_TOKEN_BYTES: usize = 16 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's verified `email` claim.
    pub email: Arc<str>,
}

/// Why a token was rejected (401). The message is safe to return to the caller: it never
/// contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error(
        "missing bearer token: send the Google ID token of your service account as `Authorization: Bearer TOKEN`"
    )]
    Missing,
    /// Not a `Bearer` token, several headers, or not a JWT.
    #[error("malformed bearer token: {0}")]
    Malformed(&'static str),
    /// Cloud Run removed the signature of the token in `Authorization`.
    #[error(
        "the token in Authorization had its signature removed by Cloud Run's IAM check (it ends in SIGNATURE_REMOVED_BY_GOOGLE): send the same ID token in both `X-Serverless-Authorization` and `Authorization`, so Cloud Run checks the first and credproxy verifies the second"
    )]
    SignatureRemoved,
    /// `alg` other than RS256.
    #[error("token algorithm is not accepted: only RS256 Google ID tokens are")]
    Algorithm,
    /// `kid` not in the JWKS even after a refetch.
    #[error("token was signed with an unknown key")]
    UnknownKey,
    /// The JWKS has never been fetched.
    #[error("signing keys are not available yet; retry shortly")]
    KeysUnavailable,
    /// Signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` passed.
    #[error("token has expired: fetch a new ID token")]
    Expired,
    /// `nbf` or `iat` in the future.
    #[error("token is not valid yet (iat or nbf in the future)")]
    NotYetValid,
    /// `aud` not accepted.
    #[error("token audience is not accepted: mint the ID token for credproxy's URL")]
    Audience,
    /// `iss` not accepted.
    #[error("token issuer is not accepted")]
    Issuer,
    /// A required claim is missing or malformed.
    #[error("token has no valid `{claim}` claim{hint}", claim = .0, hint = if *.0 == "email" { " (when minting with generateIdToken, set includeEmail: true)" } else { "" })]
    MissingClaim(&'static str),
    /// `email_verified` is not true.
    #[error("token email is not verified")]
    EmailNotVerified,
}

impl AuthError {
    /// The audit `reason`, refined where it helps an investigator.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::SignatureRemoved => "signature_removed",
            AuthError::Expired => "token_expired",
            AuthError::Audience => "audience_mismatch",
            _ => "unauthenticated",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    email: Option<String>,
    email_verified: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    exp: Option<i64>,
}

/// A token that verified, kept so the same token is not RSA-verified again.
struct Verified {
    /// The exact token bytes (compared on every hit: the map key is only a hash).
    token: Box<str>,
    email: Arc<str>,
    exp: i64,
    kid: Box<str>,
}

/// Verified tokens kept at most (pipelines reuse one token for up to an hour).
const VERIFIED_CACHE_CAPACITY: u64 = 10_000;

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// The RSA keys of one JWKS fetch, by `kid`.
#[derive(Default)]
pub struct KeySet {
    /// foldhash rather than SipHash (looked up on every request): the keys are Google's
    /// `kid`s, a handful, and a lookup cannot add one.
    keys: HashMap<String, DecodingKey, foldhash::fast::RandomState>,
}

impl KeySet {
    /// Parses a JWKS document, keeping RSA signing keys usable for RS256.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(body).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
        let mut keys = HashMap::default();
        for jwk in set.keys {
            if jwk.kty != "RSA"
                || jwk.alg.as_deref().is_some_and(|a| a != "RS256")
                || jwk.usage.as_deref().is_some_and(|u| u != "sig")
            {
                continue;
            }
            let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else {
                continue;
            };
            match DecodingKey::from_rsa_components(&n, &e) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(err) => tracing::warn!(kid, error = %err, "skipping unusable JWKS key"),
            }
        }
        if keys.is_empty() {
            return Err("JWKS has no RS256 signing keys".to_string());
        }
        Ok(KeySet { keys })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Verifies caller tokens; owns the JWKS cache.
pub struct Verifier {
    validation: Validation,
    issuers: Vec<String>,
    leeway_seconds: u64,
    jwks_url: reqwest::Url,
    http: reqwest::Client,
    keys: ArcSwap<KeySet>,
    ready: AtomicBool,
    refetch_gate: crate::flight::Gate,
    /// Caller tokens that verified, by a keyed hash of their bytes.
    verified: moka::sync::Cache<u64, Arc<Verified>>,
    /// Randomly seeded per process. foldhash rather than SipHash: a token is ~1 KB, hashed
    /// on every request, and a collision only costs a full verification (hits compare the
    /// exact bytes).
    hasher: foldhash::quality::RandomState,
}

impl Verifier {
    /// Builds a verifier with an empty key set; call [`Verifier::refresh`] or run
    /// [`Verifier::run_refresher`] to fetch keys.
    pub fn new(settings: &IdentitySettings) -> Result<Self, reqwest::Error> {
        let validation = validation(
            &settings.audiences,
            &settings.issuers,
            settings.leeway_seconds,
        );
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()?;
        Ok(Verifier {
            validation,
            issuers: settings.issuers.clone(),
            leeway_seconds: settings.leeway_seconds,
            jwks_url: settings.jwks_url.clone(),
            http,
            keys: ArcSwap::from_pointee(KeySet::default()),
            ready: AtomicBool::new(false),
            refetch_gate: crate::flight::Gate::default(),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE_CAPACITY)
                .time_to_live(Duration::from_secs(3600 + 300))
                .build(),
            hasher: foldhash::quality::RandomState::default(),
        })
    }

    /// Whether keys have been fetched at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Installs a key set directly (tests, benches).
    pub fn install(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
        self.ready.store(true, Ordering::Release);
    }

    /// Fetches the JWKS once; returns how long it may be cached.
    pub async fn refresh(&self) -> Result<Duration, String> {
        let result = self.fetch_keys().await;
        let label = crate::metrics::ResultLabel {
            result: if result.is_ok() { "ok" } else { "error" },
        };
        crate::metrics::metrics()
            .jwks_refreshes
            .get_or_create(&label)
            .inc();
        result
    }

    async fn fetch_keys(&self) -> Result<Duration, String> {
        let response = self
            .http
            .get(self.jwks_url.clone())
            .send()
            .await
            .map_err(|e| format!("JWKS fetch from {} failed: {e}", self.jwks_url))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "JWKS fetch from {} answered {status}",
                self.jwks_url
            ));
        }
        let ttl = cache_lifetime(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("JWKS body from {} failed: {e}", self.jwks_url))?;
        let set = KeySet::parse(&body)?;
        tracing::info!(
            keys = set.len(),
            ttl_seconds = ttl.as_secs(),
            "JWKS refreshed"
        );
        self.install(set);
        Ok(ttl)
    }

    /// Keeps the JWKS fresh until the process ends: refreshes at three quarters of its cache
    /// lifetime, retries failures with exponential backoff (1 s to 60 s). Never fails.
    pub async fn run_refresher(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.refresh().await {
                Ok(ttl) => {
                    backoff = Duration::from_secs(1);
                    (ttl * 3 / 4).clamp(Duration::from_secs(30), Duration::from_secs(6 * 3600))
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_seconds = backoff.as_secs(), "JWKS refresh failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Verifies the caller's `Authorization: Bearer` token.
    ///
    /// A token that verified once is remembered (keyed by [`token_key`], its exact bytes
    /// compared on every hit) until its `exp`, so RSA verification runs once per token,
    /// not per request. A hit still checks `exp` (with leeway) and that the signing key is
    /// still published: a key removed from the JWKS drops every token it verified.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        if token.ends_with(SIGNATURE_REMOVED) {
            return Err(AuthError::SignatureRemoved);
        }
        let hash = token_key(&self.hasher, token);
        if let Some(hit) = self.verified.get(&hash)
            && *hit.token == *token
        {
            // Whole seconds since the epoch, without a calendar date (chrono's `Utc::now`).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if now <= hit.exp.saturating_add(self.leeway_seconds as i64)
                && self.keys.load().keys.contains_key(&*hit.kid)
            {
                return Ok(Caller {
                    email: hit.email.clone(),
                });
            }
            self.verified.invalidate(&hash);
        }
        // Boxed: the cold path's future is large, and every request's would carry it.
        let (caller, exp, kid) = Box::pin(self.verify_full(token, &self.validation)).await?;
        self.verified.insert(
            hash,
            Arc::new(Verified {
                token: token.into(),
                email: caller.email.clone(),
                exp,
                kid: kid.into(),
            }),
        );
        Ok(caller)
    }

    /// Verifies a Pub/Sub push token for `audience`. With `signature_removed_ok` (Cloud Run's
    /// invoker check runs in front and already verified it), a token whose signature Cloud
    /// Run removed is accepted when its claims check out: an event is only a hint to re-read
    /// a secret, never a way to change what is injected.
    pub async fn verify_push(
        &self,
        headers: &HeaderMap,
        audience: &str,
        signature_removed_ok: bool,
    ) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        if let Some(unsigned) = token.strip_suffix(SIGNATURE_REMOVED) {
            // Cloud Run checked (and stripped) this token only if no
            // X-Serverless-Authorization came along: with one, it checked that header and
            // passed Authorization on untouched, so an unsigned token here proves nothing.
            if !signature_removed_ok || headers.contains_key("x-serverless-authorization") {
                return Err(AuthError::SignatureRemoved);
            }
            return self.check_unsigned_push(unsigned, audience);
        }
        let validation = validation(&[audience.to_string()], &self.issuers, self.leeway_seconds);
        self.verify_full(token, &validation)
            .await
            .map(|(caller, _, _)| caller)
    }

    fn check_unsigned_push(&self, unsigned: &str, audience: &str) -> Result<Caller, AuthError> {
        #[derive(Deserialize)]
        struct PushClaims {
            iss: Option<String>,
            aud: Option<serde_json::Value>,
            exp: Option<i64>,
            email: Option<String>,
            email_verified: Option<serde_json::Value>,
        }
        let payload = unsigned
            .split('.')
            .nth(1)
            .ok_or(AuthError::Malformed("not a JWT"))?;
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .map_err(|_| AuthError::Malformed("the JWT payload cannot be decoded"))?;
        let claims: PushClaims = serde_json::from_slice(&bytes)
            .map_err(|_| AuthError::Malformed("the JWT payload cannot be decoded"))?;
        if !claims.iss.is_some_and(|i| self.issuers.contains(&i)) {
            return Err(AuthError::Issuer);
        }
        let aud_ok = match claims.aud {
            Some(serde_json::Value::String(a)) => a == audience,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v == audience),
            _ => false,
        };
        if !aud_ok {
            return Err(AuthError::Audience);
        }
        let now = chrono::Utc::now().timestamp();
        if claims
            .exp
            .is_none_or(|exp| exp.saturating_add(self.leeway_seconds as i64) < now)
        {
            return Err(AuthError::Expired);
        }
        let email = claims
            .email
            .filter(|e| !e.is_empty())
            .ok_or(AuthError::MissingClaim("email"))?;
        if !matches!(claims.email_verified, Some(serde_json::Value::Bool(true))) {
            return Err(AuthError::EmailNotVerified);
        }
        Ok(Caller {
            email: email.into(),
        })
    }

    /// Full verification: signature, claims; returns the caller, `exp` and the key id.
    async fn verify_full(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<(Caller, i64, String), AuthError> {
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err(AuthError::Malformed("not a JWT"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Malformed("the JWT header cannot be decoded"))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Algorithm);
        }
        let kid = header
            .kid
            .ok_or(AuthError::Malformed("the JWT header has no kid"))?;
        let keys = self.keys_for(&kid).await?;
        let key = keys.keys.get(&kid).ok_or(AuthError::UnknownKey)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
                    AuthError::MissingClaim(match c.as_str() {
                        "exp" => "exp",
                        "iss" => "iss",
                        "aud" => "aud",
                        "nbf" => "nbf",
                        _ => "claims",
                    })
                }
                _ => AuthError::Malformed("the JWT cannot be decoded"),
            })?;
        let claims = data.claims;
        let iat = claims
            .iat
            .as_ref()
            .and_then(serde_json::Value::as_i64)
            .ok_or(AuthError::MissingClaim("iat"))?;
        let now = chrono::Utc::now().timestamp();
        if iat > now + self.leeway_seconds as i64 {
            return Err(AuthError::NotYetValid);
        }
        let email = claims
            .email
            .filter(|e| !e.is_empty())
            .ok_or(AuthError::MissingClaim("email"))?;
        let verified = match claims.email_verified {
            Some(serde_json::Value::Bool(b)) => b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        if !verified {
            return Err(AuthError::EmailNotVerified);
        }
        let exp = claims.exp.ok_or(AuthError::MissingClaim("exp"))?;
        Ok((
            Caller {
                email: email.into(),
            },
            exp,
            kid,
        ))
    }

    /// The key set holding `kid`, refetching at most once per interval when it is unknown.
    async fn keys_for(&self, kid: &str) -> Result<Arc<KeySet>, AuthError> {
        let keys = self.keys.load_full();
        if keys.keys.contains_key(kid) {
            return Ok(keys);
        }
        // One refetch at a time (the others wait for it, at most the fetch timeout), at most
        // one per interval; no lock is held while it runs.
        match self.refetch_gate.turn(UNKNOWN_KID_REFETCH_INTERVAL) {
            crate::flight::Turn::Lead(_leader) => {
                if let Err(err) = self.refresh().await {
                    tracing::warn!(error = %err, "JWKS refetch for an unknown kid failed");
                }
            }
            crate::flight::Turn::Wait(done) => crate::flight::wait(done, FETCH_TIMEOUT).await,
            crate::flight::Turn::Refused => {}
        }
        let keys = self.keys.load_full();
        if keys.keys.contains_key(kid) {
            Ok(keys)
        } else {
            Err(self.unknown_key_error())
        }
    }

    fn unknown_key_error(&self) -> AuthError {
        if self.is_ready() {
            AuthError::UnknownKey
        } else {
            AuthError::KeysUnavailable
        }
    }
}

/// RS256 only; `exp`, `iss`, `aud` required; `exp` and `nbf` checked with leeway.
fn validation(audiences: &[String], issuers: &[String], leeway_seconds: u64) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(audiences);
    validation.set_issuer(issuers);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.leeway = leeway_seconds;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation
}

/// The verified-token cache's key: a seeded hash of the token's length and last 32 bytes
/// (the end of its signature), rather than of the whole kilobyte.
///
/// Tokens that share this key are still told apart: a hit is used only when the whole
/// token equals the cached one, and any other token is verified in full, exactly as an
/// unknown one is (a forged token sharing a cached token's tail fails verification and
/// changes nothing in the cache). Two tokens that both verify and share the tail do not
/// occur: the signature covers everything before it.
fn token_key(hasher: &foldhash::quality::RandomState, token: &str) -> u64 {
    let bytes = token.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(32)..];
    std::hash::BuildHasher::hash_one(hasher, (bytes.len(), tail))
}

/// Extracts the token of the single `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Malformed("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected `Bearer TOKEN`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("expected `Bearer TOKEN`"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// `max-age` minus `Age` from the response headers; one hour when absent.
fn cache_lifetime(headers: &HeaderMap) -> Duration {
    let max_age = headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|d| {
                d.trim()
                    .strip_prefix("max-age=")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        });
    let age = headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    match max_age {
        Some(max_age) => Duration::from_secs(max_age.saturating_sub(age)),
        None => Duration::from_secs(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn reads_cache_lifetime_minus_age() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=21000, must-revalidate, no-transform"),
        );
        h.insert(http::header::AGE, HeaderValue::from_static("1000"));
        assert_eq!(cache_lifetime(&h), Duration::from_secs(20000));
        assert_eq!(cache_lifetime(&HeaderMap::new()), Duration::from_secs(3600));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), Err(AuthError::Missing));
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&h), Ok("abc"));
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert!(matches!(bearer_token(&h), Err(AuthError::Malformed(_))));
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a"),
        );
        h.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer b"),
        );
        assert!(matches!(bearer_token(&h), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn jwks_keeps_only_rs256_signing_keys() {
        let body = br#"{"keys":[
            {"kty":"RSA","kid":"a","alg":"RS256","use":"sig","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"EC","kid":"b","crv":"P-256","x":"x","y":"y"},
            {"kty":"RSA","kid":"c","alg":"RS512","n":"AQAB","e":"AQAB"}
        ]}"#;
        let set = KeySet::parse(body).expect("parse");
        assert_eq!(set.len(), 1);
        assert!(set.keys.contains_key("a"));
        assert!(KeySet::parse(br#"{"keys":[]}"#).is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }

    fn verifier(leeway_seconds: u64) -> Verifier {
        let settings = IdentitySettings {
            audiences: vec!["aud".to_string()],
            jwks_url: "http://127.0.0.1:9/certs".parse().expect("url"),
            issuers: vec!["https://accounts.google.com".to_string()],
            leeway_seconds,
            cloud_run_invoker_check: false,
        };
        Verifier::new(&settings).expect("verifier")
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        h
    }

    #[tokio::test]
    async fn a_cached_token_still_expires() {
        let signer = crate::dev::Signer::generate().expect("key");
        let v = verifier(0);
        v.install(KeySet::parse(signer.jwks().to_string().as_bytes()).expect("jwks"));
        let mut claims = crate::dev::Signer::claims(
            "a@p.iam.gserviceaccount.com",
            "https://accounts.google.com",
            "aud",
        );
        claims["exp"] = serde_json::json!(chrono::Utc::now().timestamp() + 1);
        let token = signer.sign(&claims);
        assert!(v.verify(&bearer(&token)).await.is_ok());
        assert!(
            v.verify(&bearer(&token)).await.is_ok(),
            "served from the cache"
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(v.verify(&bearer(&token)).await, Err(AuthError::Expired));
    }

    #[tokio::test]
    async fn a_removed_signing_key_drops_the_tokens_it_verified() {
        let old = crate::dev::Signer::generate().expect("key");
        let new = crate::dev::Signer::generate().expect("key");
        let v = verifier(30);
        v.install(KeySet::parse(old.jwks().to_string().as_bytes()).expect("jwks"));
        let claims = crate::dev::Signer::claims(
            "a@p.iam.gserviceaccount.com",
            "https://accounts.google.com",
            "aud",
        );
        let token = old.sign(&claims);
        assert!(v.verify(&bearer(&token)).await.is_ok());
        v.install(KeySet::parse(new.jwks().to_string().as_bytes()).expect("jwks"));
        assert!(
            v.verify(&bearer(&token)).await.is_err(),
            "the cached verification was dropped"
        );
    }

    #[tokio::test]
    async fn a_tampered_token_never_hits_the_cache() {
        let signer = crate::dev::Signer::generate().expect("key");
        let v = verifier(30);
        v.install(KeySet::parse(signer.jwks().to_string().as_bytes()).expect("jwks"));
        let claims = crate::dev::Signer::claims(
            "a@p.iam.gserviceaccount.com",
            "https://accounts.google.com",
            "aud",
        );
        let token = signer.sign(&claims);
        assert!(v.verify(&bearer(&token)).await.is_ok());
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(v.verify(&bearer(&tampered)).await.is_err());
    }

    #[tokio::test]
    async fn a_forged_token_sharing_the_cache_key_is_refused_and_changes_nothing() {
        let signer = crate::dev::Signer::generate().expect("key");
        let v = verifier(30);
        v.install(KeySet::parse(signer.jwks().to_string().as_bytes()).expect("jwks"));
        let victim = signer.sign(&crate::dev::Signer::claims(
            "victim@p.iam.gserviceaccount.com",
            "https://accounts.google.com",
            "aud",
        ));
        assert!(v.verify(&bearer(&victim)).await.is_ok());
        // Another caller's claims (an email of the same length) with the victim's signature:
        // same length, same tail, so the same cache key.
        let other = signer.sign(&crate::dev::Signer::claims(
            "attack@p.iam.gserviceaccount.com",
            "https://accounts.google.com",
            "aud",
        ));
        let (other_head, _) = other.rsplit_once('.').expect("jwt");
        let (_, victim_sig) = victim.rsplit_once('.').expect("jwt");
        let forged = format!("{other_head}.{victim_sig}");
        assert_ne!(forged, victim);
        assert_eq!(
            token_key(&v.hasher, &forged),
            token_key(&v.hasher, &victim),
            "the forgery shares the key"
        );
        assert!(v.verify(&bearer(&forged)).await.is_err());
        let caller = v.verify(&bearer(&victim)).await.expect("still cached");
        assert_eq!(&*caller.email, "victim@p.iam.gserviceaccount.com");
    }

    #[test]
    fn missing_email_message_names_include_email() {
        let msg = AuthError::MissingClaim("email").to_string();
        assert!(msg.contains("includeEmail"), "{msg}");
        assert!(
            AuthError::SignatureRemoved
                .to_string()
                .contains("X-Serverless-Authorization")
        );
    }
}
