//! Shared fakes and the running server.
//!
//! [`TestApp`] runs the real `credproxy serve` binary on an ephemeral port with a generated
//! config, and captures every byte it writes to stdout and stderr. When a `TestApp` is
//! dropped, its output is searched for the route secrets and every token minted by the test:
//! each integration test is therefore also a redaction test.
//!
//! [`FakeJwks`] serves a JWKS and counts fetches; [`FakeUpstream`] records what it received
//! and has a few behaviours chosen by path (slow headers, stalled body, redirect, status).
//!
//! Tests wait for conditions, not for times: the fakes and the captured output signal each
//! change, and [`wait_on`] waits (with a deadline) for a condition on them. Only readiness is
//! polled, as the binary tells it over HTTP alone; the upstream's slow paths sleep on purpose.

#![allow(dead_code)]

pub mod redis;
pub mod secret_manager;
pub use secret_manager::{FakeSecretManager, Mode, PROJECT_NUMBER};

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use credproxy::dev::Signer;
use http_body_util::BodyExt;

/// The secret the default routes inject.
pub const SECRET: &str = "sk_test_SECRET_7c1f9e2b";
/// Audience of the test config.
pub const AUDIENCE: &str = "https://credproxy.test";
/// Issuer used for test tokens (a Google issuer, as in production).
pub const ISSUER: &str = "https://accounts.google.com";
/// Allowed to GET /v1/** on every default route.
pub const READER: &str = "reader@pipelines.iam.gserviceaccount.com";
/// Allowed GET, POST, PUT on /v1/** of route `api`.
pub const WRITER: &str = "writer@pipelines.iam.gserviceaccount.com";
/// Allowed nothing.
pub const STRANGER: &str = "stranger@other.iam.gserviceaccount.com";

// ------------------------------------------------------------------------------------------
// Waiting for a condition

/// Waits until `done()` holds, checking it again each time `changed` is notified (whoever
/// changes what `done` looks at notifies it); false if it still does not after `within`.
pub async fn wait_for(changed: &Notify, within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        // Registered before the check, so a change between the two is not missed.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return done();
        }
    }
}

/// [`wait_for`], panicking naming `what` when `done` does not come to hold.
pub async fn wait_on(changed: &Notify, within: Duration, what: &str, done: impl FnMut() -> bool) {
    assert!(
        wait_for(changed, within, done).await,
        "not within {within:?}: {what}"
    );
}

// ------------------------------------------------------------------------------------------
// Keys and tokens

/// A signing key plus every token it minted (so their absence from logs can be checked).
#[derive(Clone)]
pub struct Keys {
    pub signer: Arc<Signer>,
    minted: Arc<Mutex<Vec<String>>>,
}

impl Keys {
    pub fn new() -> Self {
        Keys {
            signer: Arc::new(Signer::generate().expect("generate RSA key")),
            minted: Arc::default(),
        }
    }

    /// Valid Google-shaped claims for `email`.
    pub fn claims(&self, email: &str) -> serde_json::Value {
        Signer::claims(email, ISSUER, AUDIENCE)
    }

    /// A valid token for `email`.
    pub fn token(&self, email: &str) -> String {
        self.sign(&self.claims(email))
    }

    /// Signs arbitrary claims with the key's kid.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.remember(self.signer.sign(claims))
    }

    /// Signs under an arbitrary header (still RS256 with this key).
    pub fn sign_with_header(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        self.remember(self.signer.sign_with_header(header, claims))
    }

    /// Records a token built by hand so the redaction check looks for it too.
    pub fn remember(&self, token: String) -> String {
        self.minted.lock().expect("lock").push(token.clone());
        token
    }

    pub fn minted(&self) -> Vec<String> {
        self.minted.lock().expect("lock").clone()
    }
}

// ------------------------------------------------------------------------------------------
// Fake JWKS

