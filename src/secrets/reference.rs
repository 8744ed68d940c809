//! [`SecretRef`]: a reference to a secret as written in the config (`env:NAME`,
//! `file:/path`, `projects/P/secrets/S/versions/V`), parsed once at load. Vocabulary only:
//! no store, no I/O.

use std::fmt;
use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
