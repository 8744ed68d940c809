//! Request signing: HMAC signatures over parts of a request (`inject.hmac`) and AWS
//! Signature Version 4 (`inject.aws_sigv4`).
//!
//! Some upstreams take no static key: each request carries a signature computed with a secret
//! that only credproxy holds. This module owns that computation and nothing else. Everything
//! here is a pure function of the spec (parsed from the route's `inject:` block), the secret
//! and the request *as it will be sent upstream*; the time is an argument, so every signature
//! is reproducible in a test against published vectors. No I/O, no state, no logging: reading
//! the body, taking the clock and setting the returned headers belong to the proxy.
//!
//! # HMAC (`inject.hmac`)
//!
//! ```yaml
//! hmac: { header: "X-Signature", algorithm: sha256, encoding: hex,
//!         timestamp_header: "X-Timestamp", signed: [method, path, query, timestamp, body] }
//! hmac: { preset: slack_v0 }        # or github_sha256; a preset stands alone
//! ```
//!
//! The **canonical string** is `prefix` followed by the parts listed in `signed`, in the
//! listed order, joined by `separator`:
//!
//! | part | bytes |
//! |---|---|
//! | `method` | the request method as sent, e.g. `POST` |
//! | `path` | the path as sent upstream, percent-encoded exactly as on the wire, no query |
//! | `query` | the query string as sent, without `?`; empty when there is none |
//! | `timestamp` | Unix time in whole seconds, in decimal, e.g. `1531420618` |
//! | `body` | the raw body bytes, exactly as sent |
//!
//! `prefix` defaults to empty and `separator` to `"\n"`. The signature is
//! HMAC-`algorithm`(secret, canonical string), encoded as lowercase `hex` or standard
//! `base64` (with padding). The signature header's value is `format` with `{signature}`
//! replaced (and `{timestamp}`, when the timestamp is signed); `format` defaults to
//! `{signature}`. With `timestamp_header`, that header carries the same decimal timestamp.
//! A signed timestamp must reach the upstream, so `timestamp` in `signed` needs
//! `timestamp_header` or `{timestamp}` in `format`.
//!
//! When `body` is signed, the whole request body must be in hand before the request is
//! forwarded: the proxy buffers it, up to the route's `max_body_bytes`
//! ([`HmacSpec::signs_body`] says whether it must).
//!
//! Presets, each with its vendor's published test vector in this module's tests:
//!
//! - `slack_v0`: Slack's request signing v0. Canonical string `v0:{timestamp}:{body}`,
//!   HMAC-SHA256 in hex, `X-Slack-Signature: v0={hex}` and `X-Slack-Request-Timestamp`.
//! - `github_sha256`: GitHub's webhook signature. HMAC-SHA256 of the body in hex,
//!   `X-Hub-Signature-256: sha256={hex}`.
//!
//! # AWS Signature Version 4 (`inject.aws_sigv4`)
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
//! The HMAC key is borrowed for one call and never stored, printed or logged.
//! [`AwsCredentials`] keeps the secret access key and the session token in
//! [`secrecy::SecretString`], so `Debug` shows neither, and its payload parser's errors name
//! fields, never values. `aws-sigv4` traces (at `trace` level) only redacted forms.

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::hmac;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

// ------------------------------------------------------------------------------------------
// HMAC

/// The hash function of an HMAC signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// HMAC-SHA256 (`sha256`).
    Sha256,
    /// HMAC-SHA512 (`sha512`).
    Sha512,
}

impl HmacAlgorithm {
    fn aws_lc(self) -> hmac::Algorithm {
        match self {
            HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
            HmacAlgorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// How the signature bytes are written into the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigEncoding {
    /// Lowercase hexadecimal (`hex`).
    Hex,
    /// Standard base64 with padding (`base64`).
    Base64,
}

/// One part of the request in the canonical string (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedPart {
    /// The request method as sent (`method`).
    Method,
    /// The path as sent upstream, without the query (`path`).
    Path,
    /// The query string without `?`, empty when absent (`query`).
    Query,
    /// The Unix time in seconds, in decimal (`timestamp`).
    Timestamp,
    /// The raw body bytes (`body`).
    Body,
}

impl SignedPart {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "method" => SignedPart::Method,
            "path" => SignedPart::Path,
            "query" => SignedPart::Query,
            "timestamp" => SignedPart::Timestamp,
            "body" => SignedPart::Body,
            _ => return None,
        })
    }
}

/// The parts of a request that an HMAC signature can cover, as sent upstream.
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path as sent upstream, percent-encoded as on the wire, without the query.
    pub path: &'a str,
    /// The query string without `?`, or `None` when the request has none.
    pub query: Option<&'a str>,
    /// Unix time in whole seconds (passed in so that signatures are reproducible).
    pub timestamp: u64,
    /// The whole request body, exactly as sent.
    pub body: &'a [u8],
}

impl fmt::Debug for RequestParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestParts")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("timestamp", &self.timestamp)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The headers an HMAC signature adds to a request.
#[derive(Debug, Clone)]
pub struct SignatureHeaders {
    /// The signature header (value marked sensitive).
    pub signature: (HeaderName, HeaderValue),
    /// The timestamp header, when the spec has `timestamp_header`.
    pub timestamp: Option<(HeaderName, HeaderValue)>,
}

impl SignatureHeaders {
    /// The headers as a list, signature first.
    pub fn into_vec(self) -> Vec<(HeaderName, HeaderValue)> {
        self.into_iter().collect()
    }
}

impl IntoIterator for SignatureHeaders {
    type Item = (HeaderName, HeaderValue);
    type IntoIter = std::iter::Chain<
        std::iter::Once<(HeaderName, HeaderValue)>,
        std::option::IntoIter<(HeaderName, HeaderValue)>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self.signature).chain(self.timestamp)
    }
}

