//! Edges (SPEC "Edges: what holds when callers, upstreams and the store misbehave"),
//! tried as an attacker or an unlucky caller would, against the running server.

use std::time::Duration;

use crate::harness::*;

/// A route whose upstream may take its time (the default `api` route gives up after 1 s).
fn patient_route() -> String {
    format!(
        r#"  patient:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "Authorization", format: "Bearer {{secret}}" }} }} }}
    timeout_seconds: 30
    allow:
      - callers: ["{READER}"]
        methods: ["GET", "POST"]
        paths: ["/**"]
"#
    )
}

async fn patient_world(env: &[(String, String)]) -> World {
    World::custom(&patient_route(), |c| c, env).await
}

/// Waits until the upstream has started `n` requests.
async fn upstream_started(w: &World, n: usize) {
    for _ in 0..500 {
        if w.upstream.started() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the upstream never received the request");
}

#[tokio::test]
async fn a_caller_that_disconnects_before_the_response_still_leaves_one_entry() {
    let w = patient_world(&default_env()).await;
    let request = w
        .app
        .request_as(reqwest::Method::GET, READER, "/patient/slow/5")
        .header("x-request-id", "gone-before-answer")
        .send();
    // The caller gives up once the upstream has the request (and the credential).
    tokio::select! {
        _ = request => panic!("the slow upstream answered early"),
        () = upstream_started(&w, 1) => {}
    }
    let e = w.app.audit_for("gone-before-answer").await;
    assert_eq!(e["httpRequest"]["status"], 499, "{e}");
    assert_eq!(e["reason"], "client_closed", "{e}");
    assert_eq!(e["severity"], "WARNING", "{e}");
    assert_eq!(e["decision"], "allow", "{e}");
    assert_eq!(e["caller"], READER, "{e}");
    assert_eq!(e["route"], "patient", "{e}");
    assert!(e["upstream_status"].is_null(), "{e}");
}

#[tokio::test]
async fn requests_cut_at_the_drain_deadline_are_audited_as_shutdown_before_exit() {
    let mut env = default_env();
    env.push(("CREDPROXY_DRAIN_SECONDS".to_string(), "1".to_string()));
    let mut w = patient_world(&env).await;
    let request = w
        .app
        .request_as(reqwest::Method::GET, READER, "/patient/slow/20")
        .header("x-request-id", "cut-by-the-deadline")
        .send();
    let pending = tokio::spawn(request);
    upstream_started(&w, 1).await;
    w.app.sigterm();
    assert_eq!(w.app.wait_exit(Duration::from_secs(10)).await, Some(0));
    // Everything is on stdout once the process has exited: no waiting here.
    let found: Vec<_> = w
        .app
        .audit_entries()
        .into_iter()
        .filter(|e| e["request_id"] == "cut-by-the-deadline")
        .collect();
    assert_eq!(found.len(), 1, "{}", w.app.stdout.text());
    assert_eq!(found[0]["httpRequest"]["status"], 503, "{}", found[0]);
    assert_eq!(found[0]["reason"], "shutdown", "{}", found[0]);
    pending.abort();
}

// ------------------------------------------------------------------------------------------
// The secret never handed back

/// A hostile upstream that hands the credential it received back in the form its path names,
/// in the body and in a header, and records the headers it got.
struct Reflector {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<http::HeaderMap>>>,
}

/// The secret `Authorization: Bearer {secret}` carried, in the form `form`.
fn reflected(secret: &str, form: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let pct_lower: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    match form {
        "plain" => secret.to_string(),
        "base64" => STANDARD.encode(secret),
        "base64url" => URL_SAFE_NO_PAD.encode(secret),
        "embedded0" => STANDARD.encode(format!("{secret}:tail")),
        "embedded1" => STANDARD.encode(format!("a{secret}:tail")),
        "embedded2" => URL_SAFE_NO_PAD.encode(format!("ab{secret}:tail")),
        "hex" => hex,
        "HEX" => hex.to_ascii_uppercase(),
        "pct-lower" => pct_lower,
        "json-slash" => secret.replace('/', "\\/"),
        _ => format!("unknown form {form}"),
    }
}

const FORMS: [&str; 10] = [
    "plain",
    "base64",
    "base64url",
    "embedded0",
    "embedded1",
    "embedded2",
    "hex",
    "HEX",
    "pct-lower",
    "json-slash",
];

impl Reflector {
    async fn start() -> Reflector {
        use axum::response::IntoResponse as _;
        let seen: std::sync::Arc<std::sync::Mutex<Vec<http::HeaderMap>>> = Default::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let record = record.clone();
            async move {
                let secret = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default()
                    .to_string();
                record.lock().expect("lock").push(request.headers().clone());
                let path = request.uri().path().to_string();
                let form = path.rsplit('/').next().unwrap_or_default().to_string();
                if path.starts_with("/form/") {
                    let value = reflected(&secret, &form);
                    return (
                        [("x-reflect", format!("v={value};"))],
                        format!("{{\"echo\":\"{value}\"}}"),
                    )
                        .into_response();
                }
                match form.as_str() {
                    "header-name" => {
                        let name = format!("x-{}", secret.to_ascii_lowercase());
                        let mut r = "named".into_response();
                        r.headers_mut().insert(
                            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                            http::HeaderValue::from_static("1"),
                        );
                        r
                    }
                    "range" => {
                        // Honours Range, as a file server would.
                        let body = format!("0123456789 token={secret} end");
                        match request
                            .headers()
                            .get("range")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("bytes="))
                            .and_then(|v| v.split_once('-'))
                            .and_then(|(a, b)| {
                                Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
                            }) {
                            Some((a, b)) if b < body.len() => {
                                (http::StatusCode::PARTIAL_CONTENT, body[a..=b].to_string())
                                    .into_response()
                            }
                            _ => body.into_response(),
                        }
                    }
                    "double-encoding" => {
                        let mut r = format!("gz:{secret}").into_response();
                        r.headers_mut().append(
                            "content-encoding",
                            http::HeaderValue::from_static("identity"),
                        );
                        r.headers_mut()
                            .append("content-encoding", http::HeaderValue::from_static("gzip"));
                        r
                    }
                    _ => format!("plain {secret}").into_response(),
                }
            }
        });
        let addr = spawn(app).await;
        Reflector { addr, seen }
    }
}

