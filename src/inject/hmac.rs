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
use serde::Deserialize;
use serde_json::Value;

use super::{Prepared, Signable, SpecProblem, keep};

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

/// `inject.hmac` as written; [`HmacSpec::validate`] checks it. Unknown keys are left to the
/// config loader, which reports each with its key path and line.
#[derive(Debug, Deserialize)]
#[serde(
    expecting = "a mapping, e.g. { header: X-Signature, algorithm: sha256, encoding: hex, signed: [body] }, or { preset: slack_v0 }"
)]
pub struct RawHmac {
    preset: Option<String>,
    header: Option<String>,
    algorithm: Option<String>,
    encoding: Option<String>,
    timestamp_header: Option<String>,
    signed: Option<Vec<String>>,
    format: Option<String>,
    separator: Option<String>,
    prefix: Option<String>,
}

/// Keys accepted in `inject.hmac` (the fields of [`RawHmac`]), for messages.
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

/// The signed parts, for messages.
const PARTS: &str = "method, path, query, timestamp, body";

impl RawHmac {
    /// The keys that are set, in [`HMAC_KEYS`] order.
    fn written(&self) -> impl Iterator<Item = &'static str> {
        [
            self.preset.is_some(),
            self.header.is_some(),
            self.algorithm.is_some(),
            self.encoding.is_some(),
            self.timestamp_header.is_some(),
            self.signed.is_some(),
            self.format.is_some(),
            self.separator.is_some(),
            self.prefix.is_some(),
        ]
        .into_iter()
        .zip(HMAC_KEYS)
        .filter_map(|(set, key)| set.then_some(*key))
    }
}

impl HmacSpec {
    /// Parses the `inject.hmac` mapping given as JSON (as a config block would be), for
    /// tests and tools: see [`HmacSpec::validate`]. Unknown keys and values of the wrong
    /// type are errors too. Every problem is in the message, joined by `; `, each naming its
    /// key, e.g. "`signed` must list at least one part".
    pub fn from_raw(raw: &Value) -> Result<Self, String> {
        super::parse_value(
            raw,
            |key| {
                SpecProblem::new(
                    key,
                    format!(
                        "unknown field `{key}` in `hmac`; expected one of: {}",
                        HMAC_KEYS.join(", ")
                    ),
                )
            },
            |key| SpecProblem::new(key, type_message(key)),
            Self::validate,
        )
        .map_err(|problems| super::joined(&problems))
    }

    /// Validates an `inject.hmac` block: either `{ preset: NAME }` alone, or `{ header,
    /// algorithm, encoding, signed, timestamp_header?, format?, separator?, prefix? }`.
    /// Reports every problem, each at its key below `hmac` (`algorithm`, `signed[1]`): a
    /// missing key, an unknown name, an empty or repeated `signed`, a signed timestamp that
    /// would not reach the upstream (at its `signed` entry), and a `format` without
    /// `{signature}`.
    pub fn validate(raw: RawHmac) -> Result<Self, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        if let Some(preset) = &raw.preset {
            for other in raw.written().filter(|key| *key != "preset") {
                problems.push(SpecProblem::new(
                    other,
                    format!(
                        "`preset` stands alone: remove `{other}`, or drop `preset` and spell the scheme out"
                    ),
                ));
            }
            let spec = keep(
                &mut problems,
                match preset.as_str() {
                    "slack_v0" => Ok(Self::slack_v0()),
                    "github_sha256" => Ok(Self::github_sha256()),
                    other => Err(SpecProblem::new(
                        "preset",
                        format!(
                            "`preset`: unknown preset `{other}`; known presets: {HMAC_PRESETS}"
                        ),
                    )),
                },
            );
            return spec.filter(|_| problems.is_empty()).ok_or(problems);
        }

        let header = keep(
            &mut problems,
            required(
                "header",
                raw.header.as_deref(),
                "the header that carries the signature",
            )
            .and_then(|text| signature_header("header", text)),
        );
        let algorithm = keep(
            &mut problems,
            required("algorithm", raw.algorithm.as_deref(), "sha256 or sha512").and_then(|text| {
                match text {
                    "sha256" => Ok(HmacAlgorithm::Sha256),
                    "sha512" => Ok(HmacAlgorithm::Sha512),
                    other => Err(SpecProblem::new(
                        "algorithm",
                        format!("`algorithm`: `{other}` is not supported; use sha256 or sha512"),
                    )),
                }
            }),
        );
        let encoding = keep(
            &mut problems,
            required("encoding", raw.encoding.as_deref(), "hex or base64").and_then(|text| {
                match text {
                    "hex" => Ok(SigEncoding::Hex),
                    "base64" => Ok(SigEncoding::Base64),
                    other => Err(SpecProblem::new(
                        "encoding",
                        format!("`encoding`: `{other}` is not supported; use hex or base64"),
                    )),
                }
            }),
        );
        let timestamp_header = raw
            .timestamp_header
            .as_deref()
            .and_then(|text| keep(&mut problems, signature_header("timestamp_header", text)));
        let signed = match &raw.signed {
            Some(names) => signed_parts(names, &mut problems),
            None => {
                problems.push(SpecProblem::new(
                    "signed",
                    format!("`signed` is required: a list of {PARTS}"),
                ));
                None
            }
        };

