//! `inject.hmac`: an HMAC signature over parts of each request, keyed by the route's secret.
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
//!
//! The HMAC key is borrowed for one call and never stored, printed or logged.

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::hmac;
use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use secrecy::SecretSlice;

use super::{Prepared, Signable};
use serde_json::{Map, Value};

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

/// The prepared form of an HMAC route's secret: the key bytes.
pub fn prepare(value: &str) -> Prepared {
    Prepared::Hmac {
        key: SecretSlice::from(value.as_bytes().to_vec()),
    }
}

/// Signs the request as it goes upstream and sets the signature (and timestamp) headers,
/// replacing caller copies.
pub fn apply(
    spec: &HmacSpec,
    key: &[u8],
    request: Signable<'_>,
    now: SystemTime,
) -> Result<(), String> {
    let parts = RequestParts {
        method: request.method.as_str(),
        path: request.uri.path(),
        query: request.uri.query(),
        timestamp: unix_seconds(now),
        body: request.body,
    };
    for (name, value) in spec.sign(key, &parts)? {
        request.headers.insert(name, value);
    }
    Ok(())
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

pub(super) fn optional_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

pub(super) fn required_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    hint: &str,
) -> Result<&'a str, String> {
    optional_str(map, key)?.ok_or_else(|| format!("`{key}` is required: {hint}"))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests;
