//! Mutual TLS against a local TLS server: client certificates, CA bundles, failures.

use super::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
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
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
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
    let client =
        UpstreamClient::new(crate::upstream::tls_config(Some(vec![ca.der.clone()]), None).unwrap());
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