async fn mirror_world(upstream: &str) -> World {
    let route = format!(
        r#"  mirror:
    upstream: "{upstream}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "Authorization", format: "Bearer {{secret}}" }} }} }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
"#
    );
    World::custom(&route, |c| c, &default_env()).await
}

/// Everything the caller received: status line, headers (names and values) and body.
async fn everything(r: reqwest::Response) -> String {
    let mut text = format!("{}\n", r.status());
    for (name, value) in r.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push_str(&r.text().await.unwrap_or_default());
    text
}

/// Fails when any form of the secret is in `text`.
fn assert_no_form_of_the_secret(text: &str, context: &str) {
    for form in FORMS {
        let needle = reflected(SECRET, form);
        assert!(
            !text.contains(&needle)
                && !text
                    .to_ascii_lowercase()
                    .contains(&needle.to_ascii_lowercase()),
            "{context}: the {form} form of the secret came back:\n{text}"
        );
    }
}

#[tokio::test]
async fn no_encoding_of_the_secret_comes_back_in_headers_or_body() {
    let reflector = Reflector::start().await;
    let w = mirror_world(&format!("http://{}", reflector.addr)).await;
    for form in FORMS {
        let r = w.app.get_as(READER, &format!("/mirror/form/{form}")).await;
        assert_eq!(r.status(), 200, "{form}");
        let text = everything(r).await;
        assert!(
            text.contains("[redacted]"),
            "{form}: nothing was scrubbed:\n{text}"
        );
        assert_no_form_of_the_secret(&text, form);
    }
    // A response header named after the secret is dropped, not passed on.
    let r = w.app.get_as(READER, "/mirror/header-name").await;
    assert_eq!(r.status(), 200);
    let text = everything(r).await;
    assert_no_form_of_the_secret(&text, "header name");
}

