//! `inject.query`: the secret as a query parameter of every upstream request.
//!
//! `query: { name }` appends `name=secret` (both percent-encoded) to the upstream URL. Any
//! caller parameter that some server could read as `name` (after percent- and `+`-decoding,
//! ASCII case-insensitively, `name[...]` included) is dropped first
//! ([`crate::proxy::rewrite::caller_query`]), so a caller cannot supply its own.

use secrecy::SecretString;
use serde::Deserialize;

use super::{Injection, Prepared, SpecProblem};

/// Characters percent-encoded in an injected query parameter.
pub const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `inject.query` as written.
#[derive(Debug, Deserialize)]
pub struct RawQuery {
    name: String,
}

/// Validates `inject.query`.
pub fn parse(raw: RawQuery) -> Result<Injection, Vec<SpecProblem>> {
    if raw.name.is_empty() {
        return Err(vec![SpecProblem::new(
            "query.name",
            "parameter name must not be empty",
        )]);
    }
    Ok(Injection::Query { name: raw.name })
}

/// The `name=value` pair, percent-encoded.
pub fn prepare(name: &str, value: &str) -> Prepared {
    let pair = format!(
        "{}={}",
        percent_encoding::utf8_percent_encode(name, QUERY),
        percent_encoding::utf8_percent_encode(value, QUERY)
    );
    Prepared::Query {
        name: name.to_string(),
        pair: SecretString::from(pair),
    }
}