pub struct FakeJwks {
    pub addr: SocketAddr,
    pub fetches: Arc<AtomicUsize>,
    jwks: Arc<Mutex<serde_json::Value>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeJwks {
    pub async fn start(jwks: serde_json::Value) -> Self {
        type JwksState = (
            Arc<AtomicUsize>,
            Arc<Mutex<serde_json::Value>>,
            Arc<std::sync::atomic::AtomicBool>,
        );
        let fetches = Arc::new(AtomicUsize::new(0));
        let doc = Arc::new(Mutex::new(jwks));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state: JwksState = (fetches.clone(), doc.clone(), failing.clone());
        let app = axum::Router::new()
            .route(
                "/certs",
                axum::routing::get(
                    |State((fetches, doc, failing)): State<JwksState>| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        if failing.load(Ordering::SeqCst) {
                            return (http::StatusCode::INTERNAL_SERVER_ERROR, "down")
                                .into_response();
                        }
                        let body = doc.lock().expect("lock").clone();
                        (
                            [("cache-control", "public, max-age=21600")],
                            axum::Json(body),
                        )
                            .into_response()
                    },
                ),
            )
            .with_state(state);
        let addr = spawn(app).await;
        FakeJwks {
            addr,
            fetches,
            jwks: doc,
            failing,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/certs", self.addr)
    }

    pub fn set(&self, jwks: serde_json::Value) {
        *self.jwks.lock().expect("lock") = jwks;
    }

    /// While failing, every fetch answers 500.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn fetch_count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

// ------------------------------------------------------------------------------------------
// Fake upstream

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub completed: bool,
}

#[derive(Clone, Default)]
struct UpstreamState {
    requests: Arc<Mutex<Vec<Recorded>>>,
    started: Arc<AtomicUsize>,
    /// When set, only these `Authorization` values are accepted; others get 401.
    accept_only: Arc<Mutex<Option<Vec<String>>>>,
    /// Notified when a request starts and when it is recorded.
    changed: Arc<Notify>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: UpstreamState,
}

impl FakeUpstream {
    /// Behaviours by path (after the route's base path):
    /// - `/slow/N`: answer after N seconds;
    /// - `/stall`: send headers and one chunk, then stall for a minute;
    /// - `/stall-sized`: the same with `Content-Length: 100` (a small body of known length);
    /// - `/drip/N`: N chunks, one every 300 ms (a slow but flowing body);
    /// - `/redirect`: 302 to another host;
    /// - `/status/N`: answer with status N;
    /// - `/headers`: answer with upstream debug headers;
    /// - `/spoof-error`: 403 carrying `X-Credproxy-Error` (an upstream posing as credproxy);
    /// - anything else: 200 with a JSON echo.
    pub async fn start() -> Self {
        let state = UpstreamState::default();
        let app = axum::Router::new()
            .fallback(upstream_handler)
            .with_state(state.clone());
        let addr = spawn(app).await;
        FakeUpstream { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Requests that reached the upstream at all (even ones whose body never completed).
    pub fn started(&self) -> usize {
        self.state.started.load(Ordering::SeqCst)
    }

    /// Accept only these `Authorization` values from now on (`None`: accept anything).
    pub fn accept_only(&self, values: Option<&[&str]>) {
        *self.state.accept_only.lock().expect("lock") =
            values.map(|v| v.iter().map(|s| s.to_string()).collect());
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }

    /// Waits (5 s at most) until `done` holds for the requests recorded so far.
    pub async fn wait_until(&self, what: &str, mut done: impl FnMut(&[Recorded]) -> bool) {
        wait_on(&self.state.changed, Duration::from_secs(5), what, || {
            done(&self.state.requests.lock().expect("lock"))
        })
        .await;
    }

    /// Waits (5 s at most) until `n` requests have reached the upstream (bodies read or not).
    pub async fn wait_started(&self, n: usize) {
        wait_on(
            &self.state.changed,
            Duration::from_secs(5),
            &format!("{n} requests reached the upstream"),
            || self.started() >= n,
        )
        .await;
    }
}

async fn upstream_handler(State(state): State<UpstreamState>, request: Request) -> Response {
    state.started.fetch_add(1, Ordering::SeqCst);
    state.changed.notify_waiters();
    let (parts, body) = request.into_parts();
    let (body, completed) = match body.collect().await {
        Ok(c) => (c.to_bytes(), true),
        Err(_) => (Bytes::new(), false),
    };
    let path = parts.uri.path().to_string();
    state.requests.lock().expect("lock").push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body: body.clone(),
        completed,
    });
    state.changed.notify_waiters();
    if let Some(accepted) = state.accept_only.lock().expect("lock").as_ref() {
        let auth = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !accepted.iter().any(|a| a == auth) {
            return (http::StatusCode::UNAUTHORIZED, "invalid api key").into_response();
        }
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [.., "slow", n] => {
            let secs: u64 = n.parse().unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(secs)).await;
            (http::StatusCode::OK, "slow answer").into_response()
        }
        [.., stall @ ("stall" | "stall-sized")] => {
            let sized = *stall == "stall-sized";
            let stream = futures_util::stream::unfold(0u8, |n| async move {
                if n == 0 {
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from_static(b"first chunk")),
                        1,
                    ))
                } else {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    None
                }
            });
            let mut response = Response::new(Body::from_stream(stream));
            if sized {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(100));
            }
            response
        }
        [.., "drip", n] => {
            let total: u32 = n.parse().unwrap_or(3);
            let stream = futures_util::stream::unfold(0u32, move |i| async move {
                if i >= total {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(format!("chunk{i};"))),
                    i + 1,
                ))
            });
            Response::new(Body::from_stream(stream))
        }
        [.., "redirect"] => (
            http::StatusCode::FOUND,
            [("location", "https://elsewhere.example/landing")],
            "",
        )
            .into_response(),
        [.., "status", n] => {
            let code = n
                .parse::<u16>()
                .ok()
                .and_then(|c| http::StatusCode::from_u16(c).ok())
                .unwrap_or(http::StatusCode::OK);
            (code, format!("status {code}")).into_response()
        }
        [.., "gzip-echo"] => {
            // Compresses (well, labels it so) only when the request asks for gzip, like a
            // real upstream; otherwise reflects the credential in plain text.
            let accept = parts
                .headers
                .get("accept-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let auth = parts
                .headers
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            if accept.contains("gzip") {
                ([("content-encoding", "gzip")], format!("gz:{auth}")).into_response()
            } else {
                format!("accept-encoding={accept}; {auth}").into_response()
            }
        }
        // An upstream whose error poses as credproxy's own.
        [.., "spoof-error"] => (
            http::StatusCode::FORBIDDEN,
            [("x-credproxy-error", "forbidden")],
            "upstream says no",
        )
            .into_response(),
        [.., "force-gzip"] => ([("content-encoding", "gzip")], "compressed anyway").into_response(),
        [.., "echo"] => {
            // A debug endpoint that reflects the request: headers and query in the body, the
            // credential in a header and in a redirect-style Location.
            let auth = parts
                .headers
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            let headers: Vec<String> = parts
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            let body = format!(
                "query={}\n{}\n",
                parts.uri.query().unwrap_or_default(),
                headers.join("\n")
            );
            (
                [
                    ("x-echo-authorization", auth),
                    (
                        "location",
                        format!("/next?{}", parts.uri.query().unwrap_or_default()),
                    ),
                ],
                body,
            )
                .into_response()
        }
        [.., "headers"] => (
            [
                ("server", "secret-upstream/1.0"),
                ("x-powered-by", "php"),
                ("x-upstream-ok", "yes"),
            ],
            "with headers",
        )
            .into_response(),
        _ => axum::Json(serde_json::json!({
            "method": parts.method.as_str(),
            "path": path,
            "query": parts.uri.query(),
            "body_bytes": body.len(),
        }))
        .into_response(),
    }
}

