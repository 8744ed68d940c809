//! `file:/path` secrets (e.g. a Cloud Run secret volume): read once at start, with one trailing
//! newline (`\n` or `\r\n`) trimmed, since editors and `echo` add one.

use std::path::Path;

use secrecy::SecretString;

/// Reads the file; the error names the path and the I/O problem, never the content.
pub(super) async fn read(path: &Path) -> Result<SecretString, String> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not valid UTF-8", path.display()))?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    #[tokio::test]
    async fn trims_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (content, want) in [("k\n", "k"), ("k\r\n", "k"), ("k\n\n", "k\n"), ("k", "k")] {
            let path = dir.path().join("s");
            std::fs::write(&path, content).expect("write");
            assert_eq!(
                super::read(&path).await.expect("read").expose_secret(),
                want
            );
        }
    }

    #[tokio::test]
    async fn names_a_missing_file() {
        let err = super::read(std::path::Path::new("/nonexistent/secret"))
            .await
            .expect_err("missing");
        assert!(err.contains("/nonexistent/secret"), "{err}");
    }
}
