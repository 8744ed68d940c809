//! A real `redis-server` (Debian's package) on a free loopback port with its own temp dir,
//! killed when dropped. Tests that need it fail, naming the install command, when it is
//! missing (`.ci/run` installs it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// The `redis-server` binary, or a panic saying how to install it.
fn binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = PathBuf::from(dir).join("redis-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    for fixed in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(fixed).is_file() {
            return PathBuf::from(fixed);
        }
    }
    panic!(
        "redis-server is not installed; the shared rate limit tests run a real one: \
         apt-get install -y --no-install-recommends redis-server (.ci/run installs it)"
    );
}

/// A free loopback port (bound and released; redis-server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// TLS material for `--tls-port`: a CA, and a server certificate for 127.0.0.1 it signed.
pub struct TlsFiles {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    tls: bool,
}

impl RedisServer {
    /// Plaintext on a free port, with `extra` arguments (e.g. `--requirepass pw`).
    pub async fn start(extra: &[&str]) -> RedisServer {
        Self::launch(free_port(), extra, None).await
    }

    /// TLS only (`--port 0 --tls-port P`) with a certificate for 127.0.0.1 signed by a test
    /// CA; returns the server and the CA's PEM.
    pub async fn start_tls(extra: &[&str]) -> (RedisServer, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = tls_files(dir.path());
        let ca_pem = files.ca_pem.clone();
        let server = Self::launch_in(dir, free_port(), extra, Some(files)).await;
        (server, ca_pem)
    }

    async fn launch(port: u16, extra: &[&str], tls: Option<TlsFiles>) -> RedisServer {
        Self::launch_in(tempfile::tempdir().expect("tempdir"), port, extra, tls).await
    }

    async fn launch_in(
        dir: tempfile::TempDir,
        port: u16,
        extra: &[&str],
        tls: Option<TlsFiles>,
    ) -> RedisServer {
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--logfile".into(),
            dir.path().join("redis.log").display().to_string(),
        ];
        let is_tls = tls.is_some();
        match &tls {
            None => args.extend(["--port".into(), port.to_string()]),
            Some(files) => args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                files.cert.display().to_string(),
                "--tls-key-file".into(),
                files.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                files.ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]),
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            args,
            tls: is_tls,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let _ = std::fs::remove_file(&log);
        let child = Command::new(binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start within 10 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `redis://127.0.0.1:PORT` (or `rediss://` for TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// kill -9, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same arguments (empty: nothing was saved).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// A command over a plaintext connection, authenticated with `password` if given.
    pub fn query(&self, password: Option<&str>, args: &[&str]) -> redis::Value {
        assert!(!self.tls, "query() speaks plaintext");
        let mut info = format!("redis://127.0.0.1:{}", self.port)
            .as_str()
            .into_connection_info()
            .expect("info");
        if let Some(pw) = password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).expect("client");
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to redis-server");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con).expect("redis command")
    }

    /// A command's reply as text (bulk strings, status).
    pub fn text(&self, password: Option<&str>, args: &[&str]) -> String {
        match self.query(password, args) {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::SimpleString(s) => s,
            redis::Value::VerbatimString { text, .. } => text,
            other => format!("{other:?}"),
        }
    }

    /// How many times `command` ran (`INFO commandstats`), e.g. `evalsha`.
    pub fn calls(&self, password: Option<&str>, command: &str) -> u64 {
        let info = self.text(password, &["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Every key (SCAN).
    pub fn keys(&self, password: Option<&str>) -> Vec<String> {
        let mut cursor = "0".to_string();
        let mut out = Vec::new();
        loop {
            let reply = self.query(password, &["SCAN", &cursor, "COUNT", "1000"]);
            let redis::Value::Array(parts) = reply else {
                panic!("SCAN reply {reply:?}");
            };
            let (next, keys) = match parts.as_slice() {
                [redis::Value::BulkString(c), redis::Value::Array(keys)] => (c.clone(), keys),
                other => panic!("SCAN reply {other:?}"),
            };
            for k in keys {
                if let redis::Value::BulkString(b) = k {
                    out.push(String::from_utf8_lossy(b).into_owned());
                }
            }
            cursor = String::from_utf8_lossy(&next).into_owned();
            if cursor == "0" {
                return out;
            }
        }
    }
}

use redis::IntoConnectionInfo as _;

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA and a server certificate for 127.0.0.1 (and `localhost`), written under `dir`.
fn tls_files(dir: &std::path::Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "credproxy test redis CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write tls file");
        path
    };
    TlsFiles {
        ca_pem: ca.pem(),
        cert: write("server.crt", &cert.pem()),
        key: write("server.key", &key.serialize_pem()),
        ca: write("ca.crt", &ca.pem()),
    }
}

/// A CA no server here uses, for the "untrusted certificate" case.
pub fn other_ca_pem() -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    tls_files(dir.path()).ca_pem
}

/// A listener that accepts connections and never answers (nor closes them).
pub struct Silent {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Silent { port, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
