//! A wire-level fake of Secret Manager v1's REST/JSON API, so the real
//! `google-cloud-secretmanager-v1` client is exercised.
//!
//! It answers `GET /v1/projects/{project}/secrets/{secret}/versions/{version}:access` (the
//! client also sends `$alt=json;enum-encoding=int`) with
//! `{"name": "projects/NUMBER/secrets/ID/versions/N", "payload": {"data": BASE64,
//! "dataCrc32c": "INT64 AS STRING"}}`: the name carries the project *number* and the resolved
//! version, whatever the request said. `latest` is the newest version even when disabled
//! (then 400 `FAILED_PRECONDITION`), a missing secret or version is 404 `NOT_FOUND`, and
//! errors use Google's JSON error body. Controls: add and disable versions, fail, hang,
//! deny, corrupt the checksum, and count calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

/// The project number the fake reports in names.
pub const PROJECT_NUMBER: &str = "123456";

/// How the fake answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Normally.
    Ok,
    /// 503 `UNAVAILABLE` (retryable).
    Unavailable,
    /// 403 `PERMISSION_DENIED`.
    PermissionDenied,
    /// A payload whose `dataCrc32c` does not match.
    BadChecksum,
}

#[derive(Default)]
struct Secret {
    versions: Vec<(Vec<u8>, bool)>,
}

struct SmState {
    secrets: HashMap<String, Secret>,
    mode: Mode,
    delay: Duration,
    calls: HashMap<String, usize>,
    bad_requests: Vec<String>,
}

#[derive(Clone)]
pub struct FakeSecretManager {
    pub addr: SocketAddr,
    state: Arc<Mutex<SmState>>,
    /// Notified on every access call.
    called: Arc<tokio::sync::Notify>,
}

impl FakeSecretManager {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(SmState {
            secrets: HashMap::new(),
            mode: Mode::Ok,
            delay: Duration::ZERO,
            calls: HashMap::new(),
            bad_requests: Vec::new(),
        }));
        let called = Arc::new(tokio::sync::Notify::new());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((state.clone(), called.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake secret manager");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSecretManager {
            addr,
            state,
            called,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a version with `data`; returns its number.
    pub fn add_version(&self, secret: &str, data: &str) -> usize {
        let mut s = self.state.lock().expect("lock");
        let entry = s.secrets.entry(secret.to_string()).or_default();
        entry.versions.push((data.as_bytes().to_vec(), true));
        entry.versions.len()
    }

    /// Disables (or re-enables) a version.
    pub fn set_enabled(&self, secret: &str, version: usize, enabled: bool) {
        let mut s = self.state.lock().expect("lock");
        if let Some(v) = s
            .secrets
            .get_mut(secret)
            .and_then(|e| e.versions.get_mut(version - 1))
        {
            v.1 = enabled;
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("lock").delay = delay;
    }

    /// Access calls received for `secret` (any version).
    pub fn calls(&self, secret: &str) -> usize {
        *self
            .state
            .lock()
            .expect("lock")
            .calls
            .get(secret)
            .unwrap_or(&0)
    }

    /// Waits (`within` at most) until `secret` had at least `n` access calls.
    pub async fn wait_calls(&self, secret: &str, n: usize, within: Duration) {
        super::wait_on(
            &self.called,
            within,
            &format!("{n} access calls for {secret}"),
            || self.calls(secret) >= n,
        )
        .await;
    }

    /// Requests that did not have the shape the real client sends.
    pub fn bad_requests(&self) -> Vec<String> {
        self.state.lock().expect("lock").bad_requests.clone()
    }
}

fn google_error(code: u16, status: &str, message: &str) -> Response {
    (
        http::StatusCode::from_u16(code).expect("status"),
        axum::Json(serde_json::json!({
            "error": {"code": code, "message": message, "status": status}
        })),
    )
        .into_response()
}

async fn handle(
    State((state, called)): State<(Arc<Mutex<SmState>>, Arc<tokio::sync::Notify>)>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (secret, version) = match parts.as_slice() {
        [
            "v1",
            "projects",
            _project,
            "secrets",
            secret,
            "versions",
            version,
        ] if request.method() == http::Method::GET && version.ends_with(":access") => (
            secret.to_string(),
            version.trim_end_matches(":access").to_string(),
        ),
        _ => {
            state
                .lock()
                .expect("lock")
                .bad_requests
                .push(format!("{} {path}", request.method()));
            return google_error(404, "NOT_FOUND", "no such method");
        }
    };
    if !query.contains("alt=json") {
        state
            .lock()
            .expect("lock")
            .bad_requests
            .push(format!("missing $alt=json: {path}?{query}"));
    }
    let (delay, mode) = {
        let mut s = state.lock().expect("lock");
        *s.calls.entry(secret.clone()).or_default() += 1;
        (s.delay, s.mode.clone())
    };
    called.notify_waiters();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match mode {
        Mode::Unavailable => {
            return google_error(503, "UNAVAILABLE", "The service is currently unavailable.");
        }
        Mode::PermissionDenied => {
            return google_error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Permission 'secretmanager.versions.access' denied for resource 'projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{version}' (or it may not exist)."
                ),
            );
        }
        Mode::Ok | Mode::BadChecksum => {}
    }
    let s = state.lock().expect("lock");
    let Some(entry) = s.secrets.get(&secret).filter(|e| !e.versions.is_empty()) else {
        return google_error(
            404,
            "NOT_FOUND",
            &format!(
                "Secret [projects/{PROJECT_NUMBER}/secrets/{secret}] not found or has no versions."
            ),
        );
    };
    let number = if version == "latest" {
        entry.versions.len()
    } else {
        match version.parse::<usize>() {
            Ok(n) if (1..=entry.versions.len()).contains(&n) => n,
            _ => {
                return google_error(
                    404,
                    "NOT_FOUND",
                    &format!(
                        "Secret Version [projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{version}] not found."
                    ),
                );
            }
        }
    };
    let (data, enabled) = &entry.versions[number - 1];
    let name = format!("projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{number}");
    if !enabled {
        return google_error(
            400,
            "FAILED_PRECONDITION",
            &format!("Secret Version [{name}] is in DISABLED state."),
        );
    }
    let mut crc = crc32c::crc32c(data) as i64;
    if mode == Mode::BadChecksum {
        crc ^= 1;
    }
    axum::Json(serde_json::json!({
        "name": name,
        "payload": {
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "dataCrc32c": crc.to_string(),
        }
    }))
    .into_response()
}
