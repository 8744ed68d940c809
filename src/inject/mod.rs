//! Credential kinds: how a route's secret goes into each upstream request.
//!
//! One file per kind, each owning its spec (the `inject:` block, typed and validated), its
//! prepare step (once per fetched secret value: header built, pair encoded, key or
//! credentials parsed) and its apply step (per request: header set, query pair appended,
//! request signed). This module holds the enum that parses and dispatches, like mini-redis's
//! `cmd/mod.rs`: adding a kind is one new file plus one arm in [`Injection::parse`],
//! [`prepare`] and [`sign`].
//!
//! | kind | file | spec | prepared | applied |
//! |---|---|---|---|---|
//! | `header`, `basic` | [`header`] | name and format / user name | sensitive header | set last |
//! | `query` | [`query`] | parameter name | encoded pair | appended to the URL |
//! | `hmac` | [`hmac`] | signed parts, header, encoding | key | signature over the final request |
//! | `aws_sigv4` | [`aws_sigv4`] | service, region | access key | SigV4 over the final request |
//! | `oauth2_client_credentials` | [`oauth2`] | token URL, scopes | client credentials | minted bearer token |
//!
//! Failures of the value itself (not UTF-8, no such JSON field, a newline for a header, a
//! payload of the wrong shape) and of signing are [`InjectError`]s: the store delivered, the
//! value does not fit. They name the secret, never its value.

pub mod aws_sigv4;
pub mod header;
pub mod hmac;
pub mod oauth2;
pub mod query;

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;

use crate::scrub::Needles;
use crate::secrets::reference::SecretRef;

/// Where a route's credential comes from and how it is injected.
#[derive(Debug, Clone)]
pub struct CredentialSpec {
    /// The secret reference.
    pub secret: SecretRef,
    /// Optional JSON field of the payload to use instead of the whole payload.
    pub field: Option<String>,
    /// How the value is put into the upstream request.
    pub inject: Injection,
}

/// How a credential is injected.
#[derive(Debug, Clone)]
pub enum Injection {
    /// A header whose value is `format` with `{secret}` replaced.
    Header {
        /// Header name.
        name: HeaderName,
        /// Template containing `{secret}`.
        format: String,
    },
    /// A query parameter.
    Query {
        /// Parameter name.
        name: String,
    },
    /// HTTP basic authentication with the secret as password.
    Basic {
        /// User name.
        username: String,
    },
    /// An HMAC signature over parts of each request, keyed by the secret.
    Hmac(hmac::HmacSpec),
    /// AWS Signature Version 4 with `{"access_key_id", "secret_access_key"}` from the secret.
    AwsSigV4(aws_sigv4::AwsSigV4Spec),
    /// `Authorization: Bearer` with an access token minted from
    /// `{"client_id", "client_secret"}` (OAuth2 client credentials grant).
    OAuth2(oauth2::OAuth2Spec),
}

/// The `inject:` block as written: exactly one key, the kind.
#[derive(Debug, Default, Deserialize)]
pub struct RawInject {
    header: Option<header::RawHeader>,
    query: Option<query::RawQuery>,
    basic: Option<header::RawBasic>,
    oauth2_client_credentials: Option<oauth2::RawOAuth2>,
    hmac: Option<hmac::RawHmac>,
    aws_sigv4: Option<aws_sigv4::RawAwsSigV4>,
}

/// One problem in an `inject:` block, for `check`'s key paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Key path below the block being parsed (`header.name`, `scopes[1]`), or empty when the
    /// block itself is wrong.
    pub key: String,
    /// What is wrong, naming no secret (the block holds none).
    pub message: String,
}

impl SpecProblem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        SpecProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Keeps the value of `result`, or records its problem.
fn keep<T>(problems: &mut Vec<SpecProblem>, result: Result<T, SpecProblem>) -> Option<T> {
    result.map_err(|p| problems.push(p)).ok()
}

