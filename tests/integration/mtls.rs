//! Upstream mutual TLS: a local HTTPS upstream that requires a client certificate from a
//! test CA (rcgen); the route's certificate and key come from secrets and rotate without a
//! restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// A server config for `localhost` signed by `ca`, requiring a client certificate from
/// `ca`, offering `alpn` (nothing: no ALPN).
fn server_config(ca: &Ca, alpn: &[&[u8]]) -> rustls::ServerConfig {
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.cert_der.clone()],
            PrivatePkcs8KeyDer::from(server.key_der.clone()).into(),
        )
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// What the TLS upstream counts.
#[derive(Default)]
struct Counts {
    /// Connections whose handshake completed.
    connections: AtomicUsize,
    /// `/slow` requests started.
    slow_started: AtomicUsize,
    /// Notified when a count changes.
    changed: tokio::sync::Notify,
}

/// An HTTPS upstream requiring a client certificate from `ca`; it answers with the SHA-256
/// of the certificate it saw, on keep-alive connections. `/slow` paths answer after 1 s.
async fn tls_upstream(ca: &Ca) -> (std::net::SocketAddr, Arc<Counts>) {
    let config = server_config(ca, &[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counts = Arc::new(Counts::default());
    let started = counts.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let started = started.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                started.connections.fetch_add(1, Ordering::SeqCst);
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| sha256_hex(c))
                    .unwrap_or_default();
                // Requests without bodies, one after another on the connection.
                let mut buffered = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(at) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffered.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let request: Vec<u8> = buffered.drain(..end).collect();
                    if String::from_utf8_lossy(&request).contains("/slow") {
                        started.slow_started.fetch_add(1, Ordering::SeqCst);
                        started.changed.notify_waiters();
                        // A slow upstream is the point: the real binary, on the real clock,
                        // must drain this request on SIGTERM.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{peer}",
                        peer.len()
                    );
                    if tls.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, counts)
}

/// An HTTPS upstream that speaks only HTTP/2 (ALPN `h2`) and requires a client certificate
/// from `ca`. It answers with the protocol version, whether the injected credential
/// arrived, and the names of any request trailers.
async fn h2_upstream(ca: &Ca) -> std::net::SocketAddr {
    let config = server_config(ca, &[b"h2"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt as _;
                        let version = format!("{:?}", request.version());
                        let key_ok = request
                            .headers()
                            .get("x-key")
                            .is_some_and(|v| v.as_bytes() == SECRET.as_bytes());
                        let collected = request.into_body().collect().await?;
                        let trailers: Vec<String> = collected
                            .trailers()
                            .map(|t| t.keys().map(|k| k.to_string()).collect())
                            .unwrap_or_default();
                        let text = format!(
                            "{version} key_ok={key_ok} body={} trailers={}",
                            collected.to_bytes().len(),
                            trailers.join(",")
                        );
                        Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(text),
                        )))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
            });
        }
    });
    addr
}

struct MtlsWorld {
    w: World,
    dir: tempfile::TempDir,
    /// What the TLS upstream saw.
    counts: Arc<Counts>,
}

async fn mtls_world(ca: &Ca, client: Option<&Leaf>) -> MtlsWorld {
    let (upstream_addr, counts) = tls_upstream(ca).await;
    mtls_world_at(ca, client, upstream_addr, counts).await
}

