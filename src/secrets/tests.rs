//! The store's timing on tokio's paused clock: refresh ahead, stale serving, backoff, and the
//! per-interval budgets, in virtual seconds instead of wall-clock sleeps.
//!
//! Two ways of letting time pass, depending on what the code under test waits for:
//!
//! - `file:` secrets (real temporary files) do no network I/O, so those tests *sleep on the
//!   paused clock* ([`elapse`]): tokio then jumps from timer to timer, but only while every
//!   task is idle, and never while a blocking file read (`tokio::fs`) is in flight. Each
//!   refresh that falls due on the way therefore runs, and finishes, in order.
//! - Secret Manager and token-endpoint tests talk to fakes over loopback TCP. The fakes run on
//!   their own thread and runtime, on the real clock ([`serve_on_own_thread`]); the test holds
//!   its paused clock still with [`Frozen`] (no auto-advance while real I/O is pending, which
//!   would fire request timeouts), moves it only with `tokio::time::advance`, and waits for
//!   what the fake recorded with [`until`].
//!
//! Each test has its own temporary file or fake, so its own metric labels.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures_util::FutureExt as _;

use super::*;
use crate::config::Config;

// --- helpers, shared with the credential tests -----------------------------------------------

/// A `file:` secret in its own temporary directory.
pub(crate) struct FileSecret {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl FileSecret {
    pub(crate) fn new(content: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, content).expect("write secret");
        FileSecret { _dir: dir, path }
    }

    /// Replaces the content (what a rotation of a mounted secret does).
    pub(crate) fn write(&self, content: &str) {
        std::fs::write(&self.path, content).expect("write secret");
    }

    /// Removes the file: every read of it fails from now on.
    pub(crate) fn remove(&self) {
        std::fs::remove_file(&self.path).expect("remove secret");
    }

    /// `file:/…/secret`, as a config names it (and as errors and metric labels name it).
    pub(crate) fn reference(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// A config with one route `api` whose credential is `secret`, injected as
/// `Authorization: Bearer {secret}` unless `inject` says otherwise, with these `secrets:`
/// settings (`key: value` lines).
pub(crate) fn config_with(secret: &str, inject: Option<&str>, settings: &[&str]) -> Config {
    let inject =
        inject.unwrap_or(r#"{ header: { name: Authorization, format: "Bearer {secret}" } }"#);
    let settings: String = settings.iter().map(|s| format!("  {s}\n")).collect();
    let text = format!(
        r#"
secrets:
{settings}identity: {{ audiences: ["https://credproxy.test"] }}
routes:
  api:
    upstream: "https://api.example.com"
    credential:
      secret: "{secret}"
      inject: {inject}
    allow:
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: [GET]
        paths: ["/**"]
"#
    );
    crate::config::parse(&text, &|_| None)
        .expect("valid config")
        .0
}

/// Lets `d` of virtual time pass by sleeping on the paused clock (tests without network
/// I/O only, see the module docs).
pub(crate) async fn elapse(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Holds a paused clock still while it lives: a blocking task that waits for the guard to be
/// dropped, since tokio does not auto-advance time while a blocking task runs. Time then moves
/// only by `tokio::time::advance`, however long real network I/O takes.
pub(crate) struct Frozen {
    _release: std::sync::mpsc::Sender<()>,
}

impl Frozen {
    pub(crate) fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        Frozen { _release: tx }
    }
}

/// Waits on the real clock (10 s at most) until `done` holds, without moving the paused one:
/// each pause is a short blocking task, which also keeps tokio from auto-advancing time.
// The real clock on purpose, and the sleep is on a blocking-pool thread, not the runtime.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub(crate) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "still not the case after 10 s of real time: {what}"
        );
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
            .await
            .expect("pause");
    }
}

/// Serves `app` on 127.0.0.1 from a thread of its own with its own runtime (on the real clock,
/// whatever the test's clock does); the server stops when the returned sender is dropped.
pub(crate) fn serve_on_own_thread(
    app: axum::Router,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                _ = stopped => {}
            }
        });
    });
    (addr, stop)
}