/// For the kinds' `from_raw` conveniences: deserialises one block given as a JSON value
/// into the kind's raw struct exactly as the config loader does (every unknown key, the
/// first type error), then validates it. The kind words the first two: `unknown` gets an
/// unknown key's path, `type_error` a wrong value's path (empty for the block itself, also
/// when it is not a mapping). Every problem comes back, unknown keys first.
fn parse_value<R: serde::de::DeserializeOwned, S>(
    value: &serde_json::Value,
    unknown: impl Fn(&str) -> SpecProblem,
    type_error: impl Fn(&str) -> SpecProblem,
    validate: impl FnOnce(R) -> Result<S, Vec<SpecProblem>>,
) -> Result<S, Vec<SpecProblem>> {
    // serde would also read a struct from a list, by position; a block is a mapping.
    if !value.is_object() {
        return Err(vec![type_error("")]);
    }
    let crate::raw::Deserialized {
        unknown: keys,
        value,
    } = crate::raw::deserialize(value.clone());
    let mut problems: Vec<SpecProblem> = keys.iter().map(|key| unknown(key)).collect();
    match value.map(validate) {
        Err(err) => problems.push(type_error(&err.path)),
        Ok(Err(more)) => problems.extend(more),
        Ok(Ok(spec)) if problems.is_empty() => return Ok(spec),
        Ok(Ok(_)) => {}
    }
    Err(problems)
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// The messages of `problems` in one line, for the `from_raw` conveniences.
pub(crate) fn joined(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Injection {
    /// Validates an `inject:` block; problems carry key paths below `inject`.
    pub fn parse(raw: RawInject) -> Result<Injection, Vec<SpecProblem>> {
        let count = [
            raw.header.is_some(),
            raw.query.is_some(),
            raw.basic.is_some(),
            raw.oauth2_client_credentials.is_some(),
            raw.hmac.is_some(),
            raw.aws_sigv4.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if count != 1 {
            return Err(vec![SpecProblem::new(
                "",
                format!(
                    "exactly one of header, query, basic, oauth2_client_credentials, hmac, aws_sigv4 is required, found {count}"
                ),
            )]);
        }
        let under = |prefix: &str, problems: Vec<SpecProblem>| {
            problems
                .into_iter()
                .map(|p| SpecProblem {
                    key: if p.key.is_empty() {
                        prefix.to_string()
                    } else {
                        format!("{prefix}.{}", p.key)
                    },
                    message: p.message,
                })
                .collect::<Vec<_>>()
        };
        if let Some(h) = raw.header {
            header::parse_header(h)
        } else if let Some(q) = raw.query {
            query::parse(q)
        } else if let Some(b) = raw.basic {
            header::parse_basic(b)
        } else if let Some(h) = raw.hmac {
            hmac::HmacSpec::validate(h)
                .map(Injection::Hmac)
                .map_err(|p| under("hmac", p))
        } else if let Some(a) = raw.aws_sigv4 {
            aws_sigv4::AwsSigV4Spec::validate(a)
                .map(Injection::AwsSigV4)
                .map_err(|p| under("aws_sigv4", p))
        } else if let Some(o) = raw.oauth2_client_credentials {
            oauth2::OAuth2Spec::validate(o, true)
                .map(Injection::OAuth2)
                .map_err(|p| under("oauth2_client_credentials", p))
        } else {
            Err(Vec::new())
        }
    }

    /// Short name of the kind, for `explain` and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Injection::Header { .. } => "header",
            Injection::Query { .. } => "query",
            Injection::Basic { .. } => "basic",
            Injection::Hmac(_) => "hmac",
            Injection::AwsSigV4(_) => "aws_sigv4",
            Injection::OAuth2(_) => "oauth2_client_credentials",
        }
    }

    /// Whether signing needs the whole request body (it is then buffered up to
    /// `max_body_bytes`).
    pub fn needs_body(&self) -> bool {
        match self {
            Injection::Hmac(spec) => spec.signs_body(),
            Injection::AwsSigV4(_) => true,
            _ => false,
        }
    }

    /// The header this kind sets on its own (a route may not set it in
    /// `request_headers.set`).
    pub fn owned_header(&self) -> Option<HeaderName> {
        match self {
            Injection::Header { name, .. } => Some(name.clone()),
            Injection::Basic { .. } => Some(http::header::AUTHORIZATION),
            _ => None,
        }
    }
}

/// Why a fetched secret value cannot be injected. Messages name the secret, never its value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InjectError {
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
    /// The value cannot go into an HTTP header (control characters such as a newline).
    #[error("secret {resource} has characters that cannot be sent in an HTTP header")]
    NotHeaderSafe {
        /// The reference without version.
        resource: String,
    },
    /// The payload does not have the shape the kind needs (OAuth2 client or AWS credentials).
    #[error("secret {resource} is not available: {detail}")]
    Payload {
        /// The reference without version.
        resource: String,
        /// Which field is wrong, never a value.
        detail: String,
    },
    /// The request could not be signed.
    #[error("secret {resource} is not available: cannot sign the request: {detail}")]
    Signing {
        /// The reference without version.
        resource: String,
        /// Why.
        detail: String,
    },
    /// The caller sent a header that the signature covers with a value it cannot use: the
    /// caller's fault.
    #[error("the request cannot be signed: {detail}")]
    CallerHeader {
        /// Which header, never its value.
        detail: String,
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
        credentials: aws_sigv4::AwsCredentials,
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

impl Prepared {
    /// The injected query parameter's name (caller copies are dropped).
    pub fn query_name(&self) -> Option<&str> {
        match self {
            Prepared::Query { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The injected `name=value` pair, appended to the upstream URL.
    pub fn query_pair(&self) -> Option<&str> {
        match self {
            Prepared::Query { pair, .. } => Some(pair.expose_secret()),
            _ => None,
        }
    }

    /// Sets the injected header, if this kind has one, replacing any caller copy.
    pub fn apply_header(&self, headers: &mut HeaderMap) {
        if let Prepared::Header { name, value } = self {
            header::apply(name, value, headers);
        }
    }
}

/// A secret value in its injected form, with the forms to scrub from responses.
#[derive(Debug)]
pub struct Ready {
    /// The injected form.
    pub injection: Prepared,
    /// The value and its encoded forms, for scrubbing responses (`None` when too short).
    pub scrub: Option<Arc<Needles>>,
}

/// Turns a raw payload into the injected form: UTF-8, optional JSON field, then the kind's
/// prepare step.
pub fn prepare(spec: &CredentialSpec, payload: &[u8]) -> Result<Ready, InjectError> {
    let resource = || spec.secret.resource();
    let text = std::str::from_utf8(payload).map_err(|_| InjectError::NotUtf8 {
        resource: resource(),
    })?;
    let field_value;
    let value: &str = match &spec.field {
        None => text,
        Some(field) => {
            let missing = || InjectError::MissingField {
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
        return Err(InjectError::Empty {
            resource: resource(),
        });
    }
    let payload_error = |detail| InjectError::Payload {
        resource: resource(),
        detail,
    };
    // Another secret text the kind sends or holds (scrubbed in all its forms too).
    let mut extra_needle = String::new();
    let injection = match &spec.inject {
        Injection::Header { name, format } => {
            header::prepare_header(name, format, value, &resource)?
        }
        Injection::Basic { username } => {
            let (prepared, token) = header::prepare_basic(username, value, &resource)?;
            extra_needle = token;
            prepared
        }
        Injection::Query { name } => query::prepare(name, value),
        Injection::Hmac(_) => hmac::prepare(value),
        Injection::AwsSigV4(_) => {
            let (prepared, secret) = aws_sigv4::prepare(value).map_err(payload_error)?;
            extra_needle = secret;
            prepared
        }
        Injection::OAuth2(_) => {
            let (prepared, secret) = oauth2::prepare(value).map_err(payload_error)?;
            extra_needle = secret;
            prepared
        }
    };
    let scrub = Needles::for_secrets(&[value.as_bytes(), extra_needle.as_bytes()]).map(Arc::new);
    Ok(Ready { injection, scrub })
}

/// The request exactly as it will go upstream, for the kinds that sign it.
pub struct Signable<'a> {
    /// The method.
    pub method: &'a Method,
    /// The final URL (a signer may re-encode it to what it signed).
    pub uri: &'a mut http::Uri,
    /// The final headers (signature headers are set here, replacing caller copies).
    pub headers: &'a mut HeaderMap,
    /// The body, whole (empty when it streams: such routes sign no body).
    pub body: &'a [u8],
}

/// Why a request could not be signed.
#[derive(Debug)]
pub enum SignFailure {
    /// Something the caller sent (400).
    Caller(String),
    /// The credential or the signer (503).
    Credential(String),
}

/// Signs the request for `hmac` and `aws_sigv4` routes; other kinds are untouched.
pub fn sign(
    spec: &CredentialSpec,
    prepared: &Prepared,
    request: Signable<'_>,
) -> Result<(), InjectError> {
    let failed = |detail: String| InjectError::Signing {
        resource: spec.secret.resource(),
        detail,
    };
    // The clock is read only by the kinds that sign.
    let now = std::time::SystemTime::now;
    match (&spec.inject, prepared) {
        (Injection::Hmac(hmac_spec), Prepared::Hmac { key }) => {
            hmac::apply(hmac_spec, key.expose_secret(), request, now()).map_err(failed)
        }
        (Injection::AwsSigV4(aws_spec), Prepared::AwsSigV4 { credentials }) => {
            aws_sigv4::apply(aws_spec, credentials, request, now()).map_err(|f| match f {
                SignFailure::Caller(detail) => InjectError::CallerHeader { detail },
                SignFailure::Credential(detail) => failed(detail),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
