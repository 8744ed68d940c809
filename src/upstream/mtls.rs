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
mod tests {
    use super::*;

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::Mutex;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::server::WebPkiClientVerifier;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    /// A test certificate authority.
    struct Ca {
        pem: String,
        der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            Ca {
                pem: cert.pem(),
                der: cert.der().clone(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A leaf certificate and its key, PEM, plus the certificate's DER.
        fn issue(&self, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
            let mut params =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params.distinguished_name.push(
                DnType::CommonName,
                sans.first().copied().unwrap_or("client"),
            );
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![purpose];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                cert_der: cert.der().clone(),
                key_der: key.serialize_der(),
            }
        }

        fn client(&self) -> Leaf {
            self.issue(&["pipeline-client"], ExtendedKeyUsagePurpose::ClientAuth)
        }
    }

    struct Leaf {
        cert_pem: String,
        key_pem: String,
        cert_der: CertificateDer<'static>,
        key_der: Vec<u8>,
    }

    fn material(cert: &Leaf, key_pem: &str, ca_bundle: Option<&str>) -> TlsMaterial {
        TlsMaterial::new(
            cert.cert_pem.clone().into_bytes(),
            SecretSlice::from(key_pem.as_bytes().to_vec()),
            ca_bundle.map(|pem| pem.as_bytes().to_vec()),
        )
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What the test server answers: the SHA-256 of the client certificate it was shown.
    fn cert_id(der: &[u8]) -> String {
        hex(digest::digest(&digest::SHA256, der).as_ref())
    }

    /// A TLS upstream on 127.0.0.1 that requires a client certificate signed by `client_ca`.
    /// It answers every request with 200 and the SHA-256 of the client certificate, and
    /// records every handshake it refused.
    struct Upstream {
        addr: SocketAddr,
        refused: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Upstream {
        async fn start(server_ca: &Ca, client_ca: &Ca) -> Self {
            let server = server_ca.issue(
                &["localhost", "127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            roots.add(client_ca.der.clone()).unwrap();
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(
                    vec![server.cert_der.clone()],
                    PrivatePkcs8KeyDer::from(server.key_der.clone()).into(),
                )
                .unwrap();
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let refused = Arc::new(Mutex::new(Vec::new()));
            let task = tokio::spawn({
                let refused = refused.clone();
                async move {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            return;
                        };
                        tokio::spawn(serve(acceptor.clone(), tcp, refused.clone()));
                    }
                }
            });
            Upstream {
                addr,
                refused,
                task,
            }
        }

        fn url(&self) -> String {
            format!("https://127.0.0.1:{}/v1/ping", self.addr.port())
        }

        fn refused(&self) -> Vec<String> {
            self.refused.lock().unwrap().clone()
        }
    }

    async fn serve(
        acceptor: TlsAcceptor,
        tcp: tokio::net::TcpStream,
        refused: Arc<Mutex<Vec<String>>>,
    ) {
        let mut tls = match acceptor.accept(tcp).await {
            Ok(tls) => tls,
            Err(err) => {
                refused.lock().unwrap().push(err.to_string());
                return;
            }
        };
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert_id(cert))
            .unwrap_or_default();
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{peer}",
            peer.len()
        );
        let _ = tls.write_all(response.as_bytes()).await;
        let _ = tls.shutdown().await;
    }

    /// Asserts a request fails, and returns the error chain.
    /// GET `url`: the status and body text.
    async fn get(
        client: &UpstreamClient,
        url: &str,
    ) -> Result<(http::StatusCode, String), crate::upstream::Error> {
        use http_body_util::BodyExt as _;
        let mut request = http::Request::new(crate::upstream::UpstreamBody::empty());
        *request.uri_mut() = url.parse().unwrap();
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Ok((status, String::from_utf8(body.to_vec()).unwrap()))
    }

    /// Asserts a request fails, and returns the error chain.
    async fn fails(client: &UpstreamClient, url: &str) -> (crate::upstream::Error, String) {
        let err = match get(client, url).await {
            Ok((status, _)) => panic!("expected a failure, got {status}"),
            Err(err) => err,
        };
        let text = chain_of(&err);
        (err, text)
    }

    /// Every base64 line of a PEM's body, to check that no fragment of a key leaks.
    fn body_lines(pem: &str) -> Vec<&str> {
        pem.lines()
            .filter(|line| !line.starts_with("-----") && line.len() >= 16)
            .collect()
    }

    fn assert_no_key(text: &str, key_pem: &str) {
        assert!(!text.contains(key_pem), "key PEM in: {text}");
        for line in body_lines(key_pem) {
            assert!(!text.contains(line), "key fragment in: {text}");
        }
    }

    #[tokio::test]
    async fn the_configured_certificate_gets_through() {
        let ca = Ca::new("test CA");
        let upstream = Upstream::start(&ca, &ca).await;
        let client_leaf = ca.client();
        let client =
            build_client(&material(&client_leaf, &client_leaf.key_pem, Some(&ca.pem))).unwrap();
        let (status, text) = get(&client, &upstream.url()).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(text, cert_id(&client_leaf.cert_der));
        assert!(upstream.refused().is_empty(), "{:?}", upstream.refused());
    }

