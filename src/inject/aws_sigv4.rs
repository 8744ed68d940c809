//! `inject.aws_sigv4`: AWS Signature Version 4 with the route's access key.
//!
//! Signing is done by the `aws-sigv4` crate (the AWS SDK for Rust's signer), not by hand.
//! [`sigv4_sign`] returns the headers to set: `authorization`, `x-amz-date`,
//! `x-amz-security-token` when the credentials carry a session token, and
//! `x-amz-content-sha256` when the service needs it (S3, or when asked). The proxy must
//! *replace* any caller-supplied copies of those.
//!
//! Signed headers: `host` (always, from the upstream URL) plus those of the given headers
//! named `content-type`, `content-length`, `content-md5` or `x-amz-*`. AWS requires `host`
//! and every `x-amz-*` header to be signed and accepts any other set; keeping the set to
//! headers that no hop rewrites means a header the HTTP client adds or changes on the way
//! (`user-agent`, `accept`, `accept-encoding`, ...) cannot invalidate the signature. Pass
//! `content-length` only when the body is sent with exactly that length.
//!
//! The payload is either the body bytes (hashed here), a SHA-256 computed elsewhere, or
//! `UNSIGNED-PAYLOAD` for streamed bodies (accepted by S3 and by some other services only).
//!
//! # Secrets
//!
//! [`AwsCredentials`] keeps the secret access key and the session token in
//! [`secrecy::SecretString`], so `Debug` shows neither, and its payload parser's errors name
//! fields, never values. `aws-sigv4` traces (at `trace` level) only redacted forms.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::{Prepared, Signable, SpecProblem, keep};

/// AWS credentials for SigV4, from the route's secret payload
/// `{"access_key_id": "...", "secret_access_key": "...", "session_token": "..."}`
/// (`session_token` optional). `Debug` shows the access key id only.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    /// The access key id (`AKIA...`, `ASIA...`): an identifier, not a secret.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token of temporary credentials.
    pub session_token: Option<SecretString>,
}

impl AwsCredentials {
    /// Parses the JSON payload. Unknown keys, a missing or empty `access_key_id` or
    /// `secret_access_key`, and values that cannot go into an HTTP header are errors; the
    /// message names the field, never a value.
    pub fn from_json(payload: &[u8]) -> Result<Self, String> {
        const SHAPE: &str = "a JSON object {\"access_key_id\": \"...\", \"secret_access_key\": \"...\"} with an optional \"session_token\"";
        // serde_json's syntax errors carry a position, never input text; keep only that.
        let value: Value = serde_json::from_slice(payload).map_err(|e| {
            format!(
                "the AWS credentials are not valid JSON (line {}, column {}); expected {SHAPE}",
                e.line(),
                e.column()
            )
        })?;
        let Value::Object(mut map) = value else {
            return Err(format!("the AWS credentials must be {SHAPE}"));
        };
        if let Some(key) = map.keys().find(|k| {
            !matches!(
                k.as_str(),
                "access_key_id" | "secret_access_key" | "session_token"
            )
        }) {
            return Err(format!(
                "the AWS credentials have an unknown field `{key}`; expected access_key_id, secret_access_key and optionally session_token"
            ));
        }
        let mut take = |key: &str| -> Result<Option<String>, String> {
            match map.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => {
                    Err(format!("the AWS credentials' `{key}` is empty"))
                }
                Some(Value::String(s)) if !s.bytes().all(|b| b.is_ascii_graphic()) => Err(format!(
                    "the AWS credentials' `{key}` has characters that cannot be sent in an HTTP header"
                )),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("the AWS credentials' `{key}` must be a string")),
            }
        };
        let missing = |key: &str| format!("the AWS credentials have no `{key}`; expected {SHAPE}");
        let access_key_id = take("access_key_id")?.ok_or_else(|| missing("access_key_id"))?;
        let secret_access_key =
            take("secret_access_key")?.ok_or_else(|| missing("secret_access_key"))?;
        let session_token = take("session_token")?;
        Ok(AwsCredentials {
            access_key_id,
            secret_access_key: SecretString::from(secret_access_key),
            session_token: session_token.map(SecretString::from),
        })
    }
}

/// `inject.aws_sigv4` as written; [`AwsSigV4Spec::validate`] checks it. Unknown keys are
/// left to the config loader, which reports each with its key path and line.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping, e.g. { service: execute-api, region: eu-west-1 }")]
pub struct RawAwsSigV4 {
    service: Option<String>,
    region: Option<String>,
}

/// A validated `inject.aws_sigv4` block: the service's signing name and the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSigV4Spec {
    service: String,
    region: String,
    content_sha256_header: bool,
}

/// Services that need S3's signing variant: `x-amz-content-sha256` on every request, the
/// path signed as sent (no normalisation, no second encoding).
fn is_s3(service: &str) -> bool {
    matches!(service, "s3" | "s3-object-lambda")
}