/// A validated `inject.hmac` block: which parts of a request are signed, how, and where the
/// signature goes. Holds no key; see the [module docs](self) for the canonical string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSpec {
    header: HeaderName,
    algorithm: HmacAlgorithm,
    encoding: SigEncoding,
    timestamp_header: Option<HeaderName>,
    signed: Vec<SignedPart>,
    format: String,
    separator: String,
    prefix: String,
}

/// Keys accepted in `inject.hmac`.
const HMAC_KEYS: &[&str] = &[
    "preset",
    "header",
    "algorithm",
    "encoding",
    "timestamp_header",
    "signed",
    "format",
    "separator",
    "prefix",
];

/// Names of the HMAC presets, for messages.
const HMAC_PRESETS: &str = "slack_v0, github_sha256";

impl HmacSpec {
    /// Parses the `inject.hmac` mapping (the YAML value as JSON): either `{ preset: NAME }`
    /// alone, or `{ header, algorithm, encoding, signed, timestamp_header?, format?,
    /// separator?, prefix? }`. Unknown keys, an empty or repeated `signed`, a signed timestamp
    /// that would not reach the upstream, and a `format` without `{signature}` are errors.
    /// The message names the offending key, e.g. "`signed` must list at least one part".
    pub fn from_raw(raw: &Value) -> Result<Self, String> {
        let map = raw.as_object().ok_or_else(|| {
            "`hmac` must be a mapping, e.g. { header: X-Signature, algorithm: sha256, encoding: hex, signed: [body] }, or { preset: slack_v0 }".to_string()
        })?;
        if let Some(key) = map.keys().find(|k| !HMAC_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{key}` in `hmac`; expected one of: {}",
                HMAC_KEYS.join(", ")
            ));
        }
        if let Some(preset) = map.get("preset") {
            if let Some(other) = map.keys().find(|k| k.as_str() != "preset") {
                return Err(format!(
                    "`preset` stands alone: remove `{other}`, or drop `preset` and spell the scheme out"
                ));
            }
            return match preset.as_str() {
                Some("slack_v0") => Ok(Self::slack_v0()),
                Some("github_sha256") => Ok(Self::github_sha256()),
                Some(other) => Err(format!(
                    "`preset`: unknown preset `{other}`; known presets: {HMAC_PRESETS}"
                )),
                None => Err(format!("`preset` must be a string, one of: {HMAC_PRESETS}")),
            };
        }

        let header = header_name_field(map, "header")?.ok_or_else(|| {
            "`header` is required: the header that carries the signature".to_string()
        })?;
        let algorithm = match required_str(map, "algorithm", "sha256 or sha512")? {
            "sha256" => HmacAlgorithm::Sha256,
            "sha512" => HmacAlgorithm::Sha512,
            other => {
                return Err(format!(
                    "`algorithm`: `{other}` is not supported; use sha256 or sha512"
                ));
            }
        };
        let encoding = match required_str(map, "encoding", "hex or base64")? {
            "hex" => SigEncoding::Hex,
            "base64" => SigEncoding::Base64,
            other => {
                return Err(format!(
                    "`encoding`: `{other}` is not supported; use hex or base64"
                ));
            }
        };
        let timestamp_header = header_name_field(map, "timestamp_header")?;
        let signed = match map.get("signed") {
            None | Some(Value::Null) => {
                return Err(
                    "`signed` is required: a list of method, path, query, timestamp, body"
                        .to_string(),
                );
            }
            Some(Value::Array(items)) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    let name = item.as_str().ok_or_else(|| {
                        "`signed` entries must be strings: method, path, query, timestamp, body"
                            .to_string()
                    })?;
                    let part = SignedPart::parse(name).ok_or_else(|| {
                        format!(
                            "`signed`: unknown part `{name}`; use method, path, query, timestamp, body"
                        )
                    })?;
                    if parts.contains(&part) {
                        return Err(format!("`signed`: `{name}` is listed twice"));
                    }
                    parts.push(part);
                }
                parts
            }
            Some(_) => {
                return Err(
                    "`signed` must be a list, e.g. [method, path, timestamp, body]".to_string(),
                );
            }
        };
        let format = optional_str(map, "format")?.unwrap_or("{signature}");
        let separator = optional_str(map, "separator")?.unwrap_or("\n");
        let prefix = optional_str(map, "prefix")?.unwrap_or("");
        Self::new(
            header,
            algorithm,
            encoding,
            timestamp_header,
            signed,
            format,
            separator,
            prefix,
        )
    }

    /// Checks the cross-field rules; every constructor ends here.
    #[allow(clippy::too_many_arguments)]
    fn new(
        header: HeaderName,
        algorithm: HmacAlgorithm,
        encoding: SigEncoding,
        timestamp_header: Option<HeaderName>,
        signed: Vec<SignedPart>,
        format: &str,
        separator: &str,
        prefix: &str,
    ) -> Result<Self, String> {
        if signed.is_empty() {
            return Err(
                "`signed` must list at least one part: method, path, query, timestamp, body"
                    .to_string(),
            );
        }
        let signs_timestamp = signed.contains(&SignedPart::Timestamp);
        if let Some(th) = &timestamp_header {
            if *th == header {
                return Err(format!(
                    "`timestamp_header` and `header` are both `{th}`; they must differ"
                ));
            }
            if !signs_timestamp {
                return Err(
                    "`timestamp_header` is set but `timestamp` is not in `signed`: the upstream would get a timestamp the signature does not cover"
                        .to_string(),
                );
            }
        }
        check_format(format, signs_timestamp)?;
        if signs_timestamp && timestamp_header.is_none() && !format.contains("{timestamp}") {
            return Err(
                "`timestamp` is in `signed` but the upstream would never see it: set `timestamp_header`, or put `{timestamp}` in `format`"
                    .to_string(),
            );
        }
        Ok(HmacSpec {
            header,
            algorithm,
            encoding,
            timestamp_header,
            signed,
            format: format.to_string(),
            separator: separator.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// Slack's request signing, version 0 (`preset: slack_v0`): canonical string
    /// `v0:{timestamp}:{body}`, HMAC-SHA256 in hex, sent as `X-Slack-Signature: v0={hex}`
    /// with the timestamp in `X-Slack-Request-Timestamp`. The secret is the app's signing
    /// secret, used as given. <https://api.slack.com/authentication/verifying-requests-from-slack>
    pub fn slack_v0() -> Self {
        HmacSpec {
            header: HeaderName::from_static("x-slack-signature"),
            algorithm: HmacAlgorithm::Sha256,
            encoding: SigEncoding::Hex,
            timestamp_header: Some(HeaderName::from_static("x-slack-request-timestamp")),
            signed: vec![SignedPart::Timestamp, SignedPart::Body],
            format: "v0={signature}".to_string(),
            separator: ":".to_string(),
            prefix: "v0:".to_string(),
        }
    }

    /// GitHub's webhook signature (`preset: github_sha256`): HMAC-SHA256 of the body in hex,
    /// sent as `X-Hub-Signature-256: sha256={hex}`.
    /// <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>
    pub fn github_sha256() -> Self {
        HmacSpec {
            header: HeaderName::from_static("x-hub-signature-256"),
            algorithm: HmacAlgorithm::Sha256,
            encoding: SigEncoding::Hex,
            timestamp_header: None,
            signed: vec![SignedPart::Body],
            format: "sha256={signature}".to_string(),
            separator: "\n".to_string(),
            prefix: String::new(),
        }
    }

    /// The header that carries the signature.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The header that carries the timestamp, if any.
    pub fn timestamp_header(&self) -> Option<&HeaderName> {
        self.timestamp_header.as_ref()
    }

    /// The hash function.
    pub fn algorithm(&self) -> HmacAlgorithm {
        self.algorithm
    }

    /// The signature's encoding.
    pub fn encoding(&self) -> SigEncoding {
        self.encoding
    }

    /// The signed parts, in canonical order.
    pub fn signed(&self) -> &[SignedPart] {
        &self.signed
    }

    /// The signature header's template (contains `{signature}`).
    pub fn format(&self) -> &str {
        &self.format
    }

    /// Whether the body is signed, so that the proxy must buffer it before forwarding.
    pub fn signs_body(&self) -> bool {
        self.signed.contains(&SignedPart::Body)
    }

    /// The canonical string for `parts` (what the HMAC covers). For tests and diagnostics:
    /// it contains the body, so do not log it.
    pub fn canonical(&self, parts: &RequestParts<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        self.each_piece(parts, |piece| out.extend_from_slice(piece));
        out
    }

    /// Signs `parts` with `key` (the route's secret, as bytes) and returns the headers to set
    /// on the upstream request, replacing any caller-supplied copies.
    ///
    /// Fails only if the header value cannot be built, which the validation in
    /// [`HmacSpec::from_raw`] and the presets rule out.
    pub fn sign(&self, key: &[u8], parts: &RequestParts<'_>) -> Result<SignatureHeaders, String> {
        let key = hmac::Key::new(self.algorithm.aws_lc(), key);
        let mut context = hmac::Context::with_key(&key);
        self.each_piece(parts, |piece| context.update(piece));
        let tag = context.sign();
        let signature = match self.encoding {
            SigEncoding::Hex => hex(tag.as_ref()),
            SigEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        };
        let timestamp = parts.timestamp.to_string();
        let text = self
            .format
            .replace("{timestamp}", &timestamp)
            .replace("{signature}", &signature);
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            format!(
                "the `{}` value has characters not allowed in HTTP headers",
                self.header
            )
        })?;
        value.set_sensitive(true);
        Ok(SignatureHeaders {
            signature: (self.header.clone(), value),
            timestamp: self
                .timestamp_header
                .clone()
                .map(|name| (name, HeaderValue::from(parts.timestamp))),
        })
    }

    /// Feeds the canonical string to `sink`, piece by piece (the body is not copied).
    fn each_piece(&self, parts: &RequestParts<'_>, mut sink: impl FnMut(&[u8])) {
        let timestamp = parts.timestamp.to_string();
        sink(self.prefix.as_bytes());
        for (i, part) in self.signed.iter().enumerate() {
            if i > 0 {
                sink(self.separator.as_bytes());
            }
            sink(match part {
                SignedPart::Method => parts.method.as_bytes(),
                SignedPart::Path => parts.path.as_bytes(),
                SignedPart::Query => parts.query.unwrap_or("").as_bytes(),
                SignedPart::Timestamp => timestamp.as_bytes(),
                SignedPart::Body => parts.body,
            });
        }
    }
}

/// Seconds since the Unix epoch, for [`RequestParts::timestamp`] (0 before the epoch).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `format` must contain `{signature}` once, no other placeholder (`{timestamp}` only when
/// the timestamp is signed), and only printable ASCII, so the header value is always valid.
fn check_format(format: &str, signs_timestamp: bool) -> Result<(), String> {
    if format.matches("{signature}").count() != 1 {
        return Err(
            "`format` must contain `{signature}` exactly once, e.g. \"v1={signature}\"".to_string(),
        );
    }
    let rest = format.replace("{signature}", "").replace("{timestamp}", "");
    if rest.contains(['{', '}']) {
        return Err(
            "`format` may only use the placeholders `{signature}` and `{timestamp}`".to_string(),
        );
    }
    if format.contains("{timestamp}") && !signs_timestamp {
        return Err("`format` uses `{timestamp}` but `timestamp` is not in `signed`".to_string());
    }
    if !format.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err("`format` may only contain printable ASCII characters and spaces".to_string());
    }
    Ok(())
}

/// Headers that describe a connection or the framing of a message: they cannot carry a
/// signature.
fn is_framing_header(name: &HeaderName) -> bool {
    crate::headers::is_hop_by_hop_or_framing(name)
}

/// An optional header-name field.
fn header_name_field(map: &Map<String, Value>, key: &str) -> Result<Option<HeaderName>, String> {
    let Some(text) = optional_str(map, key)? else {
        return Ok(None);
    };
    let name = HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("`{key}`: `{text}` is not a valid HTTP header name"))?;
    if is_framing_header(&name) {
        return Err(format!("`{key}`: `{text}` cannot carry a signature"));
    }
    Ok(Some(name))
}

fn optional_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn required_str<'a>(map: &'a Map<String, Value>, key: &str, hint: &str) -> Result<&'a str, String> {
    optional_str(map, key)?.ok_or_else(|| format!("`{key}` is required: {hint}"))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

// ------------------------------------------------------------------------------------------
// AWS SigV4

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

impl AwsSigV4Spec {
    /// A spec for `service` (its signing name, e.g. `execute-api`, `s3`, `es`) in `region`
    /// (e.g. `eu-west-1`). Both are lowercase letters, digits and `-`.
    pub fn new(service: &str, region: &str) -> Result<Self, String> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !ok(service) {
            return Err(format!(
                "`service`: `{service}` is not an AWS signing name (lowercase letters, digits and `-`, e.g. execute-api, s3)"
            ));
        }
        if !ok(region) {
            return Err(format!(
                "`region`: `{region}` is not an AWS region (lowercase letters, digits and `-`, e.g. eu-west-1)"
            ));
        }
        Ok(AwsSigV4Spec {
            service: service.to_string(),
            region: region.to_string(),
            content_sha256_header: is_s3(service),
        })
    }

    /// Parses the `inject.aws_sigv4` mapping `{ service, region }` (the YAML value as JSON);
    /// unknown keys are errors.
    pub fn from_raw(raw: &Value) -> Result<Self, String> {
        let map = raw.as_object().ok_or_else(|| {
            "`aws_sigv4` must be a mapping, e.g. { service: execute-api, region: eu-west-1 }"
                .to_string()
        })?;
        if let Some(key) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "service" | "region"))
        {
            return Err(format!(
                "unknown field `{key}` in `aws_sigv4`; expected service and region"
            ));
        }
        let service = required_str(map, "service", "the AWS signing name, e.g. execute-api")?;
        let region = required_str(map, "region", "the AWS region, e.g. eu-west-1")?;
        Self::new(service, region)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn header<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    // ---------------------------------------------------------------- HMAC: vendor vectors

    // Slack's documented example, "Verifying requests from Slack":
    // https://api.slack.com/authentication/verifying-requests-from-slack
    // (now https://docs.slack.dev/authentication/verifying-requests-from-slack).
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TIMESTAMP: u64 = 1531420618;
    const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIGNATURE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn slack_parts() -> RequestParts<'static> {
        RequestParts {
            method: "POST",
            path: "/api/commands",
            query: None,
            timestamp: SLACK_TIMESTAMP,
            body: SLACK_BODY.as_bytes(),
        }
    }

    #[test]
    fn slack_v0_matches_slacks_published_example() {
        let spec = HmacSpec::slack_v0();
        let parts = slack_parts();
        let canonical = spec.canonical(&parts);
        assert_eq!(
            canonical,
            format!("v0:{SLACK_TIMESTAMP}:{SLACK_BODY}").into_bytes()
        );
        let out = spec.sign(SLACK_SECRET.as_bytes(), &parts).unwrap();
        assert_eq!(out.signature.0, "x-slack-signature");
        assert_eq!(out.signature.1, SLACK_SIGNATURE);
        assert!(out.signature.1.is_sensitive());
        let (name, value) = out.timestamp.clone().unwrap();
        assert_eq!(name, "x-slack-request-timestamp");
        assert_eq!(value, "1531420618");
        assert_eq!(out.into_vec().len(), 2);
    }

    #[test]
    fn slack_v0_preset_from_config_is_the_same_scheme() {
        let spec = HmacSpec::from_raw(&json!({ "preset": "slack_v0" })).unwrap();
        assert_eq!(spec, HmacSpec::slack_v0());
        assert!(spec.signs_body());
        // Spelled out with the generic fields, the scheme is the same too.
        let spelled = HmacSpec::from_raw(&json!({
            "header": "X-Slack-Signature",
            "algorithm": "sha256",
            "encoding": "hex",
            "timestamp_header": "X-Slack-Request-Timestamp",
            "signed": ["timestamp", "body"],
            "prefix": "v0:",
            "separator": ":",
            "format": "v0={signature}",
        }))
        .unwrap();
        assert_eq!(spelled, HmacSpec::slack_v0());
    }

    // GitHub's documented test values, "Validating webhook deliveries" > "Testing the webhook
    // payload validation":
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    #[test]
    fn github_sha256_matches_githubs_published_example() {
        let spec = HmacSpec::from_raw(&json!({ "preset": "github_sha256" })).unwrap();
        assert_eq!(spec, HmacSpec::github_sha256());
        let parts = RequestParts {
            method: "POST",
            path: "/hook",
            query: Some("a=1"),
            timestamp: 1,
            body: b"Hello, World!",
        };
        let out = spec
            .sign(b"It's a Secret to Everybody", &parts)
            .unwrap()
            .into_vec();
        assert_eq!(
            out,
            vec![(
                HeaderName::from_static("x-hub-signature-256"),
                HeaderValue::from_static(
                    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                )
            )]
        );
    }

    // ------------------------------------------------------ HMAC: the generic scheme

    fn generic(signed: Value, algorithm: &str, encoding: &str) -> HmacSpec {
        HmacSpec::from_raw(&json!({
            "header": "X-Signature",
            "algorithm": algorithm,
            "encoding": encoding,
            "signed": signed,
        }))
        .unwrap()
    }

    // RFC 4231 test case 2 (key "Jefe"), https://www.rfc-editor.org/rfc/rfc4231#section-4.3:
    // pins the algorithm and encoding switches to the primitive's published outputs.
    #[test]
    fn algorithms_and_encodings_match_rfc_4231() {
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: None,
            timestamp: 0,
            body: b"what do ya want for nothing?",
        };
        let cases = [
            (
                "sha256",
                "hex",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                "sha512",
                "hex",
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
            // The same SHA-256 digest in base64.
            (
                "sha256",
                "base64",
                "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=",
            ),
        ];
        for (algorithm, encoding, expected) in cases {
            let spec = generic(json!(["body"]), algorithm, encoding);
            let out = spec.sign(b"Jefe", &parts).unwrap();
            assert_eq!(out.signature.0, "x-signature");
            assert_eq!(out.signature.1, expected, "{algorithm}/{encoding}");
            assert!(out.timestamp.is_none());
        }
    }

    // Expected values below were computed independently with
    // `printf '...' | openssl dgst -sha256 -hmac test-key` (and -sha512 -binary | base64).
    #[test]
    fn canonical_string_is_the_listed_parts_joined_by_newlines_in_order() {
        let spec = HmacSpec::from_raw(&json!({
            "header": "X-Signature",
            "algorithm": "sha256",
            "encoding": "hex",
            "timestamp_header": "X-Timestamp",
            "signed": ["method", "path", "query", "timestamp", "body"],
        }))
        .unwrap();
        let parts = RequestParts {
            method: "POST",
            path: "/v1/charges",
            query: Some("amount=5&currency=eur"),
            timestamp: 1_700_000_000,
            body: br#"{"x":1}"#,
        };
        assert_eq!(
            spec.canonical(&parts),
            b"POST\n/v1/charges\namount=5&currency=eur\n1700000000\n{\"x\":1}".to_vec()
        );
        let out = spec.sign(b"test-key", &parts).unwrap().into_vec();
        assert_eq!(
            header(&out, "x-signature"),
            Some("7e7c9c190a80f53d7791710cec9a4f8d0eace44809e481687af3d71bb113f6df")
        );
        assert_eq!(header(&out, "x-timestamp"), Some("1700000000"));

        // Listed order is canonical order; an absent query is an empty part.
        let spec = HmacSpec::from_raw(&json!({
            "header": "X-Signature",
            "algorithm": "sha512",
            "encoding": "base64",
            "timestamp_header": "X-Timestamp",
            "signed": ["method", "path", "query", "timestamp"],
        }))
        .unwrap();
        let parts = RequestParts {
            method: "GET",
            query: None,
            body: b"ignored",
            ..parts
        };
        assert_eq!(
            spec.canonical(&parts),
            b"GET\n/v1/charges\n\n1700000000".to_vec()
        );
        assert!(!spec.signs_body());
        let out = spec.sign(b"test-key", &parts).unwrap();
        assert_eq!(
            out.signature.1,
            "4vBEkec9s2AA9h+VP4rRLvwuTb5BfaXf996JD4geTdKFUJu/Q+aCDr5i/U6AllPdE2sekhu6vDbyFvDJCLwjgA=="
        );

        let reordered = generic(json!(["body", "method"]), "sha256", "hex");
        assert_eq!(reordered.canonical(&parts), b"ignored\nGET".to_vec());
    }

    #[test]
    fn format_separator_and_timestamp_placeholder() {
        // A Stripe-style header: `t={timestamp},v1={signature}` over `{timestamp}.{body}`.
        let spec = HmacSpec::from_raw(&json!({
            "header": "X-Webhook-Signature",
            "algorithm": "sha256",
            "encoding": "hex",
            "signed": ["timestamp", "body"],
            "separator": ".",
            "format": "t={timestamp},v1={signature}",
        }))
        .unwrap();
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: None,
            timestamp: 1_700_000_000,
            body: br#"{"x":1}"#,
        };
        assert_eq!(spec.canonical(&parts), br#"1700000000.{"x":1}"#.to_vec());
        let out = spec.sign(b"test-key", &parts).unwrap();
        assert_eq!(
            out.signature.1,
            "t=1700000000,v1=4f9845a3f85267f8a3dd80953ed2983d355374420e415529a94ad4331b220607"
        );
        assert!(out.timestamp.is_none());
    }

    #[test]
    fn the_key_changes_the_signature_and_is_nowhere_in_the_output() {
        let spec = HmacSpec::github_sha256();
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: None,
            timestamp: 0,
            body: b"payload",
        };
        let a = spec.sign(b"key-one-SENTINEL", &parts).unwrap();
        let b = spec.sign(b"key-two-SENTINEL", &parts).unwrap();
        assert_ne!(a.signature.1, b.signature.1);
        let printed = format!("{spec:?} {a:?} {parts:?}");
        assert!(!printed.contains("SENTINEL"));
        // RequestParts' Debug shows the body's length, not the body.
        assert!(!format!("{parts:?}").contains("payload"));
        assert!(format!("{parts:?}").contains("body_len: 7"));
    }

    #[test]
    fn hmac_config_errors_name_the_problem() {
        let base = json!({
            "header": "X-Signature", "algorithm": "sha256", "encoding": "hex", "signed": ["body"],
        });
        let with = |patch: Value| {
            let mut v = base.clone();
            for (k, val) in patch.as_object().unwrap() {
                if val.is_null() {
                    v.as_object_mut().unwrap().remove(k);
                } else {
                    v[k] = val.clone();
                }
            }
            HmacSpec::from_raw(&v).unwrap_err()
        };
        let cases: Vec<(String, &str)> = vec![
            (
                HmacSpec::from_raw(&json!("sha256")).unwrap_err(),
                "must be a mapping",
            ),
            (
                with(json!({"algoritm": "sha256"})),
                "unknown field `algoritm`",
            ),
            (with(json!({"header": null})), "`header` is required"),
            (
                with(json!({"header": "bad header"})),
                "not a valid HTTP header name",
            ),
            (
                with(json!({"header": "Content-Length"})),
                "cannot carry a signature",
            ),
            (with(json!({"header": 5})), "`header` must be a string"),
            (with(json!({"algorithm": null})), "`algorithm` is required"),
            (with(json!({"algorithm": "md5"})), "use sha256 or sha512"),
            (with(json!({"encoding": "base32"})), "use hex or base64"),
            (with(json!({"signed": null})), "`signed` is required"),
            (with(json!({"signed": []})), "at least one part"),
            (with(json!({"signed": "body"})), "must be a list"),
            (
                with(json!({"signed": ["body", "headers"]})),
                "unknown part `headers`",
            ),
            (
                with(json!({"signed": ["body", 1]})),
                "entries must be strings",
            ),
            (with(json!({"signed": ["body", "body"]})), "listed twice"),
            (
                with(json!({"signed": ["timestamp", "body"]})),
                "the upstream would never see it",
            ),
            (
                with(json!({"timestamp_header": "X-Timestamp"})),
                "`timestamp` is not in `signed`",
            ),
            (
                with(json!({"timestamp_header": "x-signature", "signed": ["timestamp"]})),
                "must differ",
            ),
            (
                with(json!({"format": "v1=sig"})),
                "`{signature}` exactly once",
            ),
            (
                with(json!({"format": "{signature},{signature}"})),
                "`{signature}` exactly once",
            ),
            (
                with(json!({"format": "{signature} {nonce}"})),
                "only use the placeholders",
            ),
            (
                with(json!({"format": "t={timestamp},{signature}"})),
                "`format` uses `{timestamp}`",
            ),
            (
                with(json!({"format": "v1={signature}\n"})),
                "printable ASCII",
            ),
            (
                with(json!({"separator": 1})),
                "`separator` must be a string",
            ),
            (
                HmacSpec::from_raw(&json!({"preset": "slack_v0", "header": "X-Sig"})).unwrap_err(),
                "`preset` stands alone: remove `header`",
            ),
            (
                HmacSpec::from_raw(&json!({"preset": "stripe"})).unwrap_err(),
                "unknown preset `stripe`",
            ),
            (
                HmacSpec::from_raw(&json!({"preset": true})).unwrap_err(),
                "`preset` must be a string",
            ),
        ];
        for (message, expected) in cases {
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn unix_seconds_truncates_and_clamps() {
        assert_eq!(
            unix_seconds(UNIX_EPOCH + Duration::from_millis(1_531_420_618_999)),
            1_531_420_618
        );
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }

    // ------------------------------------------------------------------- SigV4 vectors
    //
    // AWS's SigV4 test suite: region us-east-1, service `service`, access key AKIDEXAMPLE,
    // secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, time 2015-08-30T12:36:00Z.
    // Published by AWS as aws-sig-v4-test-suite (linked from the "Signature Version 4 test
    // suite" page of the AWS General Reference), and kept up to date in the CRT's copy,
    // https://github.com/awslabs/aws-c-auth/tree/v0.9.0/tests/aws-signing-test-suite/v4,
    // which the aws-sigv4 crate vendors as aws-signing-test-suite/v4/<case>/.

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SCOPE: &str =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

    fn vector_time() -> SystemTime {
        // 2015-08-30T12:36:00Z
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: AKID.to_string(),
            secret_access_key: SecretString::from(SECRET),
            session_token: token.map(SecretString::from),
        }
    }

    fn suite_spec() -> AwsSigV4Spec {
        AwsSigV4Spec::new("service", "us-east-1").unwrap()
    }

    fn sign_vector(
        spec: &AwsSigV4Spec,
        credentials: &AwsCredentials,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        payload: SigV4Payload<'_>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let url = url::Url::parse(url).unwrap();
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let request = SigV4Request {
            method,
            url: &url,
            headers: &map,
            payload,
        };
        sigv4_sign(spec, credentials, &request, vector_time()).unwrap()
    }

    fn names(headers: &[(HeaderName, HeaderValue)]) -> Vec<&str> {
        let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names
    }

    // get-vanilla (both suites).
    #[test]
    fn sigv4_get_vanilla() {
        let out = sign_vector(
            &suite_spec(),
            &creds(None),
            "GET",
            "https://example.amazonaws.com/",
            &[],
            SigV4Payload::Bytes(b""),
        );
        assert_eq!(names(&out), ["authorization", "x-amz-date"]);
        assert_eq!(header(&out, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            header(&out, "authorization").unwrap(),
            format!(
                "{SCOPE}, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        assert!(
            out.iter()
                .find(|(n, _)| n == "authorization")
                .unwrap()
                .1
                .is_sensitive()
        );
    }

    // get-vanilla-query-order-key-case: the signer sorts the query.
    #[test]
    fn sigv4_get_vanilla_query_order_key_case() {
        let out = sign_vector(
            &suite_spec(),
            &creds(None),
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            &[],
            SigV4Payload::Bytes(b""),
        );
        assert_eq!(
            header(&out, "authorization").unwrap(),
            format!(
                "{SCOPE}, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
    }

    // post-x-www-form-urlencoded, as in AWS's original suite (content-type signed, body
    // hashed into the canonical request, no x-amz-content-sha256 header).
    #[test]
    fn sigv4_post_x_www_form_urlencoded() {
        for payload in [
            SigV4Payload::Bytes(b"Param1=value1"),
            SigV4Payload::Sha256Hex(
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
        ] {
            let out = sign_vector(
                &suite_spec(),
                &creds(None),
                "POST",
                "https://example.amazonaws.com/",
                &[("content-type", "application/x-www-form-urlencoded")],
                payload,
            );
            assert_eq!(names(&out), ["authorization", "x-amz-date"]);
            assert_eq!(
                header(&out, "authorization").unwrap(),
                format!(
                    "{SCOPE}, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
                )
            );
        }
    }

    // post-x-www-form-urlencoded as in the CRT suite (aws-c-auth v0.9.0, vendored by
    // aws-sigv4 1.6.4): `sign_body` adds x-amz-content-sha256, and content-length is signed.
    #[test]
    fn sigv4_post_x_www_form_urlencoded_with_content_sha256() {
        let out = sign_vector(
            &suite_spec().with_content_sha256_header(true),
            &creds(None),
            "POST",
            "https://example.amazonaws.com/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "13"),
            ],
            SigV4Payload::Bytes(b"Param1=value1"),
        );
        assert_eq!(
            names(&out),
            ["authorization", "x-amz-content-sha256", "x-amz-date"]
        );
        assert_eq!(
            header(&out, "x-amz-content-sha256"),
            Some("9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e")
        );
        assert_eq!(
            header(&out, "authorization").unwrap(),
            format!(
                "{SCOPE}, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"
            )
        );
    }

    // get-vanilla-with-session-token (CRT suite): the token is signed and sent.
    #[test]
    fn sigv4_get_vanilla_with_session_token() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let out = sign_vector(
            &suite_spec(),
            &creds(Some(token)),
            "GET",
            "https://example.amazonaws.com/",
            &[],
            SigV4Payload::Bytes(b""),
        );
        assert_eq!(
            names(&out),
            ["authorization", "x-amz-date", "x-amz-security-token"]
        );
        assert_eq!(header(&out, "x-amz-security-token"), Some(token));
        assert!(
            out.iter()
                .find(|(n, _)| n == "x-amz-security-token")
                .unwrap()
                .1
                .is_sensitive()
        );
        assert_eq!(
            header(&out, "authorization").unwrap(),
            format!(
                "{SCOPE}, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
            )
        );
    }

    // Headers a hop may add or change are not signed, and caller copies of the headers the
    // signer produces are ignored: get-vanilla still comes out.
    #[test]
    fn sigv4_signs_only_stable_headers() {
        let out = sign_vector(
            &suite_spec(),
            &creds(None),
            "GET",
            "https://example.amazonaws.com/#fragment",
            &[
                ("user-agent", "pipeline/1.0"),
                ("accept", "*/*"),
                ("accept-encoding", "gzip"),
                ("x-amz-date", "19990101T000000Z"),
                ("x-amz-security-token", "forged"),
                ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
                ("authorization", "Bearer caller"),
            ],
            SigV4Payload::Bytes(b""),
        );
        assert_eq!(names(&out), ["authorization", "x-amz-date"]);
        assert_eq!(
            header(&out, "authorization").unwrap(),
            format!(
                "{SCOPE}, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        // An x-amz-* header the caller sends is signed.
        let out = sign_vector(
            &suite_spec(),
            &creds(None),
            "GET",
            "https://example.amazonaws.com/",
            &[("x-amz-target", "DynamoDB_20120810.ListTables")],
            SigV4Payload::Bytes(b""),
        );
        assert!(
            header(&out, "authorization")
                .unwrap()
                .contains("SignedHeaders=host;x-amz-date;x-amz-target,")
        );
    }

    #[test]
    fn sigv4_s3_sends_the_payload_hash() {
        let spec = AwsSigV4Spec::new("s3", "us-east-1").unwrap();
        let out = sign_vector(
            &spec,
            &creds(None),
            "PUT",
            "https://bucket.s3.amazonaws.com/a%20b/c.txt",
            &[],
            SigV4Payload::Unsigned,
        );
        assert_eq!(
            header(&out, "x-amz-content-sha256"),
            Some("UNSIGNED-PAYLOAD")
        );
        assert!(header(&out, "authorization").unwrap().contains(
            "/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
        ));
        let out = sign_vector(
            &spec.with_content_sha256_header(false),
            &creds(None),
            "GET",
            "https://bucket.s3.amazonaws.com/",
            &[],
            SigV4Payload::Bytes(b""),
        );
        assert_eq!(header(&out, "x-amz-content-sha256"), None);
    }

    #[test]
    fn sigv4_request_errors() {
        let spec = suite_spec();
        let credentials = creds(None);
        let headers = HeaderMap::new();
        let sign_url = |url: &str, payload: SigV4Payload<'_>, headers: &HeaderMap| {
            let url = url::Url::parse(url).unwrap();
            let request = SigV4Request {
                method: "GET",
                url: &url,
                headers,
                payload,
            };
            sigv4_sign(&spec, &credentials, &request, vector_time()).unwrap_err()
        };
        let e = sign_url("ftp://example.com/", SigV4Payload::Unsigned, &headers);
        assert!(e.contains("http(s) URL"), "{e}");
        let e = sign_url("https://u:p@example.com/", SigV4Payload::Unsigned, &headers);
        assert!(e.contains("user information"), "{e}");
        let e = sign_url(
            "https://example.com/",
            SigV4Payload::Sha256Hex("ABC"),
            &headers,
        );
        assert!(e.contains("64 lowercase hex"), "{e}");
        let mut odd = HeaderMap::new();
        odd.insert(
            "x-amz-meta-name",
            HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        );
        let e = sign_url("https://example.com/", SigV4Payload::Unsigned, &odd);
        assert!(e.contains("`x-amz-meta-name`") && !e.contains("caf"), "{e}");
        for e in [
            sign_url(
                "https://example.com/",
                SigV4Payload::Sha256Hex("x"),
                &headers,
            ),
            sign_url("https://u:p@example.com/", SigV4Payload::Unsigned, &headers),
        ] {
            assert!(!e.contains(SECRET));
        }
    }

    #[test]
    fn sigv4_spec_from_config() {
        let spec =
            AwsSigV4Spec::from_raw(&json!({"service": "execute-api", "region": "eu-west-1"}))
                .unwrap();
        assert_eq!(
            (spec.service(), spec.region()),
            ("execute-api", "eu-west-1")
        );
        assert!(!spec.content_sha256_header);
        assert!(
            AwsSigV4Spec::from_raw(&json!({"service": "s3", "region": "eu-west-1"}))
                .unwrap()
                .content_sha256_header
        );
        let cases = [
            (json!([]), "must be a mapping"),
            (json!({"service": "s3"}), "`region` is required"),
            (json!({"region": "eu-west-1"}), "`service` is required"),
            (
                json!({"service": "s3", "region": "eu-west-1", "profile": "x"}),
                "unknown field `profile`",
            ),
            (
                json!({"service": "S3", "region": "eu-west-1"}),
                "`service`: `S3`",
            ),
            (
                json!({"service": "s3", "region": "eu west 1"}),
                "`region`: `eu west 1`",
            ),
            (json!({"service": "", "region": "eu-west-1"}), "`service`"),
            (
                json!({"service": 3, "region": "eu-west-1"}),
                "`service` must be a string",
            ),
        ];
        for (raw, expected) in cases {
            let e = AwsSigV4Spec::from_raw(&raw).unwrap_err();
            assert!(e.contains(expected), "{e:?} should contain {expected:?}");
        }
    }

    // ----------------------------------------------------------- SigV4 credentials payload

    #[test]
    fn aws_credentials_parse() {
        let c = AwsCredentials::from_json(
            br#"{"access_key_id": "AKIDEXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}"#,
        )
        .unwrap();
        assert_eq!(c.access_key_id, AKID);
        assert_eq!(c.secret_access_key.expose_secret(), SECRET);
        assert!(c.session_token.is_none());
        let c = AwsCredentials::from_json(
            b"{\"access_key_id\": \"ASIAEXAMPLE\", \"secret_access_key\": \"s\", \"session_token\": \"tok\"}\n",
        )
        .unwrap();
        assert_eq!(c.session_token.unwrap().expose_secret(), "tok");
    }

    #[test]
    fn aws_credentials_debug_shows_no_secret() {
        let c = creds(Some("TOKEN-SENTINEL"));
        let printed = format!("{c:?}");
        assert!(printed.contains(AKID));
        assert!(!printed.contains(SECRET));
        assert!(!printed.contains("TOKEN-SENTINEL"));
    }

    #[test]
    fn aws_credentials_errors_name_fields_not_values() {
        let cases: [(&[u8], &str); 10] = [
            (
                br#"{"access_key_id": "AKID-SENTINEL"}"#,
                "no `secret_access_key`",
            ),
            (
                br#"{"secret_access_key": "SECRET-SENTINEL"}"#,
                "no `access_key_id`",
            ),
            (
                br#"{"access_key_id": "AKID-SENTINEL", "secret_access_key": ""}"#,
                "`secret_access_key` is empty",
            ),
            (
                br#"{"access_key_id": "AKID-SENTINEL", "secret_access_key": 7}"#,
                "`secret_access_key` must be a string",
            ),
            (
                br#"{"access_key_id": "AKID-SENTINEL", "secret_access_key": "SECRET-SENTINEL\n"}"#,
                "`secret_access_key` has characters",
            ),
            (
                br#"{"access_key_id": "AKID-SENTINEL", "secret_access_key": "SECRET-SENTINEL", "session_token": ["TOKEN-SENTINEL"]}"#,
                "`session_token` must be a string",
            ),
            (
                br#"{"access_key_id": "AKID-SENTINEL", "secret_access_key": "SECRET-SENTINEL", "sesion_token": "TOKEN-SENTINEL"}"#,
                "unknown field `sesion_token`",
            ),
            (
                br#"{"access_key_id": "AKID-SENTINEL", "secret_access_key": "SECRET-SENTINEL"#,
                "not valid JSON (line 1, column",
            ),
            (b"SECRET-SENTINEL", "not valid JSON"),
            (br#"["SECRET-SENTINEL"]"#, "must be a JSON object"),
        ];
        for (payload, expected) in cases {
            let e = AwsCredentials::from_json(payload).unwrap_err();
            assert!(e.contains(expected), "{e:?} should contain {expected:?}");
            assert!(!e.contains("SENTINEL"), "{e:?} leaks a value");
        }
    }
}
