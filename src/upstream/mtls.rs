//! Upstream mutual TLS: a route's client certificate, key and optional CA bundle, turned into
//! the [`UpstreamClient`] that route forwards through.
//!
//! A route with `upstream_tls` cannot share [`crate::upstream::upstream_client`]: the client
//! identity is part of a client's TLS configuration, fixed when the client is built. So
//! such a route gets its own client from [`build_client`], configured like the shared one
//! (no proxy from the environment, redirects passed back, the same timeouts and pool) plus:
//!
//! - the identity: the certificate chain (end-entity first) and its private key;
//! - the roots: only the certificates of `ca_bundle` when it is given (the built-in and system
//!   roots are then off), else the same system roots as the shared client.
//!
//! Everything that can be checked without a peer is checked at build, so a bad secret fails
//! when it is loaded, not on the first request: each PEM part must parse and hold what it
//! should, every CA certificate must be usable as a trust anchor, and the private key must
//! belong to the end-entity certificate (rustls compares the key's public half with the
//! certificate's `SubjectPublicKeyInfo`). Errors name the part (`client_certificate`,
//! `client_key`, `ca_bundle`) and never quote the input, so no key bytes reach an error, a log
//! or an audit entry.
//!
//! # Rotation
//!
//! The three PEMs come from secret references and rotate independently. [`fingerprint`] is a
//! SHA-256 over all three; keep it next to the route's client and build a new client only
//! when it changes. A failed build (say the certificate rotated before the key did, so the two
//! do not match yet) should leave the previous client in place until the next refresh.
//!
//! # Key hygiene
//!
//! The key is held as a [`SecretSlice`], `Debug` on [`TlsMaterial`] shows only sizes, and the
//! decoded PEM sections are zeroized on drop. rustls keeps its own parsed copy of the key
//! inside the client for as long as the client lives; that is inherent to TLS.

use std::fmt;

use aws_lc_rs::digest;
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;
use secrecy::zeroize::Zeroizing;

use crate::upstream::UpstreamClient;
use secrecy::{ExposeSecret, SecretSlice};

/// The config name of the client certificate part, used in error messages.
const CERTIFICATE: &str = "client_certificate";
/// The config name of the private key part, used in error messages.
const KEY: &str = "client_key";
/// The config name of the CA bundle part, used in error messages.
const CA_BUNDLE: &str = "ca_bundle";

/// The material of one route's upstream mutual TLS, as fetched from its three secret
/// references: PEM text, exactly as stored.
///
/// `Debug` prints the sizes of the parts, never their content.
pub struct TlsMaterial {
    /// The client certificate chain, PEM: the end-entity certificate first, then any
    /// intermediates the upstream needs to reach its trusted CA.
    pub certificate_pem: Vec<u8>,
    /// The private key of the end-entity certificate, PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1
    /// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`); encrypted keys are not supported.
    pub key_pem: SecretSlice<u8>,
    /// The CA certificates to trust for the upstream's server certificate, PEM. `Some`: only
    /// these; `None`: the system roots, like the shared upstream client.
    pub ca_bundle_pem: Option<Vec<u8>>,
}

impl TlsMaterial {
    /// Material from the three fetched secret values.
    pub fn new(
        certificate_pem: Vec<u8>,
        key_pem: SecretSlice<u8>,
        ca_bundle_pem: Option<Vec<u8>>,
    ) -> Self {
        Self {
            certificate_pem,
            key_pem,
            ca_bundle_pem,
        }
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field(
                "certificate_pem",
                &format_args!("<{} bytes>", self.certificate_pem.len()),
            )
            .field("key_pem", &format_args!("[redacted]"))
            .field(
                "ca_bundle_pem",
                &self
                    .ca_bundle_pem
                    .as_ref()
                    .map(|pem| format!("<{} bytes>", pem.len())),
            )
            .finish()
    }
}

/// Builds the upstream client for a route with mutual TLS: the shared client's settings
/// (`no_proxy`, no redirects, 10 s connect timeout, 90 s pool idle timeout, 256 idle
/// connections per host, `TCP_NODELAY`) plus `material`'s client identity and, when it has a
/// CA bundle, trust in that bundle only.
///
/// Fails, with a message that names the part and never quotes it, when a PEM part does not
/// parse or holds the wrong kind of section, when a CA certificate cannot be a trust anchor,
/// or when the key does not belong to the end-entity certificate.
pub fn build_client(material: &TlsMaterial) -> Result<UpstreamClient, String> {
    Ok(UpstreamClient::new(build_tls_config(material)?))
}

/// The TLS configuration [`build_client`] builds its client from, after the same checks;
/// clients built from clones of it present the same identity and trust the same roots.
pub fn build_tls_config(material: &TlsMaterial) -> Result<rustls::ClientConfig, String> {
    let chain = certificate_chain(&material.certificate_pem)?;
    let key = private_key(material.key_pem.expose_secret())?;
    check_key_matches(chain.clone(), key.clone_key())?;
    let roots = match &material.ca_bundle_pem {
        Some(pem) => Some(ca_bundle(pem)?),
        None => None,
    };
    crate::upstream::tls_config(roots, Some((chain, key)))
        .map_err(|err| format!("cannot build the upstream TLS client: {err}"))
}