/// A signing name or region: 1-64 lowercase letters, digits and `-`.
fn is_aws_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_service(service: &str) -> Result<(), String> {
    if is_aws_name(service) {
        Ok(())
    } else {
        Err(format!(
            "`service`: `{service}` is not an AWS signing name (lowercase letters, digits and `-`, e.g. execute-api, s3)"
        ))
    }
}

fn check_region(region: &str) -> Result<(), String> {
    if is_aws_name(region) {
        Ok(())
    } else {
        Err(format!(
            "`region`: `{region}` is not an AWS region (lowercase letters, digits and `-`, e.g. eu-west-1)"
        ))
    }
}

impl AwsSigV4Spec {
    /// A spec for `service` (its signing name, e.g. `execute-api`, `s3`, `es`) in `region`
    /// (e.g. `eu-west-1`). Both are lowercase letters, digits and `-`.
    pub fn new(service: &str, region: &str) -> Result<Self, String> {
        check_service(service)?;
        check_region(region)?;
        Ok(Self::checked(service, region))
    }

    fn checked(service: &str, region: &str) -> Self {
        AwsSigV4Spec {
            service: service.to_string(),
            region: region.to_string(),
            content_sha256_header: is_s3(service),
        }
    }

    /// Parses the `inject.aws_sigv4` mapping `{ service, region }` given as JSON (as a
    /// config block would be), for tests and tools: see [`AwsSigV4Spec::validate`]. Unknown
    /// keys and values of the wrong type are errors too. Every problem is in the message,
    /// joined by `; `, each naming its key.
    pub fn from_raw(raw: &Value) -> Result<Self, String> {
        super::parse_value(
            raw,
            |key| {
                SpecProblem::new(
                    key,
                    format!("unknown field `{key}` in `aws_sigv4`; expected service and region"),
                )
            },
            |key| {
                SpecProblem::new(
                    key,
                    if key.is_empty() {
                        // As in `RawAwsSigV4`'s `expecting`.
                        "`aws_sigv4` must be a mapping, e.g. { service: execute-api, region: eu-west-1 }"
                            .to_string()
                    } else {
                        format!("`{key}` must be a string")
                    },
                )
            },
            Self::validate,
        )
        .map_err(|problems| super::joined(&problems))
    }

    /// Validates an `inject.aws_sigv4` block: `service` and `region` are both required and
    /// both checked (see [`AwsSigV4Spec::new`]); every problem is reported at its key.
    pub fn validate(raw: RawAwsSigV4) -> Result<Self, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        let mut field = |key: &str,
                         value: Option<String>,
                         hint: &str,
                         check: fn(&str) -> Result<(), String>| {
            let result = match value {
                None => Err(format!("`{key}` is required: {hint}")),
                Some(text) => check(&text).map(|()| text),
            };
            keep(
                &mut problems,
                result.map_err(|message| SpecProblem::new(key, message)),
            )
        };
        let service = field(
            "service",
            raw.service,
            "the AWS signing name, e.g. execute-api",
            check_service,
        );
        let region = field(
            "region",
            raw.region,
            "the AWS region, e.g. eu-west-1",
            check_region,
        );
        match (service, region) {
            (Some(service), Some(region)) => Ok(Self::checked(&service, &region)),
            _ => Err(problems),
        }
    }

    /// Sends `x-amz-content-sha256` (the payload hash) with every request. On by default for
    /// S3 services, which require it; other services accept it.
    pub fn with_content_sha256_header(mut self, on: bool) -> Self {
        self.content_sha256_header = on;
        self
    }

    /// The service's signing name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }
}

/// The payload hash in a SigV4 signature.
#[derive(Debug, Clone, Copy)]
pub enum SigV4Payload<'a> {
    /// The whole body, hashed here.
    Bytes(&'a [u8]),
    /// The body's SHA-256 computed elsewhere, as 64 lowercase hex digits.
    Sha256Hex(&'a str),
    /// `UNSIGNED-PAYLOAD`: the body is not covered (streaming; S3 and a few services only).
    Unsigned,
}

/// A request to sign with SigV4, as it will be sent upstream.
#[derive(Debug, Clone, Copy)]
pub struct SigV4Request<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The full upstream URL (scheme, host, port, encoded path and query); it gives `host`.
    pub url: &'a url::Url,
    /// The headers that will be sent; only `content-type`, `content-length`, `content-md5`
    /// and `x-amz-*` ones are signed (see the [module docs](self)).
    pub headers: &'a HeaderMap,
    /// The payload.
    pub payload: SigV4Payload<'a>,
}

/// Headers that [`sigv4_sign`] produces itself: copies in the request are not signed.
const SIGV4_OUTPUT_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Whether a request header is covered by the signature.
fn sigv4_signs(name: &HeaderName) -> bool {
    let n = name.as_str();
    !SIGV4_OUTPUT_HEADERS.contains(&n)
        && (matches!(n, "content-type" | "content-length" | "content-md5")
            || n.starts_with("x-amz-"))
}