#[tokio::test]
async fn range_requests_cannot_read_the_secret_in_slices() {
    let reflector = Reflector::start().await;
    let w = mirror_world(&format!("http://{}", reflector.addr)).await;
    // Slices shorter than the secret, walked across it.
    for start in (10..40).step_by(5) {
        let r = w
            .app
            .request_as(reqwest::Method::GET, READER, "/mirror/range")
            .header("range", format!("bytes={start}-{}", start + 5))
            .header("if-range", "\"x\"")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "the whole document, scrubbed");
        let text = everything(r).await;
        assert!(text.contains("token=[redacted] end"), "{text}");
    }
    for headers in reflector.seen.lock().expect("lock").iter() {
        assert!(headers.get("range").is_none(), "Range reached the upstream");
        assert!(
            headers.get("if-range").is_none(),
            "If-Range reached the upstream"
        );
    }
}

#[tokio::test]
async fn a_second_content_encoding_header_is_refused_like_a_compressed_body() {
    let reflector = Reflector::start().await;
    let w = mirror_world(&format!("http://{}", reflector.addr)).await;
    let r = w.app.get_as(READER, "/mirror/double-encoding").await;
    assert_eq!(r.status(), 502);
    assert_no_form_of_the_secret(&everything(r).await, "double encoding");
}

