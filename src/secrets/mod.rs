//! Credentials: where a route's secret comes from, and the prepared value injected into
//! every forwarded request.
//!
//! A route's [`Credential`] holds the current [`Resolved`] value behind an `ArcSwap`, so the
//! request path reads it with one atomic load and no lock, and a source that refreshes (Secret
//! Manager, next) swaps in a new value without touching the request path. The injected value
//! is prepared once per secret version (header value built, basic auth encoded, query pair
//! percent-encoded), not once per request.
//!
//! Secret values live in [`secrecy::SecretString`] or sensitive `HeaderValue`s; neither prints
//! its content through `Debug`, and no error here carries a value.

mod env;
mod file;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{CredentialSpec, Injection};

/// A reference to a secret, as written in the config.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`
    Env(String),
    /// `file:/path`
    File(PathBuf),
    /// `projects/P/secrets/S/versions/V`
    SecretManager {
        /// `projects/P/secrets/S`
        secret: String,
        /// `latest` or a number.
        version: String,
    },
}

impl SecretRef {
    /// Parses `env:NAME`, `file:/abs/path` or `projects/P/secrets/S/versions/V`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("env:") {
            let ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            return if ok {
                Ok(SecretRef::Env(name.to_string()))
            } else {
                Err(format!(
                    "`{text}`: an environment variable name is letters, digits and `_`"
                ))
            };
        }
        if let Some(path) = text.strip_prefix("file:") {
            return if path.starts_with('/') {
                Ok(SecretRef::File(PathBuf::from(path)))
            } else {
                Err(format!(
                    "`{text}`: a file secret needs an absolute path, e.g. file:/secrets/key"
                ))
            };
        }
        let parts: Vec<&str> = text.split('/').collect();
        if let ["projects", project, "secrets", secret, "versions", version] = parts.as_slice() {
            let id_ok = |s: &str| {
                !s.is_empty()
                    && s.len() <= 255
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            let version_ok = *version == "latest"
                || (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()));
            if id_ok(project) && id_ok(secret) && version_ok {
                return Ok(SecretRef::SecretManager {
                    secret: format!("projects/{project}/secrets/{secret}"),
                    version: version.to_string(),
                });
            }
        }
        Err(format!(
            "`{text}` is not a secret reference: use projects/PROJECT/secrets/NAME/versions/(latest|N), env:NAME or file:/path"
        ))
    }

    /// The reference without its version, as it appears in audit entries and messages.
    pub fn resource(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("env:{name}"),
            SecretRef::File(path) => format!("file:{}", path.display()),
            SecretRef::SecretManager { secret, .. } => secret.clone(),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({})", self.resource())
    }
}

/// Why a credential could not be resolved. Messages name the secret, never its value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// The source has no value (unset variable, unreadable file, missing secret).
    #[error("secret {resource} is not available: {detail}")]
    Unavailable {
        /// The reference without version.
        resource: String,
        /// What went wrong, without the value.
        detail: String,
    },
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
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prepared::Header { name, .. } => write!(f, "Header({name}: [redacted])"),
            Prepared::Query { name, .. } => write!(f, "Query({name}=[redacted])"),
        }
    }
}

/// A resolved credential version, ready to inject.
#[derive(Debug)]
pub struct Resolved {
    /// Version id from the store (`None` for `env:`/`file:`).
    pub version: Option<String>,
    /// The injected form.
    pub injection: Prepared,
    /// The value and its encoded forms, for scrubbing responses (`None` when too short).
    pub scrub: Option<Arc<crate::scrub::Needles>>,
}

/// Characters percent-encoded in an injected query parameter.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Turns a raw payload into the injected form: UTF-8, optional JSON field, then the
/// injection's format. `trim_newline` drops one trailing `\n` or `\r\n` (file secrets).
pub fn prepare(
    spec: &CredentialSpec,
    payload: &[u8],
    version: Option<String>,
) -> Result<Resolved, SecretError> {
    let resource = || spec.secret.resource();
    let text = std::str::from_utf8(payload).map_err(|_| SecretError::NotUtf8 {
        resource: resource(),
    })?;
    let field_value;
    let value: &str = match &spec.field {
        None => text,
        Some(field) => {
            let missing = || SecretError::MissingField {
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
        return Err(SecretError::Empty {
            resource: resource(),
        });
    }
    let header = |name: HeaderName, text: String| {
        let mut value = HeaderValue::from_str(&text).map_err(|_| SecretError::NotHeaderSafe {
            resource: resource(),
        })?;
        value.set_sensitive(true);
        Ok(Prepared::Header { name, value })
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
    let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.as_bytes());
    let pct = percent_encoding::utf8_percent_encode(value, QUERY).to_string();
    let mut basic_token = String::new();
    let injection = match &spec.inject {
        Injection::Header { name, format } => {
            header(name.clone(), format.replace("{secret}", value))?
        }
        Injection::Basic { username } => {
            basic_token = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{value}").as_bytes());
            header(http::header::AUTHORIZATION, format!("Basic {basic_token}"))?
        }
        Injection::Query { name } => {
            let pair = format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(name, QUERY),
                percent_encoding::utf8_percent_encode(value, QUERY)
            );
            Prepared::Query {
                name: name.clone(),
                pair: SecretString::from(pair),
            }
        }
    };
    let scrub = crate::scrub::Needles::new(&[
        value.as_bytes(),
        b64.as_bytes(),
        b64_url.as_bytes(),
        pct.as_bytes(),
        basic_token.as_bytes(),
    ])
    .map(Arc::new);
    Ok(Resolved {
        version,
        injection,
        scrub,
    })
}

/// A route's credential: its current resolved value, swapped atomically on refresh.
pub struct Credential {
    resource: String,
    current: ArcSwapOption<Resolved>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.resource)
    }
}