        // Cross-field rules, each on the key to change, and only over keys that are valid
        // (or, for the timestamp header, set): no echo of a problem already reported.
        let format = raw.format.as_deref().unwrap_or("{signature}");
        // Known when `timestamp` is listed, or when the list is valid; else a guess would
        // only echo the bad entry.
        let signs_timestamp = match (&raw.signed, &signed) {
            (Some(names), _) if names.iter().any(|name| name == "timestamp") => Some(true),
            (_, Some(_)) => Some(false),
            _ => None,
        };
        if let (Some(th), Some(h)) = (&timestamp_header, &header)
            && th == h
        {
            problems.push(SpecProblem::new(
                "timestamp_header",
                format!("`timestamp_header` and `header` are both `{th}`; they must differ"),
            ));
        }
        if raw.timestamp_header.is_some() && signs_timestamp == Some(false) {
            problems.push(SpecProblem::new(
                "timestamp_header",
                "`timestamp_header` is set but `timestamp` is not in `signed`: the upstream would get a timestamp the signature does not cover",
            ));
        }
        problems.extend(
            format_problems(format, signs_timestamp)
                .into_iter()
                .map(|message| SpecProblem::new("format", message)),
        );
        if signs_timestamp == Some(true)
            && raw.timestamp_header.is_none()
            && !format.contains("{timestamp}")
        {
            let at = raw
                .signed
                .iter()
                .flatten()
                .position(|name| name == "timestamp")
                .unwrap_or(0);
            problems.push(SpecProblem::new(
                format!("signed[{at}]"),
                "`timestamp` is in `signed` but the upstream would never see it: set `timestamp_header`, or put `{timestamp}` in `format`",
            ));
        }

        match (header, algorithm, encoding, signed) {
            (Some(header), Some(algorithm), Some(encoding), Some(signed))
                if problems.is_empty() =>
            {
                Ok(HmacSpec {
                    header,
                    algorithm,
                    encoding,
                    timestamp_header,
                    signed,
                    format: format.to_string(),
                    separator: raw.separator.unwrap_or_else(|| "\n".to_string()),
                    prefix: raw.prefix.unwrap_or_default(),
                })
            }
            _ => Err(problems),
        }
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

/// The problems of `format`: it must contain `{signature}` once, no other placeholder
/// (`{timestamp}` only when the timestamp is signed; unknown when `signed` is not valid),
/// and only printable ASCII, so the header value is always valid.
fn format_problems(format: &str, signs_timestamp: Option<bool>) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if format.matches("{signature}").count() != 1 {
        problems.push("`format` must contain `{signature}` exactly once, e.g. \"v1={signature}\"");
    }
    let rest = format.replace("{signature}", "").replace("{timestamp}", "");
    if rest.contains(['{', '}']) {
        problems.push("`format` may only use the placeholders `{signature}` and `{timestamp}`");
    }
    if format.contains("{timestamp}") && signs_timestamp == Some(false) {
        problems.push("`format` uses `{timestamp}` but `timestamp` is not in `signed`");
    }
    if !format.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        problems.push("`format` may only contain printable ASCII characters and spaces");
    }
    problems
}

/// The parts listed in `signed`, each unknown or repeated entry a problem at its index;
/// `None` when the list is empty or has such an entry.
fn signed_parts(names: &[String], problems: &mut Vec<SpecProblem>) -> Option<Vec<SignedPart>> {
    if names.is_empty() {
        problems.push(SpecProblem::new(
            "signed",
            format!("`signed` must list at least one part: {PARTS}"),
        ));
        return None;
    }
    let before = problems.len();
    let mut parts = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        match SignedPart::parse(name) {
            None => problems.push(SpecProblem::new(
                format!("signed[{i}]"),
                format!("`signed`: unknown part `{name}`; use {PARTS}"),
            )),
            Some(part) if parts.contains(&part) => problems.push(SpecProblem::new(
                format!("signed[{i}]"),
                format!("`signed`: `{name}` is listed twice"),
            )),
            Some(part) => parts.push(part),
        }
    }
    (problems.len() == before).then_some(parts)
}

/// A string key that must be set.
fn required<'a>(key: &str, value: Option<&'a str>, hint: &str) -> Result<&'a str, SpecProblem> {
    value.ok_or_else(|| SpecProblem::new(key, format!("`{key}` is required: {hint}")))
}

/// A header that is to carry a signature (or its timestamp).
fn signature_header(key: &str, text: &str) -> Result<HeaderName, SpecProblem> {
    let name = HeaderName::from_bytes(text.as_bytes()).map_err(|_| {
        SpecProblem::new(
            key,
            format!("`{key}`: `{text}` is not a valid HTTP header name"),
        )
    })?;
    if crate::headers::is_hop_by_hop_or_framing(&name) {
        return Err(SpecProblem::new(
            key,
            format!("`{key}`: `{text}` cannot carry a signature"),
        ));
    }
    Ok(name)
}

/// What a value of the wrong type at `key` (below `hmac`; empty for the block) should be.
fn type_message(key: &str) -> String {
    match key {
        // As in `RawHmac`'s `expecting`, which the config loader's type errors quote.
        "" => "`hmac` must be a mapping, e.g. { header: X-Signature, algorithm: sha256, encoding: hex, signed: [body] }, or { preset: slack_v0 }".to_string(),
        "preset" => format!("`preset` must be a string, one of: {HMAC_PRESETS}"),
        "signed" => "`signed` must be a list, e.g. [method, path, timestamp, body]".to_string(),
        key if key.starts_with("signed[") => format!("`signed` entries must be strings: {PARTS}"),
        key => format!("`{key}` must be a string"),
    }
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
