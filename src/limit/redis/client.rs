//! The Redis exchange of shared rate limits: one multiplexed connection per serving thread
//! (so its driver runs on the thread whose requests use it, as the upstream clients do),
//! (re)connected on demand, and one GCRA script per request through EVALSHA, falling back
//! to one EVAL on NOSCRIPT.
//!
//! `timeout_ms` bounds the whole exchange of one request: connecting when needed (TCP, TLS,
//! AUTH), EVALSHA, and the EVAL after NOSCRIPT. A connection that failed or
//! timed out is dropped, so the next call reconnects; a connection is also replaced when the
//! AUTH string or the CA bundle rotated (their generations are part of it). A refused AUTH
//! asks the store for a newer AUTH string (at most one read per 10 s), so rotating the
//! Memorystore AUTH string needs no restart.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::secrets::{Fetched, SecretEntry, SecretStore};

/// The GCRA script. KEYS: the limited keys of the request (caller key first when the route
/// has a per-caller limit). ARGV: per key, the emission interval in microseconds and the
/// burst. Time is the server's (`TIME`). A key admits when its theoretical arrival time,
/// after this request, is at most `burst` intervals ahead of now; the request is admitted
/// only if every key admits, and only then are the keys updated, each expiring when its
/// bucket would be full again. Returns `{admitted, wait_us per key}`: a key's wait is 0 when
/// it admits, else the microseconds until its next request would be admitted.
pub const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local admitted = 1
local tats = {}
local out = {0}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then
    admitted = 0
    out[i + 1] = allow_at - now
  else
    out[i + 1] = 0
    tats[i] = new_tat
  end
end
if admitted == 1 then
  for i = 1, #KEYS do
    local ttl = math.ceil((tats[i] - now) / 1000)
    redis.call('SET', KEYS[i], string.format('%d', tats[i]), 'PX', ttl)
  end
end
out[1] = admitted
return out
"#;

/// Why a call failed. The text never carries the AUTH string (the URL holds no credentials,
/// and Redis does not echo passwords).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// The exchange took longer than `timeout_ms`.
    #[error("no answer within {0} ms")]
    Timeout(u128),
    /// Connecting failed or the connection broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The TLS handshake failed (an untrusted certificate, a wrong host name).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// Redis refused the AUTH string.
    #[error("AUTH refused: {0}")]
    Auth(String),
    /// An error reply, or a reply of the wrong shape.
    #[error("error reply: {0}")]
    Reply(String),
    /// The AUTH string or CA bundle could not be read from its store.
    #[error("secret unavailable: {0}")]
    Secret(String),
}

impl Failure {
    /// The kind, for the log throttle and the log line.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout(_) => "timeout",
            Failure::Connect(_) => "connection",
            Failure::Tls(_) => "tls",
            Failure::Auth(_) => "auth",
            Failure::Reply(_) => "reply",
            Failure::Secret(_) => "secret",
        }
    }

    fn from_redis(err: &redis::RedisError, timeout: Duration) -> Self {
        let text = err.to_string();
        let lower = text.to_ascii_lowercase();
        if err.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(err.code(), Some("WRONGPASS" | "NOAUTH"))
            || lower.contains("wrongpass")
            || lower.contains("noauth")
            || lower.contains("invalid password")
        {
            Failure::Auth(text)
        } else if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
        {
            Failure::Tls(text)
        } else if err.is_timeout() {
            // The crate's own connect or response timeout (set to `timeout_ms` too).
            Failure::Timeout(timeout.as_millis())
        } else if err.is_io_error() || err.is_connection_refusal() || err.is_connection_dropped() {
            Failure::Connect(text)
        } else {
            Failure::Reply(text)
        }
    }

    /// Whether the connection must be replaced.
    fn breaks_connection(&self) -> bool {
        !matches!(self, Failure::Reply(_))
    }
}

/// One connection and the secret generations it was made with.
struct Conn {
    con: MultiplexedConnection,
    generations: (u64, u64),
}

#[derive(Default)]
struct Slot {
    current: ArcSwapOption<Conn>,
    /// One connect at a time per slot; others wait (within their own timeout).
    connecting: tokio::sync::Mutex<()>,
}

/// The AUTH string and CA bundle in use, with their generations.
struct Material {
    auth: Option<Arc<Fetched>>,
    ca: Option<Arc<Fetched>>,
    generations: (u64, u64),
}

/// The client of one Redis (or Valkey) server.
pub struct RedisClient {
    info: ConnectionInfo,
    tls: bool,
    store: Arc<SecretStore>,
    auth: Option<Arc<SecretEntry>>,
    ca: Option<Arc<SecretEntry>>,
    timeout: Duration,
    slots: Vec<Slot>,
    script: redis::Script,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisClient({:?})", self.info.addr())
    }
}

impl RedisClient {
    /// A client for `url` (validated by the config: no credentials in it), its AUTH string and
    /// CA bundle read from their store entries, one connection per serving thread.
    pub fn new(
        url: &url::Url,
        store: Arc<SecretStore>,
        auth: Option<Arc<SecretEntry>>,
        ca: Option<Arc<SecretEntry>>,
        timeout: Duration,
        threads: usize,
    ) -> Result<Self, String> {
        // The upstream clients' provider; a no-op when one is installed already.
        let _ = rustls::crypto::CryptoProvider::install_default(
            rustls::crypto::aws_lc_rs::default_provider(),
        );
        let info = url
            .clone()
            .into_connection_info()
            .map_err(|e| format!("rate_limits.redis.url: {e}"))?;
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        Ok(RedisClient {
            info,
            tls,
            store,
            auth,
            ca,
            timeout,
            slots: (0..threads.max(1)).map(|_| Slot::default()).collect(),
            script: redis::Script::new(SCRIPT),
        })
    }