impl Credential {
    /// The secret reference without version, for audit entries.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The value to inject now.
    pub fn current(&self) -> Result<Arc<Resolved>, SecretError> {
        self.current
            .load_full()
            .ok_or_else(|| SecretError::Unavailable {
                resource: self.resource.clone(),
                detail: "not resolved yet".to_string(),
            })
    }

    /// Whether a value has been resolved (readiness).
    pub fn is_resolved(&self) -> bool {
        self.current.load().is_some()
    }
}

/// Resolves a route's credential once at start. `env:` and `file:` values that are missing
/// make `serve` fail before it listens (SPEC, "Precise semantics").
pub async fn resolve_at_start(
    spec: &CredentialSpec,
    env_lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Arc<Credential>, SecretError> {
    let resource = spec.secret.resource();
    let payload = match &spec.secret {
        SecretRef::Env(name) => {
            env::read(name, env_lookup).map_err(|detail| SecretError::Unavailable {
                resource: resource.clone(),
                detail,
            })?
        }
        SecretRef::File(path) => {
            file::read(path)
                .await
                .map_err(|detail| SecretError::Unavailable {
                    resource: resource.clone(),
                    detail,
                })?
        }
        SecretRef::SecretManager { .. } => {
            return Err(SecretError::Unavailable {
                resource,
                detail: "Secret Manager is not available in this version".to_string(),
            });
        }
    };
    let resolved = prepare(spec, payload.expose_secret().as_bytes(), None)?;
    Ok(Arc::new(Credential {
        resource,
        current: ArcSwapOption::from_pointee(resolved),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(secret: &str, field: Option<&str>, inject: Injection) -> CredentialSpec {
        CredentialSpec {
            secret: SecretRef::parse(secret).expect("ref"),
            field: field.map(str::to_string),
            inject,
        }
    }

    fn bearer() -> Injection {
        Injection::Header {
            name: HeaderName::from_static("authorization"),
            format: "Bearer {secret}".to_string(),
        }
    }

    #[test]
    fn parses_references() {
        assert_eq!(
            SecretRef::parse("projects/acme/secrets/stripe-key/versions/latest"),
            Ok(SecretRef::SecretManager {
                secret: "projects/acme/secrets/stripe-key".to_string(),
                version: "latest".to_string()
            })
        );
        assert_eq!(
            SecretRef::parse("env:KEY_1").map(|r| r.resource()),
            Ok("env:KEY_1".into())
        );
        assert!(SecretRef::parse("file:/run/key").is_ok());
        for bad in [
            "env:",
            "env:A-B",
            "file:relative",
            "projects/acme/secrets/x",
            "projects/acme/secrets/x/versions/abc",
            "vault:x",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prepares_header_basic_and_query() {
        let r = prepare(&spec("env:K", None, bearer()), b"s3cr3t", None).expect("ok");
        let Prepared::Header { value, .. } = &r.injection else {
            panic!("header")
        };
        assert_eq!(value.as_bytes(), b"Bearer s3cr3t");
        assert!(value.is_sensitive());

        let basic = Injection::Basic {
            username: "api".to_string(),
        };
        let r = prepare(&spec("env:K", None, basic), b"pw", None).expect("ok");
        let Prepared::Header { value, .. } = &r.injection else {
            panic!("header")
        };
        assert_eq!(value.as_bytes(), b"Basic YXBpOnB3");

        let query = Injection::Query {
            name: "api key".to_string(),
        };
        let r = prepare(&spec("env:K", None, query), b"a&b=c", None).expect("ok");
        let Prepared::Query { pair, .. } = &r.injection else {
            panic!("query")
        };
        assert_eq!(pair.expose_secret(), "api%20key=a%26b%3Dc");
    }

    #[test]
    fn extracts_a_json_field() {
        let s = spec("env:K", Some("token"), bearer());
        let r = prepare(&s, br#"{"token":"t0k","other":1}"#, None).expect("ok");
        assert!(format!("{r:?}").contains("[redacted]"));
        let err = prepare(&s, br#"{"other":"x"}"#, None).expect_err("missing");
        assert!(matches!(err, SecretError::MissingField { .. }));
        let err = prepare(&s, b"not json", None).expect_err("not json");
        assert!(!err.to_string().contains("not json"));
    }

    #[test]
    fn errors_never_contain_the_value() {
        let s = spec("env:K", None, bearer());
        let err = prepare(&s, b"line1\nline2-SECRETVALUE", None).expect_err("newline");
        assert!(matches!(err, SecretError::NotHeaderSafe { .. }));
        assert!(!err.to_string().contains("SECRETVALUE"));
        assert!(!format!("{err:?}").contains("SECRETVALUE"));
        let err = prepare(&s, &[0xff, 0xfe], None).expect_err("utf8");
        assert!(matches!(err, SecretError::NotUtf8 { .. }));
        let err = prepare(&s, b"", None).expect_err("empty");
        assert!(matches!(err, SecretError::Empty { .. }));
    }
}
