//! Upstream mutual TLS: a local HTTPS upstream that requires a client certificate from a
//! test CA (rcgen); the route's certificate and key come from secrets and rotate without a
//! restart.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, sans[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An HTTPS upstream requiring a client certificate from `ca`; answers with the SHA-256
/// of the client certificate it was shown.
async fn tls_upstream(ca: &Ca) -> std::net::SocketAddr {
    let server = ca.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.cert_der.clone()],
            PrivatePkcs8KeyDer::from(server.key_der.clone()).into(),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| sha256_hex(c))
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
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{peer}",
                    peer.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

struct MtlsWorld {
    w: World,
    dir: tempfile::TempDir,
}

async fn mtls_world(ca: &Ca, client: Option<&Leaf>) -> MtlsWorld {
    let upstream_addr = tls_upstream(ca).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write");
    let tls_block = match client {
        Some(leaf) => {
            std::fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).expect("write");
            std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).expect("write");
            format!(
                "    upstream_tls:\n      client_certificate: \"file:{d}/cert.pem\"\n      client_key: \"file:{d}/key.pem\"\n      ca_bundle: \"file:{d}/ca.pem\"\n",
                d = dir.path().display()
            )
        }
        None => String::new(),
    };
    let route = format!(
        r#"  partner:
    upstream: "https://localhost:{port}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
{tls_block}    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
"#,
        port = upstream_addr.port()
    );
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let config = format!(
        "secrets:\n  cache_ttl_seconds: 1\n{}",
        default_config(&jwks, &upstream, &route)
    );
    let mut app = TestApp::spawn(&config, &keys).await;
    if let Some(leaf) = client {
        // No line of the private key may ever reach a log.
        app.forbidden.extend(
            leaf.key_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(String::from),
        );
    }
    MtlsWorld {
        w: World {
            keys,
            jwks,
            upstream,
            app,
        },
        dir,
    }
}

#[tokio::test]
async fn the_configured_client_certificate_is_presented() {
    let ca = Ca::new("partner test CA");
    let client = ca.issue(&["pipeline-client"], ExtendedKeyUsagePurpose::ClientAuth);
    let m = mtls_world(&ca, Some(&client)).await;
    let r = m.w.app.get_as(READER, "/partner/v1/ping").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), sha256_hex(&client.cert_der));
}

#[tokio::test]
async fn without_a_client_certificate_the_upstream_refuses_with_502() {
    let ca = Ca::new("partner test CA");
    let m = mtls_world(&ca, None).await;
    // No upstream_tls: the system roots do not trust the test CA, and no certificate is sent.
    let r = m.w.app.get_as(READER, "/partner/v1/ping").await;
    assert_eq!(r.status(), 502);
    assert_eq!(error_body(r).await["error"], "upstream_unreachable");
}

#[tokio::test]
async fn a_rotated_certificate_is_picked_up_without_restart() {
    let ca = Ca::new("partner test CA");
    let first = ca.issue(&["pipeline-client"], ExtendedKeyUsagePurpose::ClientAuth);
    let m = mtls_world(&ca, Some(&first)).await;
    let r = m.w.app.get_as(READER, "/partner/v1/ping").await;
    assert_eq!(r.text().await.expect("body"), sha256_hex(&first.cert_der));
    let second = ca.issue(&["pipeline-client"], ExtendedKeyUsagePurpose::ClientAuth);
    // Write the key first: for a moment the pair does not match; the old client stays.
    std::fs::write(m.dir.path().join("key.pem"), &second.key_pem).expect("write");
    std::fs::write(m.dir.path().join("cert.pem"), &second.cert_pem).expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let r = m.w.app.get_as(READER, "/partner/v1/ping").await;
        assert_eq!(r.status(), 200, "no request fails during the rotation");
        if r.text().await.expect("body") == sha256_hex(&second.cert_der) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