async fn mtls_world_at(
    ca: &Ca,
    client: Option<&Leaf>,
    upstream_addr: std::net::SocketAddr,
    counts: Arc<Counts>,
) -> MtlsWorld {
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
      - callers: ["{WRITER}"]
        methods: ["POST"]
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
    let mut env = default_env();
    // Two serving threads whatever the machine, for the drain test.
    env.push(("CREDPROXY_WORKER_THREADS".to_string(), "2".to_string()));
    let mut app = TestApp::spawn_with(&config, &keys, &env, &[]).await;
    app.wait_ready().await;
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
        counts,
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

#[tokio::test]
async fn each_serving_thread_has_its_own_tls_connection_and_drains_it() {
    // Each serving thread has its own client for the route, so a request's upstream
    // connection lives on the thread serving it: a thread that has nothing left to drain
    // ends without touching another thread's request.
    let ca = Ca::new("partner test CA");
    let leaf = ca.issue(&["pipeline-client"], ExtendedKeyUsagePurpose::ClientAuth);
    let mut m = mtls_world(&ca, Some(&leaf)).await;
    let token = m.w.keys.token(READER);
    let client = || {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    };
    // Connection A (thread 0) opens an upstream connection and leaves it in the pool.
    let a = client();
    let r = a
        .get(m.w.app.url("/partner/v1/fast"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    r.text().await.expect("body");
    // Connection B (thread 1, as A's connection is still open) sends a slow request.
    let url = m.w.app.url("/partner/v1/slow");
    let slow = {
        let token = token.clone();
        let b = client();
        tokio::spawn(async move { b.get(url).bearer_auth(token).send().await })
    };
    wait_on(
        &m.counts.changed,
        Duration::from_secs(5),
        "the slow request reached the upstream",
        || m.counts.slow_started.load(Ordering::SeqCst) > 0,
    )
    .await;
    assert_eq!(
        m.counts.connections.load(Ordering::SeqCst),
        2,
        "thread 1 opened its own upstream connection instead of using thread 0's"
    );
    // Thread 0 now serves nothing, and drains at once. Kept: the binary shows no sign of
    // having seen A's connection close, so give it a moment before the SIGTERM.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    m.w.app.sigterm();
    let response = slow
        .await
        .expect("join")
        .expect("the slow request finished");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.expect("body"),
        sha256_hex(&leaf.cert_der)
    );
    assert_eq!(m.w.app.wait_exit(Duration::from_secs(9)).await, Some(0));
}

#[tokio::test]
async fn an_http2_only_upstream_is_reached_over_alpn_without_the_callers_trailers() {
    let ca = Ca::new("partner test CA");
    let leaf = ca.issue(&["pipeline-client"], ExtendedKeyUsagePurpose::ClientAuth);
    let addr = h2_upstream(&ca).await;
    let m = mtls_world_at(&ca, Some(&leaf), addr, Arc::default()).await;
    let r = m.w.app.get_as(READER, "/partner/v1/ping").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.expect("body"),
        "HTTP/2.0 key_ok=true body=0 trailers="
    );
    // A chunked body with trailers: the body goes through, the trailers do not.
    let mut tcp = tokio::net::TcpStream::connect(m.w.app.addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /partner/v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nTrailer: Authorization, X-Key\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nAuthorization: Bearer caller-chosen\r\nX-Key: caller-chosen\r\n\r\n",
        m.w.keys.token(WRITER)
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // A small answer of known length is read whole and sent with its exact length.
    let (head, body) = response.split_once("\r\n\r\n").expect("head");
    let expected = "HTTP/2.0 key_ok=true body=5 trailers=";
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", expected.len())),
        "{response}"
    );
    assert_eq!(body, expected, "{response}");
}

/// A route with an `env:` credential whose certificate, key and CA live in Secret Manager.
async fn sm_material_world(warm_on_start: bool) -> (MtlsWorld, FakeSecretManager, Leaf) {
    let ca = Ca::new("partner test CA");
    let client = ca.issue(&["pipeline-client"], ExtendedKeyUsagePurpose::ClientAuth);
    let (upstream_addr, counts) = tls_upstream(&ca).await;
    let sm = FakeSecretManager::start().await;
    sm.add_version("partner-cert", &client.cert_pem);
    sm.add_version("partner-key", &client.key_pem);
    sm.add_version("partner-ca", &ca.pem);
    let route = format!(
        r#"  partner:
    upstream: "https://localhost:{port}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    upstream_tls:
      client_certificate: "projects/acme/secrets/partner-cert/versions/latest"
      client_key: "projects/acme/secrets/partner-key/versions/latest"
      ca_bundle: "projects/acme/secrets/partner-ca/versions/latest"
    allow:
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
        "secrets:\n  warm_on_start: {warm_on_start}\n  cache_ttl_seconds: 300\n  secret_manager: {{ endpoint: \"{}\", credentials: anonymous }}\n{}",
        sm.url(),
        default_config(&jwks, &upstream, &route)
    );
    let mut app = TestApp::spawn_with(&config, &keys, &default_env(), &[]).await;
    app.wait_ready().await;
    app.forbidden.extend(
        client
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(String::from),
    );
    let m = MtlsWorld {
        w: World {
            keys,
            jwks,
            upstream,
            app,
        },
        dir: tempfile::tempdir().expect("tempdir"),
        counts,
    };
    (m, sm, client)
}

#[tokio::test]
async fn material_in_secret_manager_works_next_to_an_env_credential() {
    let (m, _sm, client) = sm_material_world(true).await;
    let r = m.w.app.get_as(READER, "/partner/v1/ping").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), sha256_hex(&client.cert_der));
}

#[tokio::test]
async fn material_is_read_on_the_first_request_without_warming() {
    let (m, sm, client) = sm_material_world(false).await;
    // Nothing read at start (the TTL is 5 minutes, so no refresher has run either).
    assert_eq!(sm.calls("partner-cert"), 0);
    let r = m.w.app.get_as(READER, "/partner/v1/ping").await;
    assert_eq!(r.status(), 200, "the first request reads the material");
    assert_eq!(r.text().await.expect("body"), sha256_hex(&client.cert_der));
    assert_eq!(sm.calls("partner-cert"), 1);
    assert_eq!(m.counts.connections.load(Ordering::SeqCst), 1);
}
