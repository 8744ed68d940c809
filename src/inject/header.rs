//! `inject.header` and `inject.basic`: the secret in a header of every upstream request.
//!
//! - `header: { name, format }` sets `name` to `format` with `{secret}` replaced (default
//!   format `{secret}`), e.g. `Authorization: Bearer {secret}` or `X-Api-Key: {secret}`.
//! - `basic: { username }` sets `Authorization: Basic base64(username:secret)`.
//!
//! The value is built once per fetched secret ([`prepare_header`], [`prepare_basic`]) and
//! marked sensitive; the proxy inserts it last, replacing any same-named caller header
//! whatever its case ([`apply`]).

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{InjectError, Injection, Prepared, SpecProblem};

/// `inject.header` as written.
#[derive(Debug, Deserialize)]
pub struct RawHeader {
    name: String,
    format: Option<String>,
}

/// `inject.basic` as written.
#[derive(Debug, Deserialize)]
pub struct RawBasic {
    username: String,
}

/// A header name from the config, or the problem with it (`key` is its key path below
/// `inject`).
pub fn header_name(key: &str, name: &str) -> Result<HeaderName, SpecProblem> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| SpecProblem::new(key, format!("`{name}` is not a valid HTTP header name")))
}

/// Validates `inject.header`.
pub fn parse_header(raw: RawHeader) -> Result<Injection, Vec<SpecProblem>> {
    let name = header_name("header.name", &raw.name).map_err(|p| vec![p])?;
    if crate::headers::is_hop_by_hop_or_framing(&name) {
        return Err(vec![SpecProblem::new(
            "header.name",
            format!("`{}` cannot carry a credential", raw.name),
        )]);
    }
    let format = raw.format.unwrap_or_else(|| "{secret}".to_string());
    if !format.contains("{secret}") {
        return Err(vec![SpecProblem::new(
            "header.format",
            "the format must contain `{secret}`, e.g. \"Bearer {secret}\"",
        )]);
    }
    if HeaderValue::from_str(&format.replace("{secret}", "x")).is_err() {
        return Err(vec![SpecProblem::new(
            "header.format",
            "the format has characters not allowed in HTTP headers",
        )]);
    }
    Ok(Injection::Header { name, format })
}

/// Validates `inject.basic`.
pub fn parse_basic(raw: RawBasic) -> Result<Injection, Vec<SpecProblem>> {
    if raw.username.contains(':') {
        return Err(vec![SpecProblem::new(
            "basic.username",
            "a basic-auth user name cannot contain `:`",
        )]);
    }
    Ok(Injection::Basic {
        username: raw.username,
    })
}

fn sensitive(resource: &dyn Fn() -> String, text: &str) -> Result<HeaderValue, InjectError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| InjectError::NotHeaderSafe {
        resource: resource(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The header of `header: { name, format }` for secret `value`.
pub fn prepare_header(
    name: &HeaderName,
    format: &str,
    value: &str,
    resource: &dyn Fn() -> String,
) -> Result<Prepared, InjectError> {
    Ok(Prepared::Header {
        name: name.clone(),
        value: sensitive(resource, &format.replace("{secret}", value))?,
    })
}

/// The `Authorization: Basic` header for `username` and secret `value`, and the
/// `username:value` text (scrubbed from responses in all its forms, the token among them).
pub fn prepare_basic(
    username: &str,
    value: &str,
    resource: &dyn Fn() -> String,
) -> Result<(Prepared, String), InjectError> {
    let pair = format!("{username}:{value}");
    let token = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
    let header = Prepared::Header {
        name: http::header::AUTHORIZATION,
        value: sensitive(resource, &format!("Basic {token}"))?,
    };
    Ok((header, pair))
}

/// Sets the prepared header, replacing every same-named header the caller sent.
pub fn apply(name: &HeaderName, value: &HeaderValue, headers: &mut HeaderMap) {
    headers.insert(name.clone(), value.clone());
}