/// Signs `request` with AWS Signature Version 4 at `time` and returns the headers to set on
/// it, replacing any copies the caller sent: `x-amz-date`, `authorization`,
/// `x-amz-content-sha256` (S3, or when enabled on the spec) and `x-amz-security-token` (when
/// the credentials carry a session token). Sensitive values are marked so.
///
/// Errors (an unusable URL, a malformed payload hash, a signed header whose value is not
/// visible ASCII) name the problem, never a credential.
pub fn sigv4_sign(
    spec: &AwsSigV4Spec,
    credentials: &AwsCredentials,
    request: &SigV4Request<'_>,
    time: SystemTime,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    };

    let url = request.url;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!(
            "cannot sign a request to `{}`: an http(s) URL with a host is needed",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("cannot sign a request whose URL carries user information".to_string());
    }
    // The request target as sent: no fragment.
    let target = &url[..url::Position::AfterQuery];

    let mut headers = Vec::new();
    for (name, value) in request.headers {
        if !sigv4_signs(name) {
            continue;
        }
        let value = value
            .to_str()
            .map_err(|_| format!("cannot sign header `{name}`: its value is not visible ASCII"))?;
        headers.push((name.as_str(), value));
    }

    let body = match request.payload {
        SigV4Payload::Bytes(bytes) => SignableBody::Bytes(bytes),
        SigV4Payload::Sha256Hex(hash) => {
            if hash.len() != 64
                || !hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(
                    "the payload hash must be a SHA-256 in 64 lowercase hex digits".to_string(),
                );
            }
            SignableBody::Precomputed(hash.to_string())
        }
        SigV4Payload::Unsigned => SignableBody::UnsignedPayload,
    };

    let mut settings = SigningSettings::default();
    if spec.content_sha256_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    if is_s3(&spec.service) {
        // S3 signs the path exactly as sent.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }

    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.as_str(),
        credentials.secret_access_key.expose_secret(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose_secret().to_string()),
        None,
        "credproxy",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&spec.region)
        .name(&spec.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let signable = SignableRequest::new(request.method, target, headers.into_iter(), body)
        .map_err(|e| format!("cannot sign the request: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into_parts();
    let (out, _params) = instructions.into_parts();
    out.into_iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name().as_bytes()).map_err(|_| {
                format!("the signer produced an invalid header name `{}`", h.name())
            })?;
            let mut value = HeaderValue::from_str(h.value()).map_err(|_| {
                format!("the signer produced a `{name}` value that is not a valid header value")
            })?;
            value.set_sensitive(
                h.sensitive()
                    || name == http::header::AUTHORIZATION
                    || name == "x-amz-security-token",
            );
            Ok((name, value))
        })
        .collect()
}

// ------------------------------------------------------------------------------------------

/// The prepared form of a SigV4 route's secret: the parsed credentials, and the secret
/// access key (a form of the secret to scrub from responses).
pub fn prepare(value: &str) -> Result<(Prepared, String), String> {
    let credentials = AwsCredentials::from_json(value.as_bytes())?;
    let secret = credentials.secret_access_key.expose_secret().to_string();
    Ok((Prepared::AwsSigV4 { credentials }, secret))
}

/// Signs the request exactly as it goes upstream: sets `Content-Length` for a held body,
/// the signer's headers (replacing caller copies), and the URL in the form that was signed.
pub fn apply(
    spec: &AwsSigV4Spec,
    credentials: &AwsCredentials,
    request: Signable<'_>,
    now: SystemTime,
) -> Result<(), super::SignFailure> {
    use super::SignFailure::{Caller, Credential};
    // A signed header the caller sent with a value that is not visible ASCII is the
    // caller's fault (400), not the credential's.
    if let Some((name, _)) = request
        .headers
        .iter()
        .find(|(name, value)| sigv4_signs(name) && value.to_str().is_err())
    {
        return Err(Caller(format!(
            "header `{name}` is signed but its value is not visible ASCII"
        )));
    }
    if !request.body.is_empty() {
        request.headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(request.body.len()),
        );
    }
    let url = url::Url::parse(&request.uri.to_string())
        .map_err(|err| Credential(format!("the upstream URL does not parse: {err}")))?;
    let signing = SigV4Request {
        method: request.method.as_str(),
        url: &url,
        headers: request.headers,
        payload: SigV4Payload::Bytes(request.body),
    };
    let headers = sigv4_sign(spec, credentials, &signing, now).map_err(Credential)?;
    for (name, value) in headers {
        request.headers.insert(name, value);
    }
    // Send exactly the target that was signed: the URL form percent-encodes a few
    // characters (`"`, `{`, `}`, `'`) the raw URI keeps.
    *request.uri = http::Uri::try_from(url.as_str())
        .map_err(|_| Credential("the signed URL is not a valid URI".to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests;
