//! `env:NAME` secrets: read once at start from the process environment (through a passed-in
//! lookup, so tests never touch the real environment).

use secrecy::SecretString;

/// Reads variable `name`; the error says what is missing, never a value.
pub(super) fn read(
    name: &str,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<SecretString, String> {
    match lookup(name) {
        Some(value) => Ok(SecretString::from(value)),
        None => Err(format!("environment variable {name} is not set")),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    #[test]
    fn reads_a_variable_or_names_the_missing_one() {
        let lookup = |k: &str| (k == "SET").then(|| "v".to_string());
        assert_eq!(
            super::read("SET", &lookup).expect("set").expose_secret(),
            "v"
        );
        assert_eq!(
            super::read("UNSET", &lookup).expect_err("unset"),
            "environment variable UNSET is not set"
        );
    }
}
