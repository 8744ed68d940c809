//! Semantic validation: the raw structs into the validated model, collecting every problem
//! with its key path and line instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

use super::raw::LineIndex;
use super::raw::*;
use super::*;

pub(super) struct Validator<'a> {
    pub(super) problems: Vec<Problem>,
    pub(super) lines: &'a LineIndex,
}

impl Validator<'_> {
    pub(super) fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            severity,
            path: path.to_string(),
            line: self.lines.locate(path),
            message: message.into(),
        });
    }

    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    pub(super) fn seconds(&mut self, path: &str, value: Option<i64>, default: u64) -> Duration {
        match value {
            None => Duration::from_secs(default),
            Some(v) if v > 0 => Duration::from_secs(v as u64),
            Some(v) => {
                self.error(
                    path,
                    format!("must be a whole number of seconds above 0, got {v}"),
                );
                Duration::from_secs(default)
            }
        }
    }

    pub(super) fn config(
        &mut self,
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Config> {
        let listen = match raw.listen {
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.error(
                        "listen",
                        format!("`{text}` is not an address:port such as 0.0.0.0:8080"),
                    );
                    None
                }
            },
            None => {
                let port = env("PORT");
                match port.as_deref().map(str::parse::<u16>) {
                    None => Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
                    Some(Ok(port)) => Some(SocketAddr::from(([0, 0, 0, 0], port))),
                    Some(Err(_)) => {
                        self.error(
                            "listen",
                            format!(
                                "listen is not set and $PORT=`{}` is not a port number",
                                port.unwrap_or_default()
                            ),
                        );
                        None
                    }
                }
            }
        };

        let server = self.server(&raw.server);
        let metrics = self.metrics(&raw.metrics);
        let rate_limits = self.rate_limits(raw.rate_limits);
        let decoys = self.decoys(&raw.decoys, &raw.routes);
        let events = raw.events.map(|e| self.events(e));
        let identity = match raw.identity {
            Some(identity) => self.identity(identity, env),
            None => {
                self.error(
                    "identity",
                    "the identity section is missing; it is required: at least `identity: { audiences: [\"https://YOUR-CREDPROXY-URL\"] }`",
                );
                None
            }
        };
        let secrets = self.secrets(raw.secrets, env);

        let mut routes = Vec::with_capacity(raw.routes.len());
        if raw.routes.is_empty() {
            self.push(
                Severity::Warning,
                "routes",
                "no routes are configured: every request will be refused",
            );
        }
        for (name, route) in raw.routes {
            if let Some(route) = self.route(name, route) {
                routes.push(route);
            }
        }
        Some(Config {
            listen: listen?,
            environment: raw.environment,
            project_id: raw.project_id,
            server,
            identity: identity?,
            secrets,
            events: events.flatten(),
            metrics,
            rate_limits,
            decoys,
            routes,
        })
    }

    fn metrics(&mut self, raw: &RawMetrics) -> MetricsSettings {
        let listen = raw
            .listen
            .as_deref()
            .and_then(|text| match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.error(
                        "metrics.listen",
                        format!("`{text}` is not an address:port such as 0.0.0.0:9090"),
                    );
                    None
                }
            });
        let mut callers = Vec::new();
        for (i, c) in raw.callers.iter().enumerate() {
            match CallerPattern::parse(c) {
                Ok(c) => callers.push(c),
                Err(e) => self.error(&format!("metrics.callers[{i}]"), e),
            }
        }
        if raw.enabled && listen.is_none() && callers.is_empty() {
            self.push(
                Severity::Warning,
                "metrics.callers",
                "no caller may read /_credproxy/metrics on the main port: list the scraper's service account, or set metrics.listen",
            );
        }
        MetricsSettings {
            enabled: raw.enabled,
            listen,
            callers,
        }
    }

    fn decoys(&mut self, raw: &RawDecoys, routes: &BTreeMap<String, RawRoute>) -> Decoys {
        let mut callers = Vec::new();
        for (i, c) in raw.callers.iter().enumerate() {
            match CallerPattern::parse(c) {
                Ok(c) => callers.push(c),
                Err(e) => self.error(&format!("decoys.callers[{i}]"), e),
            }
        }
        for (i, r) in raw.routes.iter().enumerate() {
            if routes.contains_key(r) {
                self.push(
                    Severity::Warning,
                    &format!("decoys.routes[{i}]"),
                    format!("`{r}` is also a configured route: every request to it will be refused and raise an alert"),
                );
            }
        }
        Decoys {
            routes: raw.routes.clone(),
            callers,
        }
    }

    fn events(&mut self, raw: RawEvents) -> Option<EventsSettings> {
        let audience = match raw.pubsub_push_audience.filter(|a| !a.trim().is_empty()) {
            Some(a) => Some(a),
            None => {
                self.error(
                    "events.pubsub_push_audience",
                    "required: the audience of the push subscription's OIDC token, e.g. https://CREDPROXY-URL/_credproxy/events/secret-manager",
                );
                None
            }
        };
        if raw.pubsub_push_callers.is_empty() {
            self.error(
                "events.pubsub_push_callers",
                "required: the push subscription's service account email(s)",
            );
        }
        let mut callers = Vec::new();
        for (i, c) in raw.pubsub_push_callers.iter().enumerate() {
            match CallerPattern::parse(c) {
                Ok(c) => callers.push(c),
                Err(e) => self.error(&format!("events.pubsub_push_callers[{i}]"), e),
            }
        }
        Some(EventsSettings {
            audience: audience?,
            callers,
        })
    }

    fn server(&mut self, raw: &RawServer) -> ServerSettings {
        let max_in_flight = match raw.max_in_flight {
            None => 1000,
            Some(v) if v > 0 => v as usize,
            Some(v) => {
                self.error(
                    "server.max_in_flight",
                    format!("must be at least 1, got {v}"),
                );
                1000
            }
        };
        let max_in_flight_per_caller = match raw.max_in_flight_per_caller {
            None => 100,
            Some(v) if v > 0 => v as usize,
            Some(v) => {
                self.error(
                    "server.max_in_flight_per_caller",
                    format!("must be at least 1, got {v}"),
                );
                100
            }
        };
        let trusted_proxy_hops = match raw.trusted_proxy_hops {
            None => 0,
            Some(v) if (0..=10).contains(&v) => v as usize,
            Some(v) => {
                self.error(
                    "server.trusted_proxy_hops",
                    format!("must be between 0 and 10, got {v} (1 behind Cloud Run's front end)"),
                );
                0
            }
        };
        ServerSettings {
            max_in_flight,
            max_in_flight_per_caller,
            header_read_timeout: self.seconds(
                "server.header_read_timeout_seconds",
                raw.header_read_timeout_seconds,
                10,
            ),
            body_idle_timeout: self.seconds(
                "server.body_idle_timeout_seconds",
                raw.body_idle_timeout_seconds,
                10,
            ),
            trusted_proxy_hops,
        }
    }

    fn identity(
        &mut self,
        raw: RawIdentity,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<IdentitySettings> {
        let mut ok = true;
        if raw.audiences.is_empty() {
            self.error(
                "identity.audiences",
                "at least one audience is required: the URL callers use for credproxy, e.g. https://credproxy-abc123-uc.a.run.app",
            );
            ok = false;
        }
        for (i, aud) in raw.audiences.iter().enumerate() {
            if aud.trim().is_empty() {
                self.error(
                    &format!("identity.audiences[{i}]"),
                    "audience must not be empty",
                );
                ok = false;
            }
        }
        let (jwks_text, jwks_path) = match env("CREDPROXY_JWKS_URL") {
            Some(url) => (url, "$CREDPROXY_JWKS_URL"),
            None => (
                raw.jwks_url.unwrap_or_else(|| GOOGLE_JWKS_URL.to_string()),
                "identity.jwks_url",
            ),
        };
        let jwks_url = match self.url(jwks_path, &jwks_text) {
            Some(url) => Some(url),
            None => {
                ok = false;
                None
            }
        };
        let issuers = raw
            .issuers
            .unwrap_or_else(|| GOOGLE_ISSUERS.iter().map(|s| s.to_string()).collect());
        if issuers.is_empty() {
            self.error("identity.issuers", "at least one issuer is required");
            ok = false;
        }
        let leeway_seconds = match raw.leeway_seconds {
            None => 30,
            Some(v) if (0..=300).contains(&v) => v as u64,
            Some(v) => {
                self.error(
                    "identity.leeway_seconds",
                    format!("must be between 0 and 300 seconds, got {v}"),
                );
                ok = false;
                30
            }
        };
        if !ok {
            return None;
        }
        Some(IdentitySettings {
            audiences: raw.audiences,
            jwks_url: jwks_url?,
            issuers,
            leeway_seconds,
            cloud_run_invoker_check: raw.cloud_run_invoker_check,
        })
    }

    /// Parses a URL that must be https, or http to a loopback host.
    pub(super) fn url(&mut self, path: &str, text: &str) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(e) => {
                self.error(path, format!("`{text}` is not a URL: {e}"));
                return None;
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                self.error(
                    path,
                    format!("`{text}` is plaintext http: use https (http is allowed only for loopback hosts, in tests and `dev`)"),
                );
                return None;
            }
            other => {
                self.error(
                    path,
                    format!("scheme `{other}` is not supported: use https"),
                );
                return None;
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            self.error(path, format!("`{text}` has no host"));
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.error(
                path,
                "credentials in the URL are not allowed: put them in a secret",
            );
            return None;
        }
        Some(url)
    }

    fn secrets(
        &mut self,
        raw: RawSecrets,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> SecretsSettings {
        let endpoint = env("CREDPROXY_SECRET_MANAGER_ENDPOINT").or(raw.secret_manager.endpoint);
        if let Some(c) = raw.secret_manager.credentials.as_deref()
            && c != "default"
            && c != "anonymous"
        {
            self.error(
                "secrets.secret_manager.credentials",
                format!("`{c}` is not one of: default, anonymous"),
            );
        }
        SecretsSettings {
            cache_ttl: self.seconds("secrets.cache_ttl_seconds", raw.cache_ttl_seconds, 60),
            max_stale: match raw.max_stale_seconds {
                None => Duration::from_secs(600),
                Some(v) if v >= 0 => Duration::from_secs(v as u64),
                Some(v) => {
                    self.error(
                        "secrets.max_stale_seconds",
                        format!("must be 0 or more seconds, got {v}"),
                    );
                    Duration::from_secs(600)
                }
            },
            warm_on_start: raw.warm_on_start.unwrap_or(true),
            secret_manager_endpoint: endpoint,
            secret_manager_anonymous: raw.secret_manager.credentials.as_deref()
                == Some("anonymous"),
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