    #[tokio::test]
    async fn no_client_certificate_is_refused() {
        let ca = Ca::new("test CA");
        let upstream = Upstream::start(&ca, &ca).await;
        // Same trust, no identity: what the shared client does today.
        let client = UpstreamClient::new(
            crate::upstream::tls_config(Some(vec![ca.der.clone()]), None).unwrap(),
        );
        let (_, text) = fails(&client, &upstream.url()).await;
        let refused = upstream.refused();
        assert!(
            !refused.is_empty(),
            "server refused nothing; client saw {text}"
        );
        assert!(
            refused
                .iter()
                .all(|r| r.contains("peer sent no certificates")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_is_refused() {
        let ca = Ca::new("test CA");
        let other = Ca::new("another CA");
        let upstream = Upstream::start(&ca, &ca).await;
        let stranger = other.client();
        // The client trusts the server (right CA bundle) but presents a foreign certificate.
        let client = build_client(&material(&stranger, &stranger.key_pem, Some(&ca.pem))).unwrap();
        let (_, text) = fails(&client, &upstream.url()).await;
        let refused = upstream.refused();
        assert!(
            !refused.is_empty(),
            "server refused nothing; client saw {text}"
        );
        assert!(
            refused.iter().all(|r| r.contains("UnknownIssuer")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn only_the_ca_bundle_is_trusted() {
        let ca = Ca::new("test CA");
        let unrelated = Ca::new("unrelated CA");
        let upstream = Upstream::start(&ca, &ca).await;
        let client_leaf = ca.client();
        let client = build_client(&material(
            &client_leaf,
            &client_leaf.key_pem,
            Some(&unrelated.pem),
        ))
        .unwrap();
        let (err, text) = fails(&client, &upstream.url()).await;
        assert!(err.is_connect(), "{text}");
        assert!(text.contains("UnknownIssuer"), "{text}");
    }

    #[tokio::test]
    async fn a_bundle_with_both_cas_trusts_either() {
        let ca = Ca::new("test CA");
        let unrelated = Ca::new("unrelated CA");
        let upstream = Upstream::start(&ca, &ca).await;
        let client_leaf = ca.client();
        let bundle = format!("{}{}", unrelated.pem, ca.pem);
        let client =
            build_client(&material(&client_leaf, &client_leaf.key_pem, Some(&bundle))).unwrap();
        let (status, _) = get(&client, &upstream.url()).await.unwrap();
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn without_a_bundle_the_system_roots_apply() {
        // Not "trust anything": the test CA is in no system store, so the server is refused.
        let ca = Ca::new("test CA");
        let upstream = Upstream::start(&ca, &ca).await;
        let client_leaf = ca.client();
        let client = build_client(&material(&client_leaf, &client_leaf.key_pem, None)).unwrap();
        let (err, text) = fails(&client, &upstream.url()).await;
        assert!(err.is_connect(), "{text}");
        assert!(text.contains("UnknownIssuer"), "{text}");
    }

    #[tokio::test]
    async fn a_rotated_certificate_is_used_by_the_rebuilt_client() {
        let ca = Ca::new("test CA");
        let upstream = Upstream::start(&ca, &ca).await;
        let before = ca.client();
        let after = ca.client();
        let old = material(&before, &before.key_pem, Some(&ca.pem));
        let new = material(&after, &after.key_pem, Some(&ca.pem));
        assert_ne!(fingerprint(&old), fingerprint(&new));
        let old_client = build_client(&old).unwrap();
        let new_client = build_client(&new).unwrap();
        for (client, leaf) in [(&old_client, &before), (&new_client, &after)] {
            let (status, text) = get(client, &upstream.url()).await.unwrap();
            assert_eq!(status, 200);
            // The server saw exactly the certificate this client was built with.
            assert_eq!(text, cert_id(&leaf.cert_der));
        }
        assert!(upstream.refused().is_empty(), "{:?}", upstream.refused());
    }

    #[test]
    fn a_key_that_does_not_match_is_a_build_error() {
        let ca = Ca::new("test CA");
        let cert = ca.client();
        let other = ca.client();
        let err = build_client(&material(&cert, &other.key_pem, Some(&ca.pem))).unwrap_err();
        assert!(
            err.contains("client_key does not match client_certificate"),
            "{err}"
        );
        assert_no_key(&err, &other.key_pem);
        assert_no_key(&err, &cert.key_pem);
    }

    #[test]
    fn pem_errors_name_the_part_and_never_quote_the_key() {
        let ca = Ca::new("test CA");
        let leaf = ca.client();
        let key = leaf.key_pem.as_str();
        // A key whose base64 is broken in the middle.
        let mut broken_key = key.replacen('A', "*", 1);
        if broken_key == key {
            broken_key = key.replacen('M', "*", 1);
        }
        let no_end = key.lines().take(3).collect::<Vec<_>>().join("\n");
        let bad_begin = key.replacen("-----BEGIN PRIVATE KEY-----", "-----BEGIN PRIVATE KEY--", 1);
        let garbage_key =
            "-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n";
        let cases: Vec<(TlsMaterial, &str)> = vec![
            (
                material(&leaf, &broken_key, None),
                "client_key: not valid PEM",
            ),
            (material(&leaf, &no_end, None), "client_key: not valid PEM"),
            (
                material(&leaf, &bad_begin, None),
                "client_key: not valid PEM",
            ),
            (material(&leaf, "", None), "client_key: no private key"),
            (
                material(&leaf, garbage_key, None),
                "client_key: not a usable private key",
            ),
            (
                material(&leaf, &format!("{key}{key}"), None),
                "client_key: expected one private key, found 2",
            ),
            (
                material(&leaf, &format!("{key}{}", leaf.cert_pem), None),
                "client_key: unexpected PEM section",
            ),
            (
                TlsMaterial::new(
                    key.as_bytes().to_vec(),
                    SecretSlice::from(key.as_bytes().to_vec()),
                    None,
                ),
                "client_certificate: holds a private key",
            ),
            (
                TlsMaterial::new(
                    format!("{}{key}", leaf.cert_pem).into_bytes(),
                    SecretSlice::from(key.as_bytes().to_vec()),
                    None,
                ),
                "client_certificate: holds a private key",
            ),
            (
                TlsMaterial::new(
                    b"not a certificate".to_vec(),
                    SecretSlice::from(key.as_bytes().to_vec()),
                    None,
                ),
                "client_certificate: no CERTIFICATE section",
            ),
            (
                TlsMaterial::new(
                    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                    SecretSlice::from(key.as_bytes().to_vec()),
                    None,
                ),
                "client_certificate: the first certificate cannot be read",
            ),
            (
                material(&leaf, key, Some("")),
                "ca_bundle: no CERTIFICATE section",
            ),
            (
                material(&leaf, key, Some(key)),
                "ca_bundle: holds a private key",
            ),
            (
                material(
                    &leaf,
                    key,
                    Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                ),
                "ca_bundle: certificate 1 cannot be a trust anchor",
            ),
        ];
        for (material, expected) in cases {
            let err = build_client(&material).unwrap_err();
            assert!(
                err.starts_with(expected),
                "expected `{expected}…`, got `{err}`"
            );
            assert_no_key(&err, key);
            let debug = format!("{material:?}");
            assert_no_key(&debug, key);
            assert!(debug.contains("[redacted]"), "{debug}");
        }
    }

    #[test]
    fn a_chain_with_an_intermediate_and_comments_builds() {
        // openssl-style text around the sections and an extra certificate after the leaf.
        let ca = Ca::new("test CA");
        let leaf = ca.client();
        let chain = format!(
            "subject=CN = pipeline-client\n{}\nsubject=CN = test CA\n{}",
            leaf.cert_pem, ca.pem
        );
        let material = TlsMaterial::new(
            chain.into_bytes(),
            SecretSlice::from(leaf.key_pem.as_bytes().to_vec()),
            Some(ca.pem.clone().into_bytes()),
        );
        assert!(build_client(&material).is_ok());
    }

    #[test]
    fn fingerprint_follows_the_material() {
        let ca = Ca::new("test CA");
        let leaf = ca.client();
        let rotated = ca.client();
        let base = material(&leaf, &leaf.key_pem, Some(&ca.pem));
        let same = material(&leaf, &leaf.key_pem, Some(&ca.pem));
        assert_eq!(fingerprint(&base), fingerprint(&same));
        assert_eq!(fingerprint(&base), fingerprint(&base));

        // A new certificate (same key) changes it.
        let mut new_cert = material(&leaf, &leaf.key_pem, Some(&ca.pem));
        new_cert.certificate_pem = rotated.cert_pem.clone().into_bytes();
        assert_ne!(fingerprint(&base), fingerprint(&new_cert));
        // So does a new key, a new bundle, or dropping the bundle.
        let new_key = material(&leaf, &rotated.key_pem, Some(&ca.pem));
        assert_ne!(fingerprint(&base), fingerprint(&new_key));
        let new_bundle = material(&leaf, &leaf.key_pem, Some(&Ca::new("next CA").pem));
        assert_ne!(fingerprint(&base), fingerprint(&new_bundle));
        let no_bundle = material(&leaf, &leaf.key_pem, None);
        assert_ne!(fingerprint(&base), fingerprint(&no_bundle));
        let empty_bundle = material(&leaf, &leaf.key_pem, Some(""));
        assert_ne!(fingerprint(&no_bundle), fingerprint(&empty_bundle));

        // Bytes moved from one part to the next are a different material.
        let split = |cert: &[u8], key: &[u8]| {
            TlsMaterial::new(cert.to_vec(), SecretSlice::from(key.to_vec()), None)
        };
        assert_ne!(
            fingerprint(&split(b"ab", b"c")),
            fingerprint(&split(b"a", b"bc"))
        );
    }

    #[test]
    fn debug_shows_sizes_only() {
        let ca = Ca::new("test CA");
        let leaf = ca.client();
        let debug = format!("{:?}", material(&leaf, &leaf.key_pem, Some(&ca.pem)));
        assert_no_key(&debug, &leaf.key_pem);
        assert!(!debug.contains("BEGIN"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }
}