/// A SHA-256 over the three PEM parts, to tell whether a route's material changed since its
/// client was built. Each part is length-prefixed and the bundle's absence is distinct from an
/// empty bundle, so no two different materials share an input.
///
/// A change detector, not an identifier: it covers the key, so keep it in memory and out of
/// logs.
pub fn fingerprint(material: &TlsMaterial) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"credproxy upstream_tls v1\0");
    let mut part = |bytes: &[u8]| {
        context.update(&(bytes.len() as u64).to_be_bytes());
        context.update(bytes);
    };
    part(&material.certificate_pem);
    part(material.key_pem.expose_secret());
    match &material.ca_bundle_pem {
        None => context.update(&[0]),
        Some(pem) => {
            context.update(&[1]);
            context.update(&(pem.len() as u64).to_be_bytes());
            context.update(pem);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The recognised PEM sections of `pem`, in order (sections with other labels are skipped, as
/// every PEM reader here does). Errors never quote the input.
fn sections(part: &str, pem: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, String> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{part}: not valid PEM: {}", pem_problem(&err)))
}

/// What is wrong with a PEM text, without quoting any of it (the parser's own messages can
/// include a line of the input).
fn pem_problem(err: &pem::Error) -> &'static str {
    match err {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section's base64 does not decode",
        pem::Error::SectionTooLarge => "a section is too large",
        pem::Error::NoItemsFound => "no PEM section found",
        _ => "unreadable",
    }
}

fn is_private_key(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
    )
}

/// Certificates only, at least one; a private key here is refused (it belongs in the key
/// part, and would otherwise travel wherever certificates are copied).
fn certificates(part: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for (kind, der) in sections(part, pem)? {
        match kind {
            SectionKind::Certificate => certs.push(CertificateDer::from(der)),
            kind if is_private_key(kind) => {
                return Err(format!(
                    "{part}: holds a private key; only certificates belong here (the key goes in {KEY})"
                ));
            }
            other => {
                return Err(format!(
                    "{part}: unexpected PEM section {other:?}; expected CERTIFICATE"
                ));
            }
        }
    }
    if certs.is_empty() {
        return Err(format!("{part}: no CERTIFICATE section found"));
    }
    Ok(certs)
}

fn certificate_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    certificates(CERTIFICATE, pem)
}

/// Exactly one private key and nothing else.
fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let mut key = None;
    let mut keys = 0usize;
    for (kind, der) in sections(KEY, pem)? {
        let der = Zeroizing::new(der);
        match kind {
            SectionKind::PrivateKey => key = Some(PrivatePkcs8KeyDer::from(der.to_vec()).into()),
            SectionKind::RsaPrivateKey => key = Some(PrivatePkcs1KeyDer::from(der.to_vec()).into()),
            SectionKind::EcPrivateKey => key = Some(PrivateSec1KeyDer::from(der.to_vec()).into()),
            other => {
                return Err(format!(
                    "{KEY}: unexpected PEM section {other:?}; expected one PRIVATE KEY (certificates go in {CERTIFICATE})"
                ));
            }
        }
        keys += 1;
    }
    match (key, keys) {
        (Some(key), 1) => Ok(key),
        (None, _) => Err(format!(
            "{KEY}: no private key found (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY; encrypted keys are not supported)"
        )),
        (Some(_), n) => Err(format!("{KEY}: expected one private key, found {n}")),
    }
}

/// The key must parse and belong to the end-entity certificate. rustls would also catch a
/// mismatch inside `build()`, but only as an opaque builder error; this names the problem.
fn check_key_matches(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = crate::upstream::crypto_provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|_| {
        format!("{KEY}: not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519 expected)")
    })?;
    match CertifiedKey::new(chain, signing_key).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            format!("{KEY} does not match {CERTIFICATE} (the first certificate in the chain)"),
        ),
        // The key cannot say its public half; rustls accepts that too and the handshake
        // will tell.
        Err(rustls::Error::InconsistentKeys(_)) => Ok(()),
        Err(err) => Err(format!(
            "{CERTIFICATE}: the first certificate cannot be read: {err}"
        )),
    }
}

/// CA certificates, each usable as a trust anchor.
fn ca_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = certificates(CA_BUNDLE, pem)?;
    let mut store = rustls::RootCertStore::empty();
    for (index, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|err| {
            format!(
                "{CA_BUNDLE}: certificate {} cannot be a trust anchor: {err}",
                index + 1
            )
        })?;
    }
    Ok(certs)
}

/// An error and its sources, `: `-joined.
#[cfg(test)]
fn chain_of(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