async fn store_for(config: &Config) -> (Arc<SecretStore>, Arc<SecretEntry>) {
    let store = SecretStore::build(config, &|_| None).await.expect("store");
    let entry = store
        .entry(&config.routes[0].credential.secret)
        .expect("entry");
    (store, entry)
}

fn text(fetched: &Fetched) -> String {
    String::from_utf8(fetched.payload().to_vec()).expect("utf-8")
}

/// What a request would be served now.
async fn served(store: &SecretStore, entry: &SecretEntry) -> Result<String, SecretError> {
    store.read(entry).await.map(|f| text(&f))
}

fn current(entry: &SecretEntry) -> Arc<Fetched> {
    entry.current().expect("a value")
}

// --- file: secrets, sleeping on the paused clock ---------------------------------------------

#[tokio::test(start_paused = true)]
async fn refreshes_ahead_at_nine_tenths_of_the_ttl_and_keeps_an_unchanged_generation() {
    let start = Instant::now();
    let file = FileSecret::new("alpha-1");
    let (store, entry) = store_for(&config_with(
        &file.reference(),
        None,
        &["cache_ttl_seconds: 10"],
    ))
    .await;
    store.spawn_refreshers();
    let first = current(&entry);

    elapse(Duration::from_millis(8_900)).await;
    assert!(
        Arc::ptr_eq(&current(&entry), &first),
        "not re-read before 9 s"
    );

    elapse(Duration::from_millis(200)).await;
    let again = current(&entry);
    assert!(!Arc::ptr_eq(&again, &first), "re-read at 9 s");
    assert_eq!(again.fetched_at - start, Duration::from_secs(9));
    assert_eq!(text(&again), "alpha-1");
    assert_eq!(
        again.generation, first.generation,
        "an unchanged value keeps its generation (derived OAuth2 tokens stay valid)"
    );

    file.write("alpha-2");
    elapse(Duration::from_millis(8_800)).await;
    assert_eq!(served(&store, &entry).await.expect("served"), "alpha-1");
    elapse(Duration::from_millis(200)).await;
    let rotated = current(&entry);
    assert_eq!(text(&rotated), "alpha-2");
    assert_eq!(rotated.fetched_at - start, Duration::from_secs(18));
    assert!(
        rotated.generation > first.generation,
        "a new value, a new generation"
    );
    assert_eq!(served(&store, &entry).await.expect("served"), "alpha-2");
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresh_serves_the_last_good_value_until_ttl_plus_max_stale_then_refuses_it() {
    let file = FileSecret::new("alpha-1");
    let (store, entry) = store_for(&config_with(
        &file.reference(),
        None,
        &["cache_ttl_seconds: 10", "max_stale_seconds: 20"],
    ))
    .await;
    store.spawn_refreshers();
    file.remove();
    let stale_serves = entry.counters.stale.get();

    elapse(Duration::from_secs(5)).await;
    assert_eq!(
        served(&store, &entry).await.expect("within the TTL"),
        "alpha-1"
    );
    assert_eq!(entry.counters.stale.get(), stale_serves);

    // Past the TTL the last good value is still served, and counted as a stale serve.
    elapse(Duration::from_secs(6)).await;
    assert_eq!(
        served(&store, &entry).await.expect("past the TTL"),
        "alpha-1"
    );
    assert_eq!(entry.counters.stale.get(), stale_serves + 1);

    // Up to and including cache_ttl + max_stale = 30 s.
    elapse(Duration::from_secs(19)).await;
    assert_eq!(served(&store, &entry).await.expect("at 30 s"), "alpha-1");

    elapse(Duration::from_millis(100)).await;
    match served(&store, &entry).await {
        Err(SecretError::Stale {
            resource,
            age_seconds,
        }) => {
            assert_eq!(resource, file.reference());
            assert_eq!(age_seconds, 30);
        }
        other => panic!("expected Stale past 30 s, got {other:?}"),
    }
    let message = served(&store, &entry).await.expect_err("stale").to_string();
    assert!(!message.contains("alpha-1"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn failed_refreshes_back_off_from_two_seconds_doubling_up_to_a_minute_then_recover() {
    let start = Instant::now();
    let file = FileSecret::new("alpha-1");
    let (store, entry) = store_for(&config_with(
        &file.reference(),
        None,
        // Never stale, and no request reads it: only the refresher's own schedule counts.
        &["cache_ttl_seconds: 10", "max_stale_seconds: 3600"],
    ))
    .await;
    let failures = || entry.counters.failures.get();
    let base = failures();
    store.spawn_refreshers();
    file.remove();
    // The first failure is the refresh ahead at 9 s; then waits of 2, 4, 8, 16, 32, 60, 60 s.
    let retries = [9, 11, 15, 23, 39, 71, 131, 191];
    let mut now = Duration::ZERO;
    for (n, at) in retries.iter().enumerate() {
        let at = Duration::from_secs(*at);
        elapse(at - Duration::from_millis(100) - now).await;
        assert_eq!(failures() - base, n as u64, "before the retry at {at:?}");
        elapse(Duration::from_millis(200)).await;
        assert_eq!(failures() - base, n as u64 + 1, "after the retry at {at:?}");
        now = at + Duration::from_millis(100);
    }
    // The file comes back: the next retry (60 s later) succeeds.
    file.write("alpha-2");
    elapse(Duration::from_secs(251) - Duration::from_millis(100) - now).await;
    assert_eq!(text(&current(&entry)), "alpha-1");
    elapse(Duration::from_millis(200)).await;
    let recovered = current(&entry);
    assert_eq!(text(&recovered), "alpha-2");
    assert_eq!(recovered.fetched_at - start, Duration::from_secs(251));
    // Healthy again: the next read is a refresh ahead (9 s), and the backoff starts over.
    file.remove();
    elapse(Duration::from_millis(8_800)).await;
    assert_eq!(failures() - base, 8);
    elapse(Duration::from_millis(200)).await;
    assert_eq!(failures() - base, 9, "refresh ahead at 260 s");
    elapse(Duration::from_millis(1_800)).await;
    assert_eq!(failures() - base, 9);
    elapse(Duration::from_millis(200)).await;
    assert_eq!(failures() - base, 10, "retried after 2 s again");
}

#[tokio::test(start_paused = true)]
async fn stale_requests_wake_the_refresher_at_most_once_per_interval() {
    let file = FileSecret::new("alpha-1");
    let (store, entry) = store_for(&config_with(
        &file.reference(),
        None,
        &["cache_ttl_seconds: 1", "max_stale_seconds: 1"],
    ))
    .await;
    let failures = || entry.counters.failures.get();
    let base = failures();
    store.spawn_refreshers();
    file.remove();
    // A request every 10 ms for 4 s.
    let mut refused = 0;
    for step in 1..=400 {
        elapse(Duration::from_millis(10)).await;
        match served(&store, &entry).await {
            Ok(value) => {
                assert_eq!(value, "alpha-1");
                assert!(step <= 200, "served after 2 s (step {step})");
            }
            Err(SecretError::Stale { .. }) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        refused, 200,
        "refused once older than cache_ttl + max_stale"
    );
    // The refresh ahead at 0.9 s, then one request-triggered refresh at 2.01 s; the next
    // backoff retry (6.01 s) and the next request wake (7.01 s) fall after the 4 s.
    assert_eq!(
        failures() - base,
        2,
        "200 stale requests caused one store read, not one each"
    );
    // The store comes back: the backoff retry at 6.01 s recovers the secret.
    file.write("alpha-2");
    elapse(Duration::from_secs(2)).await;
    assert!(matches!(
        served(&store, &entry).await,
        Err(SecretError::Stale { .. })
    ));
    elapse(Duration::from_millis(20)).await;
    assert_eq!(served(&store, &entry).await.expect("recovered"), "alpha-2");
}

#[tokio::test(start_paused = true)]
async fn after_a_401_the_store_is_read_at_most_once_per_interval() {
    let file = FileSecret::new("alpha-1");
    let (store, entry) = store_for(&config_with(
        &file.reference(),
        None,
        &["cache_ttl_seconds: 3600"],
    ))
    .await;
    let used = store.read(&entry).await.expect("read");
    // Unchanged: nothing newer, and the check is spent for 10 s.
    assert!(store.newer_than(&entry, &used).await.is_none());
    file.write("alpha-2");
    assert!(store.newer_than(&entry, &used).await.is_none());
    tokio::time::advance(UNAUTHORIZED_CHECK_INTERVAL - Duration::from_millis(1)).await;
    assert!(
        store.newer_than(&entry, &used).await.is_none(),
        "no second store read within the interval"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let newer = store
        .newer_than(&entry, &used)
        .await
        .expect("read again after the interval");
    assert_eq!(text(&newer), "alpha-2");
    assert!(Arc::ptr_eq(&newer, &current(&entry)), "and installed");
    // Another request that used the old value now finds the new one without a read.
    let again = store.newer_than(&entry, &used).await.expect("newer");
    assert!(Arc::ptr_eq(&again, &newer));
}

#[tokio::test(start_paused = true)]
async fn an_env_secret_never_goes_stale() {
    let config = config_with(
        "env:API_KEY",
        None,
        &["cache_ttl_seconds: 1", "max_stale_seconds: 0"],
    );
    let store = SecretStore::build(&config, &|name| {
        (name == "API_KEY").then(|| "k-1".to_string())
    })
    .await
    .expect("store");
    let entry = store
        .entry(&config.routes[0].credential.secret)
        .expect("entry");
    tokio::time::advance(Duration::from_secs(86_400)).await;
    assert_eq!(served(&store, &entry).await.expect("served"), "k-1");
}

// --- events: no refresher, no network --------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn version_events_and_rotation_reminders_are_rate_limited_per_secret() {
    let config = config_with(
        "projects/acme/secrets/stripe-key/versions/latest",
        None,
        // Never contacted: no refresher is started.
        &["secret_manager: { endpoint: \"http://127.0.0.1:9\", credentials: anonymous }"],
    );
    let (store, _) = store_for(&config).await;
    // Events name the project by number; before the first read the secret id must match.
    let event = "projects/123456/secrets/stripe-key";
    let resource = "projects/acme/secrets/stripe-key".to_string();
    assert_eq!(
        store.on_version_event(event),
        EventOutcome::Refreshing(vec![resource.clone()])
    );
    for _ in 0..19 {
        assert_eq!(store.on_version_event(event), EventOutcome::RateLimited);
    }
    assert_eq!(
        store.on_version_event("projects/123456/secrets/other"),
        EventOutcome::Ignored
    );
    tokio::time::advance(EVENT_INTERVAL - Duration::from_millis(1)).await;
    assert_eq!(store.on_version_event(event), EventOutcome::RateLimited);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        store.on_version_event(event),
        EventOutcome::Refreshing(vec![resource.clone()])
    );

    assert_eq!(store.rotation_reminders(event), vec![resource.clone()]);
    assert!(store.rotation_reminders(event).is_empty());
    assert!(
        store
            .rotation_reminders("projects/123456/secrets/other")
            .is_empty()
    );
    tokio::time::advance(ROTATION_REMINDER_INTERVAL - Duration::from_millis(1)).await;
    assert!(store.rotation_reminders(event).is_empty());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(store.rotation_reminders(event), vec![resource]);
}

// --- Secret Manager over the wire, on a frozen clock -----------------------------------------

/// Secret Manager's v1 REST API, only `versions/{v}:access`, as the real client calls it:
/// the answer's name carries the project number and the resolved version. Counts calls, and
/// can hold every answer until released (a slow store).
struct FakeSecretManager {
    shared: Arc<SmShared>,
    endpoint: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct SmShared {
    versions: Mutex<Vec<String>>,
    open: tokio::sync::watch::Sender<bool>,
    calls: AtomicUsize,
    answered: AtomicUsize,
}

impl FakeSecretManager {
    fn start(first: &str) -> Self {
        let shared = Arc::new(SmShared {
            versions: Mutex::new(vec![first.to_string()]),
            open: tokio::sync::watch::Sender::new(true),
            calls: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(sm_access)
            .with_state(shared.clone());
        let (addr, stop) = serve_on_own_thread(app);
        FakeSecretManager {
            shared,
            endpoint: format!("http://{addr}"),
            _stop: stop,
        }
    }

    fn add_version(&self, data: &str) {
        self.shared
            .versions
            .lock()
            .expect("lock")
            .push(data.to_string());
    }

    /// Access calls received (counted when they arrive, before any hold).
    fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Access calls answered.
    fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// Holds answers (`false`) until released (`true`).
    fn set_open(&self, open: bool) {
        self.shared.open.send_replace(open);
    }

    fn config(&self, secret: &str, settings: &[&str]) -> Config {
        let endpoint = format!(
            "secret_manager: {{ endpoint: \"{}\", credentials: anonymous }}",
            self.endpoint
        );
        let mut all = vec![endpoint.as_str()];
        all.extend_from_slice(settings);
        config_with(secret, None, &all)
    }
}

async fn sm_access(
    axum::extract::State(fake): axum::extract::State<Arc<SmShared>>,
    uri: http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    fake.calls.fetch_add(1, Ordering::SeqCst);
    let _ = fake.open.subscribe().wait_for(|open| *open).await;
    let answer = |status: u16, body: serde_json::Value| {
        (
            http::StatusCode::from_u16(status).expect("status"),
            axum::Json(body),
        )
            .into_response()
    };
    let path = uri.path().to_string();
    let Some((secret, version)) = path
        .strip_prefix("/v1/projects/acme/secrets/")
        .and_then(|rest| rest.strip_suffix(":access"))
        .and_then(|rest| rest.split_once("/versions/"))
    else {
        return answer(
            404,
            serde_json::json!({"error": {"code": 404, "status": "NOT_FOUND", "message": path}}),
        );
    };
    let versions = fake.versions.lock().expect("lock").clone();
    let number = match version {
        "latest" => versions.len(),
        n => n.parse().expect("version number"),
    };
    let data = versions[number - 1].as_bytes();
    let response = answer(
        200,
        serde_json::json!({
            "name": format!("projects/123456/secrets/{secret}/versions/{number}"),
            "payload": {
                "data": base64::engine::general_purpose::STANDARD.encode(data),
                "dataCrc32c": i64::from(crc32c::crc32c(data)).to_string(),
            }
        }),
    );
    fake.answered.fetch_add(1, Ordering::SeqCst);
    response
}

fn version(entry: &SecretEntry) -> Option<String> {
    entry.current().and_then(|f| f.version.clone())
}

#[tokio::test(start_paused = true)]
async fn a_pinned_version_is_read_once_and_never_goes_stale() {
    let _frozen = Frozen::new();
    let sm = FakeSecretManager::start("pinned-1");
    sm.add_version("newer-2");
    let config = sm.config(
        "projects/acme/secrets/pinned-key/versions/1",
        &["cache_ttl_seconds: 1", "max_stale_seconds: 0"],
    );
    let (store, entry) = store_for(&config).await;
    assert!(!entry.refreshes());
    // Its refresher warms it, then ends.
    let warmer = tokio::spawn(store.clone().refresh_loop(entry.clone()));
    until("the warmer read the pinned version and ended", || {
        warmer.is_finished()
    })
    .await;
    assert_eq!(sm.calls(), 1);
    assert_eq!(version(&entry).as_deref(), Some("1"));
    // A day of TTLs later: still served, never re-read.
    for _ in 0..24 {
        tokio::time::advance(Duration::from_secs(3600)).await;
        let fetched = store
            .read(&entry)
            .now_or_never()
            .expect("no wait")
            .expect("served");
        assert_eq!(text(&fetched), "pinned-1");
    }
    assert_eq!(sm.calls(), 1, "one store call in a day at a 1 s TTL");
}

#[tokio::test(start_paused = true)]
async fn requests_past_the_ttl_never_wait_for_a_slow_store() {
    let _frozen = Frozen::new();
    let start = Instant::now();
    let sm = FakeSecretManager::start("v1-value");
    let config = sm.config(
        "projects/acme/secrets/slow-store-key/versions/latest",
        &["cache_ttl_seconds: 10"],
    );
    let (store, entry) = store_for(&config).await;
    store.spawn_refreshers();
    until("warmed", || version(&entry).is_some()).await;
    sm.add_version("v2-value");
    sm.set_open(false);
    tokio::time::advance(Duration::from_secs(9)).await;
    until("the refresh ahead reached the store", || sm.calls() == 2).await;
    // The store holds its answer; the TTL runs out meanwhile.
    let stale_serves = entry.counters.stale.get();
    for step in 1..=20 {
        tokio::time::advance(Duration::from_millis(100)).await;
        let fetched = store
            .read(&entry)
            .now_or_never()
            .expect("a request never waits for the store")
            .expect("the last good value");
        assert_eq!(text(&fetched), "v1-value", "step {step}");
    }
    assert_eq!(
        entry.counters.stale.get(),
        stale_serves + 10,
        "the reads past 10 s were stale serves"
    );
    assert_eq!(sm.answered(), 1, "the refresh was in flight all along");
    sm.set_open(true);
    until("the refresh installed v2", || {
        version(&entry).as_deref() == Some("2")
    })
    .await;
    let fetched = store
        .read(&entry)
        .now_or_never()
        .expect("no wait")
        .expect("served");
    assert_eq!(text(&fetched), "v2-value");
    assert_eq!(
        fetched.fetched_at - start,
        Duration::from_secs(11),
        "read when the answer came"
    );
    assert_eq!(sm.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn store_calls_stay_at_one_per_refresh_whatever_the_request_rate() {
    let _frozen = Frozen::new();
    let sm = FakeSecretManager::start("value-1");
    let config = sm.config(
        "projects/acme/secrets/busy-key/versions/latest",
        &["cache_ttl_seconds: 1"],
    );
    let (store, entry) = store_for(&config).await;
    store.spawn_refreshers();
    until("warmed", || version(&entry).is_some()).await;
    // 3 s in 10 ms steps, 100 requests per step; a new version before each refresh ahead
    // (every 0.9 s), so each refresh is seen in what is served.
    let mut served_requests = 0;
    for step in 1..=300u32 {
        // At 0.9, 1.8 and 2.7 s: versions 2, 3 and 4.
        let refreshed = (step * 10) % 900 == 0;
        let want = (1 + step * 10 / 900).to_string();
        if refreshed {
            sm.add_version(&format!("value-{want}"));
        }
        tokio::time::advance(Duration::from_millis(10)).await;
        if refreshed {
            until("the refresh ahead installed the new version", || {
                version(&entry).as_deref() == Some(want.as_str())
            })
            .await;
        }
        for _ in 0..100 {
            store
                .read(&entry)
                .now_or_never()
                .expect("no wait")
                .expect("served");
            served_requests += 1;
        }
    }
    assert_eq!(served_requests, 30_000);
    assert_eq!(
        sm.calls(),
        4,
        "the warm read and the refreshes at 0.9, 1.8 and 2.7 s: none per request"
    );
}