    /// The whole-exchange bound (`timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs the script on `keys` with `args` from serving thread `thread`, within
    /// `timeout_ms`. Returns the script's reply.
    pub async fn eval(
        &self,
        thread: usize,
        keys: &[&str],
        args: &[u64],
    ) -> Result<Vec<i64>, Failure> {
        let slot = self.slot(thread);
        match tokio::time::timeout(self.timeout, self.exchange(slot, keys, args)).await {
            Ok(result) => result,
            Err(_) => {
                // Whatever is pending on it will never be read: start afresh.
                slot.current.store(None);
                Err(Failure::Timeout(self.timeout.as_millis()))
            }
        }
    }

    /// A PING through the same connection path, within `timeout_ms` (the start-up check),
    /// on a connection of its own: the serving threads' connections are made on their
    /// threads.
    pub async fn ping(&self) -> Result<(), Failure> {
        let own = Slot::default();
        let slot = &own;
        let exchange = async {
            let conn = self.connection(slot).await?;
            let mut con = conn.con.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut con)
                .await
                .map(drop)
                .map_err(|e| {
                    let failure = Failure::from_redis(&e, self.timeout);
                    if failure.breaks_connection() {
                        slot.current.store(None);
                    }
                    failure
                })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                slot.current.store(None);
                Err(Failure::Timeout(self.timeout.as_millis()))
            }
        }
    }

    fn slot(&self, thread: usize) -> &Slot {
        self.slots
            .get(thread)
            .or_else(|| self.slots.first())
            .unwrap_or_else(|| unreachable!("at least one slot"))
    }

    async fn exchange(
        &self,
        slot: &Slot,
        keys: &[&str],
        args: &[u64],
    ) -> Result<Vec<i64>, Failure> {
        let conn = self.connection(slot).await?;
        let mut con = conn.con.clone();
        // EVALSHA; after NOSCRIPT (a restarted or failed-over Redis) one EVAL, which both
        // answers and caches the script for the next EVALSHA: two round trips, not the
        // three of SCRIPT LOAD + EVALSHA.
        let call = |command: &str, body: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(body).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        let reply = match call("EVALSHA", self.script.get_hash())
            .query_async::<Vec<i64>>(&mut con)
            .await
        {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                call("EVAL", SCRIPT).query_async::<Vec<i64>>(&mut con).await
            }
            other => other,
        };
        match reply {
            Ok(reply) => Ok(reply),
            Err(e) => {
                let failure = Failure::from_redis(&e, self.timeout);
                if failure.breaks_connection() {
                    slot.current
                        .compare_and_swap(&Some(conn.clone()), None::<Arc<Conn>>);
                }
                Err(failure)
            }
        }
    }

    async fn material(&self) -> Result<Material, Failure> {
        let read = |entry: &Option<Arc<SecretEntry>>, what: &'static str| {
            let entry = entry.clone();
            async move {
                match entry {
                    None => Ok(None),
                    Some(e) => self
                        .store
                        .read(&e)
                        .await
                        .map(Some)
                        .map_err(|err| Failure::Secret(format!("{what}: {err}"))),
                }
            }
        };
        let auth = read(&self.auth, "rate_limits.redis.auth").await?;
        let ca = read(&self.ca, "rate_limits.redis.ca_bundle").await?;
        let generations = (
            auth.as_ref().map_or(0, |f| f.generation),
            ca.as_ref().map_or(0, |f| f.generation),
        );
        Ok(Material {
            auth,
            ca,
            generations,
        })
    }

    async fn connection(&self, slot: &Slot) -> Result<Arc<Conn>, Failure> {
        let material = self.material().await?;
        let usable = |c: &Option<Arc<Conn>>| {
            c.as_ref()
                .filter(|c| c.generations == material.generations)
                .cloned()
        };
        if let Some(conn) = usable(&slot.current.load_full()) {
            return Ok(conn);
        }
        let _turn = slot.connecting.lock().await;
        if let Some(conn) = usable(&slot.current.load_full()) {
            return Ok(conn);
        }
        let con = self.connect(&material).await?;
        let conn = Arc::new(Conn {
            con,
            generations: material.generations,
        });
        slot.current.store(Some(conn.clone()));
        Ok(conn)
    }

    async fn connect(&self, material: &Material) -> Result<MultiplexedConnection, Failure> {
        let mut info = self.info.clone();
        if let Some(auth) = &material.auth {
            let password = std::str::from_utf8(auth.payload()).map_err(|_| {
                Failure::Secret("rate_limits.redis.auth: the AUTH string is not UTF-8".to_string())
            })?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match (&material.ca, self.tls) {
            (Some(ca), true) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.payload().to_vec()),
                },
            ),
            _ => redis::Client::open(info),
        }
        .map_err(|e| Failure::Tls(format!("rate_limits.redis.ca_bundle: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(con) => Ok(con),
            Err(e) => {
                let failure = Failure::from_redis(&e, self.timeout);
                if let (Failure::Auth(_), Some(entry), Some(used)) =
                    (&failure, &self.auth, &material.auth)
                {
                    // Maybe the AUTH string rotated: look for a newer one, off the request
                    // path; the next connect uses whatever the store then holds.
                    let (store, entry, used) = (self.store.clone(), entry.clone(), used.clone());
                    tokio::spawn(async move {
                        if store.newer_than(&entry, &used).await.is_some() {
                            tracing::info!(
                                "rate_limits.redis.auth has a newer value; reconnecting with it"
                            );
                        }
                    });
                }
                Err(failure)
            }
        }
    }
}
