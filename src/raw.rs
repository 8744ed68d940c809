//! Deserialising a configuration value into its `Raw*` struct, the way `check` reports it.
//!
//! serde's `deny_unknown_fields` would stop at the first unknown key, so `serde_ignored`
//! collects *every* one, and `serde_path_to_error` names the key of a type error. Both give
//! key paths in the configuration's own spelling: `routes.stripe.allow[0].paths[1]`.
//!
//! The config loader runs this over the whole file; the credential kinds' `from_raw`
//! conveniences run it over one `inject:` block, so both see the same problems.

use serde::de::DeserializeOwned;

/// A value deserialised into a `Raw*` struct.
#[derive(Debug)]
pub struct Deserialized<T> {
    /// Key paths of every key no field took, in document order.
    pub unknown: Vec<String>,
    /// The struct, or the first type error.
    pub value: Result<T, TypeError>,
}

/// A value of the wrong type (a string where a list belongs, ...): where, and serde's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    /// Key path of the value; empty for the value deserialised itself.
    pub path: String,
    /// serde's message, e.g. "invalid type: integer `3`, expected a sequence".
    pub message: String,
}

/// Deserialises `value` into `T`, collecting every unknown key and naming a type error's key.
pub fn deserialize<T: DeserializeOwned>(value: serde_json::Value) -> Deserialized<T> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = {
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
        let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
        serde_path_to_error::deserialize(de)
    };
    let value = result.map_err(|err| {
        let path = err.path().to_string();
        TypeError {
            path: if path == "." { String::new() } else { path },
            message: err.into_inner().to_string(),
        }
    });
    Deserialized { unknown, value }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    match path {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        serde_ignored::Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}