/// An upstream that answers every request with `response`, raw, then closes.
async fn raw_upstream(response: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_gzip_transfer_coding_is_refused_on_a_scrubbing_route() {
    let addr = raw_upstream(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n10\r\nsk_test_SECRET_7\r\n0\r\n\r\n",
    )
    .await;
    let w = mirror_world(&format!("http://{addr}")).await;
    let r = w.app.get_as(READER, "/mirror/anything").await;
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn client_address_headers_and_the_underscore_spelling_of_the_credential_are_dropped() {
    let route = format!(
        r#"  keyed:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Api-Key" }} }} }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
"#
    );
    let w = World::custom(&route, |c| c, &default_env()).await;
    let r = w
        .app
        .request_as(reqwest::Method::GET, READER, "/keyed/v1/items")
        .header("True-Client-IP", "6.6.6.6")
        .header("X-Client-IP", "6.6.6.6")
        .header("CF-Connecting-IP", "6.6.6.6")
        .header("Fastly-Client-IP", "6.6.6.6")
        .header("X-Cluster-Client-IP", "6.6.6.6")
        .header("X-Original-URI", "/admin")
        // Read as `X-Api-Key` by servers that map `_` to `-` (CGI, PHP, some nginx setups).
        .header("X_Api_Key", "attacker-chosen")
        .header("x-api_key", "attacker-chosen")
        .header("X_Trace_Tag", "kept")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen = w.upstream.last().headers;
    for name in [
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-original-uri",
        "x_api_key",
        "x-api_key",
    ] {
        assert!(seen.get(name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(seen["x-api-key"], SECRET);
    // Other underscored names pass: only the credential's spelling is dropped.
    assert_eq!(seen["x_trace_tag"], "kept");
}

// ------------------------------------------------------------------------------------------
// Audit lines sized by credproxy, not by the caller

#[tokio::test]
async fn audit_entries_stay_bounded_whatever_the_caller_sends() {
    let w = World::start().await;
    let query = format!("q={}", "a%22b".repeat(12_000)); // 60 KB, quotes escaped in JSON
    let agent = "\"agent\"".repeat(2_000);
    let r = w
        .app
        .client
        .get(w.app.url(&format!("/api/v1/items?{query}")))
        .header("user-agent", &agent)
        .header("x-request-id", "huge-unauthenticated")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let _ = w.app.audit_for("huge-unauthenticated").await;
    let line = w
        .app
        .stdout
        .text()
        .lines()
        .find(|l| l.contains("huge-unauthenticated"))
        .expect("line")
        .to_string();
    assert!(
        line.len() < 16 * 1024,
        "an audit line of {} bytes",
        line.len()
    );
    let e: serde_json::Value = serde_json::from_str(&line).expect("json");
    let url = e["httpRequest"]["requestUrl"].as_str().expect("url");
    assert!(url.len() <= 2048, "{}", url.len());
    assert!(url.starts_with("/api/v1/items?q=a%22b"), "{url}");
    assert!(url.ends_with("...[truncated]"), "{url}");
    let ua = e["httpRequest"]["userAgent"].as_str().expect("ua");
    assert!(
        ua.len() <= 2048 && ua.ends_with("...[truncated]"),
        "{}",
        ua.len()
    );
    let message = e["message"].as_str().expect("message");
    assert!(
        !message.contains("q=a%22b"),
        "the message repeats the URL: {message}"
    );
    assert!(message.contains("/api/v1/items"), "{message}");
}

// ------------------------------------------------------------------------------------------
// Slow bodies, one caller against the rest, the caller's own faults

const AWS_CREDENTIALS: &str = r#"{"access_key_id": "AKIDEXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}"#;

fn body_routes() -> String {
    format!(
        r#"  upload:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    timeout_seconds: 30
    allow:
      - callers: ["{READER}", "{WRITER}"]
        methods: ["POST"]
        paths: ["/**"]
  hooks:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ hmac: {{ preset: github_sha256 }} }} }}
    timeout_seconds: 3
    allow:
      - callers: ["{READER}"]
        methods: ["POST"]
        paths: ["/**"]
  aws:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:AWS_CREDENTIALS", inject: {{ aws_sigv4: {{ service: "execute-api", region: "eu-west-1" }} }} }}
    allow:
      - callers: ["{READER}"]
        methods: ["POST"]
        paths: ["/**"]
"#
    )
}

async fn body_world() -> World {
    let mut env = default_env();
    env.push(("AWS_CREDENTIALS".to_string(), AWS_CREDENTIALS.to_string()));
    let mut w = World::custom(
        &body_routes(),
        |config| {
            config.replace(
                "server:\n",
                "server:\n  body_idle_timeout_seconds: 1\n  max_in_flight_per_caller: 3\n",
            )
        },
        &env,
    )
    .await;
    w.app.forbidden.push("wJalrXUtnFEMI/K7MDENG".to_string());
    w
}

/// A connection that has sent the request head and `first` and then keeps quiet.
async fn stalled_upload(
    w: &World,
    caller: &str,
    path: &str,
    extra_headers: &str,
    first: &str,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(w.app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n{extra_headers}\r\n{first}",
        w.keys.token(caller)
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// The response head on `stream`, within `within`.
async fn response_head(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(within, async {
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn request_id_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test]
async fn a_body_that_pauses_is_cut_with_408_streamed_or_held() {
    let w = body_world().await;
    for path in ["/upload/v1/items", "/hooks/v1/events"] {
        let mut stream = stalled_upload(&w, READER, path, "", "5\r\nhello\r\n").await;
        let head = response_head(&mut stream, Duration::from_secs(5)).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{path}: {head}");
        let e = w.app.audit_for(&request_id_of(&head)).await;
        assert_eq!(e["reason"], "request_timeout", "{e}");
        assert_eq!(e["severity"], "WARNING", "{e}");
    }
}

#[tokio::test]
async fn a_held_body_must_arrive_within_the_route_timeout_even_when_it_keeps_trickling() {
    use tokio::io::AsyncWriteExt;
    let w = body_world().await;
    let mut stream = stalled_upload(&w, READER, "/hooks/v1/events", "", "1\r\na\r\n").await;
    // A byte every 400 ms never trips the 1 s idle limit; the route's 3 s timeout cuts it.
    let started = tokio::time::Instant::now();
    let head = loop {
        tokio::select! {
            head = response_head(&mut stream, Duration::from_millis(400)) => {
                if !head.is_empty() { break head; }
            }
        }
        if stream.write_all(b"1\r\na\r\n").await.is_err() {
            break response_head(&mut stream, Duration::from_secs(1)).await;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut");
    };
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_caller_cannot_take_every_slot_from_the_others() {
    let w = body_world().await;
    // Three trickling uploads: the caller's whole allowance.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stalled_upload(&w, WRITER, "/upload/v1/items", "", "1\r\na\r\n").await);
    }
    for _ in 0..200 {
        if w.upstream.started() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A fourth from the same caller: 429, at once.
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/upload/v1/items")
        .body("x")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert_eq!(error_body(r).await["error"], "rate_limited");
    assert_eq!(w.app.audit_for(&id).await["reason"], "caller_concurrency");
    // Every other caller is served as usual meanwhile.
    for _ in 0..5 {
        let r = w
            .app
            .request_as(reqwest::Method::POST, READER, "/upload/v1/items")
            .body("fine")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
    }
    drop(held);
}

#[tokio::test]
async fn broken_chunked_framing_is_the_callers_fault_not_an_outage() {
    let w = body_world().await;
    let mut stream =
        stalled_upload(&w, READER, "/upload/v1/items", "", "5\r\nhello\r\nZZ\r\n").await;
    let head = response_head(&mut stream, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let e = w.app.audit_for(&request_id_of(&head)).await;
    assert_eq!(e["reason"], "bad_request_body", "{e}");
    assert_eq!(e["severity"], "WARNING", "{e}");
}

#[tokio::test]
async fn a_header_signing_cannot_use_is_400_and_names_no_secret() {
    let w = body_world().await;
    let r = w
        .app
        .request_as(reqwest::Method::POST, READER, "/aws/v1/items")
        .header(
            "content-type",
            http::HeaderValue::from_bytes(b"text/pl\xe9in").expect("obs-text"),
        )
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let body = error_body(r).await;
    assert_eq!(body["error"], "bad_request");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("content-type"), "{message}");
    assert!(!message.contains("AWS_CREDENTIALS"), "{message}");
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["reason"], "bad_request_header", "{e}");
    assert_eq!(e["severity"], "WARNING", "{e}");
    assert_eq!(w.upstream.started(), 0);
}

// ------------------------------------------------------------------------------------------
// Paths, method overrides, what unauthenticated endpoints say

#[tokio::test]
async fn a_double_encoded_path_is_refused() {
    let w = World::start().await;
    for path in [
        "/api/v1/%252e%252e/admin",
        "/api/v1/items%252Fother",
        "/api/v1/%2541",
    ] {
        let r = w.app.get_as(READER, path).await;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(error_body(r).await["error"], "bad_request", "{path}");
    }
    // A literal percent sign stays possible.
    assert_eq!(w.app.get_as(READER, "/api/v1/100%25").await.status(), 200);
    assert_eq!(w.upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_method_override_in_a_form_body_is_refused() {
    let w = World::start().await;
    for body in [
        "_method=DELETE",
        "a=1&_METHOD=delete",
        "a=1&%5Fmethod=PUT",
        "_method[]=PATCH&b=2",
    ] {
        let r = w
            .app
            .request_as(reqwest::Method::POST, WRITER, "/api/v1/items")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 400, "{body}");
        let id = r.headers()["x-request-id"]
            .to_str()
            .expect("id")
            .to_string();
        assert_eq!(error_body(r).await["error"], "bad_request");
        assert_eq!(
            w.app.audit_for(&id).await["reason"],
            "method_override",
            "{body}"
        );
    }
    // The same text in a JSON body, or a parameter merely containing the word, passes.
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/api/v1/items")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("note=_method&x_method=1")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(w.upstream.last().body, "note=_method&x_method=1");
    assert_eq!(w.upstream.requests().len(), 1);
}

#[tokio::test]
async fn readiness_says_how_many_not_which() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    jwks.set_failing(true);
    let upstream = FakeUpstream::start().await;
    let app = TestApp::spawn_with(
        &default_config(&jwks, &upstream, ""),
        &keys,
        &default_env(),
        &[],
    )
    .await;
    let r = app.get("/_credproxy/ready").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["waiting_for"]["jwks"], 1, "{body}");
    for name in ["api", "basic", "API_SECRET", jwks.url().as_str()] {
        assert!(!body.to_string().contains(name), "{name} disclosed: {body}");
    }
}

// ------------------------------------------------------------------------------------------
// OAuth2 minting

/// A token endpoint that counts mints, names tokens `tok-N-SECRET`, gives them
/// `expires_in`, and answers every mint after the first `later_delay` late.
#[derive(Clone)]
struct Tokens {
    url: String,
    mints: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn token_endpoint(expires_in: u64, later_delay: Duration) -> Tokens {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mints = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = mints.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                if n > 1 {
                    tokio::time::sleep(later_delay).await;
                }
                axum::Json(serde_json::json!({
                    "access_token": format!("tok-{n}-SECRET"),
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                }))
            }
        }),
    );
    let addr = spawn(app).await;
    Tokens {
        url: format!("http://{addr}/token"),
        mints,
    }
}

impl Tokens {
    fn mints(&self) -> usize {
        self.mints.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn oauth_world(tokens: &Tokens, secret: &str, sm: Option<&FakeSecretManager>) -> World {
    let route = format!(
        r#"  crm:
    upstream: "{{UPSTREAM}}"
    credential:
      secret: "{secret}"
      inject:
        oauth2_client_credentials: {{ token_url: "{}" }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
"#,
        tokens.url
    );
    let mut env = default_env();
    env.push((
        "CLIENT_SECRET".to_string(),
        r#"{"client_id":"etl","client_secret":"cs_SECRET_0123456789"}"#.to_string(),
    ));
    let w = World::custom(
        &route,
        |config| match sm {
            Some(sm) => format!(
                "secrets:\n  secret_manager: {{ endpoint: \"{}\", credentials: anonymous }}\n{config}",
                sm.url()
            ),
            None => config,
        },
        &env,
    )
    .await;
    let mut w = w;
    w.app
        .forbidden
        .extend((1..=20).map(|n| format!("tok-{n}-SECRET")));
    w.app.forbidden.push("cs_SECRET_0123456789".to_string());
    w
}

#[tokio::test]
async fn warming_mints_one_token_even_when_a_request_races_the_first_read() {
    let tokens = token_endpoint(3600, Duration::ZERO).await;
    let sm = FakeSecretManager::start().await;
    sm.add_version(
        "crm-client",
        r#"{"client_id":"etl","client_secret":"cs_SECRET_0123456789"}"#,
    );
    let w = oauth_world(
        &tokens,
        "projects/acme/secrets/crm-client/versions/latest",
        Some(&sm),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(w.app.get_as(READER, "/crm/v1/contacts").await.status(), 200);
    }
    // The refresher's next look (at most 5 s later) would re-mint if the start had keyed
    // the token on a second read of the same value: give it that chance.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tokens.mints(), 1, "one token for one client secret");
}

#[tokio::test]
async fn a_token_that_lives_no_time_is_not_minted_more_than_once_a_second() {
    // `expires_in: 0`: every token is due for refresh the moment it arrives.
    let tokens = token_endpoint(0, Duration::ZERO).await;
    let w = oauth_world(&tokens, "env:CLIENT_SECRET", None).await;
    let started = tokio::time::Instant::now();
    let mut ok = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        if w.app.get_as(READER, "/crm/v1/contacts").await.status() == 200 {
            ok += 1;
        }
    }
    // Each request needs a token minted for it, and mints wait their turn.
    assert!(ok >= 2, "{ok} requests served");
    let mints = tokens.mints();
    assert!(
        (2..=4).contains(&mints),
        "{mints} mints in 2.5 s (at most one per second, plus the one at start)"
    );
}

#[tokio::test]
async fn every_request_that_got_the_401_with_the_old_token_is_replayed() {
    // The second mint takes a while: every concurrent request has its 401 by then.
    let tokens = token_endpoint(3600, Duration::from_millis(400)).await;
    let w = oauth_world(&tokens, "env:CLIENT_SECRET", None).await;
    assert_eq!(w.app.get_as(READER, "/crm/v1/contacts").await.status(), 200);
    // The upstream revokes the first token.
    w.upstream.accept_only(Some(&["Bearer tok-2-SECRET"]));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let request = w
            .app
            .request_as(reqwest::Method::GET, READER, "/crm/v1/contacts")
            .send();
        tasks.push(tokio::spawn(request));
    }
    for t in tasks {
        let r = t.await.expect("join").expect("request");
        assert_eq!(
            r.status(),
            200,
            "a request that got the 401 was not replayed"
        );
    }
    assert_eq!(tokens.mints(), 2);
}