/// Serves `app` on a free loopback port; returns the address.
pub async fn spawn(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

// ------------------------------------------------------------------------------------------
// Config

/// The default test config: routes `api` (bearer header), `q` (query parameter `key`) and
/// `basic` (basic auth), all to `upstream`, plus whatever `extra_routes` adds (where
/// `{UPSTREAM}` stands for the fake upstream's URL).
pub fn default_config(jwks: &FakeJwks, upstream: &FakeUpstream, extra_routes: &str) -> String {
    let extra_routes = extra_routes.replace("{UPSTREAM}", &upstream.url());
    format!(
        r#"
listen: "127.0.0.1:0"
environment: test
server:
  header_read_timeout_seconds: 2
identity:
  audiences: ["{AUDIENCE}"]
  jwks_url: "{jwks}"
routes:
  api:
    upstream: "{upstream}/base"
    credential:
      secret: "env:API_SECRET"
      inject:
        header: {{ name: "Authorization", format: "Bearer {{secret}}" }}
    request_headers: {{ set: {{ "X-Api-Version": "2024-06-20" }}, remove: ["X-Debug"] }}
    response_headers: {{ remove: ["Server", "X-Powered-By"] }}
    timeout_seconds: 1
    idle_timeout_seconds: 1
    max_body_bytes: 1024
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/v1/**"]
      - callers: ["{WRITER}"]
        methods: ["GET", "POST", "PUT"]
        paths: ["/v1/**"]
      - callers: ["*@pipelines.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/public/*"]
      - callers: ["{STRANGER}"]
        methods: ["GET"]
        paths: ["/v1/**"]
        expires: "2020-01-01T00:00:00Z"
  q:
    upstream: "{upstream}"
    credential:
      secret: "env:API_SECRET"
      inject:
        query: {{ name: "key" }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/v1/**"]
  basic:
    upstream: "{upstream}"
    credential:
      secret: "env:BASIC_SECRET"
      field: "password"
      inject:
        basic: {{ username: "svc" }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/v1/**"]
{extra_routes}"#,
        jwks = jwks.url(),
        upstream = upstream.url(),
    )
}

/// The JSON payload of `env:BASIC_SECRET`.
pub const BASIC_PAYLOAD: &str = r#"{"password":"pw_SECRET_93ad"}"#;

// ------------------------------------------------------------------------------------------
// The running server

/// Captured output of a child process.
#[derive(Clone, Default)]
pub struct Output {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// Set when the process closed the stream (it exited).
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Notified on every chunk and at the end.
    changed: Arc<Notify>,
}

impl Output {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().expect("lock")).into_owned()
    }

    /// Whether the process closed the stream.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until `done` holds for the text so far, or the stream is closed, or `within`
    /// passed; returns whether `done` held.
    pub async fn wait_until(&self, within: Duration, mut done: impl FnMut(&str) -> bool) -> bool {
        let mut held = false;
        wait_for(&self.changed, within, || {
            held = done(&self.text());
            held || self.closed()
        })
        .await;
        held
    }

    fn pump(&self, mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<()> {
        let out = self.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        out.bytes.lock().expect("lock").extend_from_slice(&buf[..n]);
                        out.changed.notify_waiters();
                    }
                }
            }
            out.closed.store(true, Ordering::SeqCst);
            out.changed.notify_waiters();
        })
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub child: Child,
    pub stdout: Output,
    pub stderr: Output,
    pub keys: Keys,
    pub client: reqwest::Client,
    /// Strings that must never appear in the output (secrets, tokens).
    pub forbidden: Vec<String>,
    _dir: tempfile::TempDir,
    pumps: Vec<std::thread::JoinHandle<()>>,
}

/// Environment given to every spawned server.
pub fn default_env() -> Vec<(String, String)> {
    vec![
        ("API_SECRET".to_string(), SECRET.to_string()),
        ("BASIC_SECRET".to_string(), BASIC_PAYLOAD.to_string()),
        ("CREDPROXY_LOG".to_string(), "debug".to_string()),
    ]
}

impl TestApp {
    /// Starts `credproxy serve` with `config` and waits until it is ready.
    pub async fn spawn(config: &str, keys: &Keys) -> TestApp {
        let app = Self::spawn_with(config, keys, &default_env(), &[]).await;
        app.wait_ready().await;
        app
    }

    /// Starts `credproxy serve` without waiting for readiness.
    pub async fn spawn_with(
        config: &str,
        keys: &Keys,
        env: &[(String, String)],
        args: &[&str],
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_credproxy"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn credproxy");
        let stdout = Output::default();
        let stderr = Output::default();
        let pumps = vec![
            stdout.pump(child.stdout.take().expect("stdout")),
            stderr.pump(child.stderr.take().expect("stderr")),
        ];
        let mut forbidden = vec![SECRET.to_string(), "pw_SECRET_93ad".to_string()];
        forbidden.extend(
            env.iter()
                .filter(|(k, _)| k.ends_with("SECRET"))
                .map(|(_, v)| v.clone()),
        );
        let mut app = TestApp {
            addr: "127.0.0.1:0".parse().expect("addr"),
            child,
            stdout,
            stderr,
            keys: keys.clone(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            forbidden,
            _dir: dir,
            pumps,
        };
        app.addr = app.wait_listening().await;
        app
    }

    /// Parses the bound address from the "credproxy listening" log line.
    async fn wait_listening(&mut self) -> SocketAddr {
        let mut address = None;
        self.stderr
            .wait_until(Duration::from_secs(10), |text| {
                address = text.lines().find_map(|line| {
                    let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
                    if v["message"] != "credproxy listening" {
                        return None;
                    }
                    v["address"].as_str()?.parse().ok()
                });
                address.is_some()
            })
            .await;
        if let Some(address) = address {
            return address;
        }
        if self.stderr.closed() {
            let status = self.child.wait().expect("wait");
            panic!(
                "credproxy exited with {status} before listening:\n{}",
                self.stderr.text()
            );
        }
        panic!("credproxy did not log its address:\n{}", self.stderr.text());
    }

    /// Waits (`within` at most) until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        if !self
            .stderr
            .wait_until(within, |text| text.contains(needle))
            .await
        {
            panic!(
                "the log never showed `{needle}` within {within:?}:\n{}",
                self.stderr.text()
            );
        }
    }

    pub async fn wait_ready(&self) {
        for _ in 0..400 {
            if let Ok(r) = self.client.get(self.url("/_credproxy/ready")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("credproxy never became ready:\n{}", self.stderr.text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path` without credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// GET `path` as `email`.
    pub async fn get_as(&self, email: &str, path: &str) -> reqwest::Response {
        let token = self.keys.token(email);
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// A request builder carrying a valid token for `email`.
    pub fn request_as(
        &self,
        method: reqwest::Method,
        email: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let token = self.keys.token(email);
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// Sends a raw HTTP/1.1 request and returns the raw response head and body.
    pub async fn raw(&self, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        // It closes its output when it exits.
        for output in [self.stdout.clone(), self.stderr.clone()] {
            let remaining = deadline.saturating_duration_since(Instant::now());
            output.wait_until(remaining, |_| false).await;
        }
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!("credproxy did not exit within {within:?}");
            }
            // Output closed: the exit status follows at once.
            tokio::task::yield_now().await;
        }
    }

    /// The audit entries written so far (stdout lines), each parsed as JSON.
    pub fn audit_entries(&self) -> Vec<serde_json::Value> {
        self.stdout
            .text()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits until at least `n` audit entries were written; returns them all.
    pub async fn wait_audit(&self, n: usize) -> Vec<serde_json::Value> {
        self.stdout
            .wait_until(Duration::from_secs(4), |text| {
                text.matches('\n').count() >= n
            })
            .await;
        let entries = self.audit_entries();
        assert!(
            entries.len() >= n,
            "expected {n} audit entries, got:\n{}",
            self.stdout.text()
        );
        entries
    }

    /// The audit entry of the request with this id (waits for it).
    pub async fn audit_for(&self, request_id: &str) -> serde_json::Value {
        self.stdout
            .wait_until(Duration::from_secs(4), |text| {
                text.lines().any(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .is_ok_and(|e| e["request_id"] == request_id)
                })
            })
            .await;
        let found: Vec<_> = self
            .audit_entries()
            .into_iter()
            .filter(|e| e["request_id"] == request_id)
            .collect();
        assert!(
            found.len() <= 1,
            "more than one audit entry for {request_id}"
        );
        found
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no audit entry for {request_id}:\n{}", self.stdout.text()))
    }

    /// Every audit entry of the requests that finished so far, without waiting a fixed time
    /// for stragglers: sends one more request (GET `path` as [`READER`], which must be
    /// audited), waits for its entry (written after the entry of every request that finished
    /// before it was sent), and returns the entries before it.
    pub async fn audit_entries_settled(&self, path: &str) -> Vec<serde_json::Value> {
        let r = self.get_as(READER, path).await;
        let barrier = r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        let _ = r.bytes().await;
        self.audit_for(&barrier).await;
        let mut entries = self.audit_entries();
        let at = entries
            .iter()
            .position(|e| e["request_id"] == barrier.as_str())
            .expect("the barrier's entry");
        entries.truncate(at);
        entries
    }

    /// Everything the process wrote so far, stdout then stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout.text(), self.stderr.text())
    }

    /// Panics if any secret or minted token appears in the output.
    pub fn assert_nothing_leaked(&self) {
        let out = self.output();
        let mut needles = self.forbidden.clone();
        needles.extend(self.keys.minted());
        for needle in needles.iter().filter(|n| n.len() >= 8) {
            assert!(
                !out.contains(needle.as_str()),
                "a secret or token appeared in credproxy's output: {}...",
                &needle[..8]
            );
            // Token signatures alone are just as sensitive.
            if let Some(sig) = needle.rsplit('.').next().filter(|s| s.len() > 40) {
                assert!(
                    !out.contains(sig),
                    "a token signature appeared in the output"
                );
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pump in self.pumps.drain(..) {
            let _ = pump.join();
        }
        if !std::thread::panicking() {
            self.assert_nothing_leaked();
        }
    }
}

/// Standard fixture: keys, JWKS with the key, an upstream, and a ready server with the
/// default config (plus `extra_routes`).
pub struct World {
    pub keys: Keys,
    pub jwks: FakeJwks,
    pub upstream: FakeUpstream,
    pub app: TestApp,
}

impl World {
    /// A ready server with the default config (plus `extra_routes`) passed through `edit`
    /// (to add top-level keys or change settings), and `env` as its environment.
    pub async fn custom(
        extra_routes: &str,
        edit: impl FnOnce(String) -> String,
        env: &[(String, String)],
    ) -> World {
        let keys = Keys::new();
        let jwks = FakeJwks::start(keys.signer.jwks()).await;
        let upstream = FakeUpstream::start().await;
        let config = edit(default_config(&jwks, &upstream, extra_routes));
        let app = TestApp::spawn_with(&config, &keys, env, &[]).await;
        app.wait_ready().await;
        World {
            keys,
            jwks,
            upstream,
            app,
        }
    }

    pub async fn start() -> World {
        Self::with_routes("").await
    }

    pub async fn with_routes(extra_routes: &str) -> World {
        let keys = Keys::new();
        let jwks = FakeJwks::start(keys.signer.jwks()).await;
        let upstream = FakeUpstream::start().await;
        let app = TestApp::spawn(&default_config(&jwks, &upstream, extra_routes), &keys).await;
        World {
            keys,
            jwks,
            upstream,
            app,
        }
    }
}

/// The JSON error body of a response credproxy answered itself.
pub async fn error_body(response: reqwest::Response) -> serde_json::Value {
    let id = response
        .headers()
        .get("x-request-id")
        .expect("every response carries X-Request-Id")
        .to_str()
        .expect("ascii")
        .to_string();
    let marked = response
        .headers()
        .get("x-credproxy-error")
        .map(|v| v.to_str().expect("ascii").to_string());
    let bytes = response.bytes().await.expect("body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
    // Every answer of credproxy's own names its code in X-Credproxy-Error (SPEC).
    assert_eq!(
        marked.as_deref(),
        body["error"].as_str(),
        "X-Credproxy-Error matches the body's error code"
    );
    assert_eq!(
        body["request_id"],
        id.as_str(),
        "request_id matches X-Request-Id"
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}
