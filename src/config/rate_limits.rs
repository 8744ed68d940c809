//! `rate_limits:` validation: the backend, the Redis URL (plaintext only to loopback or
//! private IP literals), its secrets, timeout and prefix, the failure mode and
//! `max_instances`, every problem at its key path.

use std::net::IpAddr;
use std::time::Duration;

use super::raw::*;
use super::validate::Validator;
use super::*;
use crate::limit::shared::{DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT, FailureMode};

/// Largest accepted `timeout_ms`: a request waiting longer on its rate limit than on most
/// upstreams defeats the point.
pub const MAX_TIMEOUT_MS: i64 = 5000;
/// Largest accepted `max_instances`.
pub const MAX_INSTANCES: i64 = 1000;

impl Validator<'_> {
    pub(super) fn rate_limits(&mut self, raw: RawRateLimits) -> RateLimitsSettings {
        let backend = raw.backend.as_deref().unwrap_or("local");
        match backend {
            "local" => {
                if raw.redis.is_some() {
                    self.push(
                        Severity::Warning,
                        "rate_limits.redis",
                        "ignored with `backend: local`: set `backend: redis` to share the limits",
                    );
                }
                RateLimitsSettings::default()
            }
            "redis" => RateLimitsSettings {
                redis: self.redis(raw),
            },
            other => {
                self.error(
                    "rate_limits.backend",
                    format!("`{other}` is not one of: local, redis"),
                );
                RateLimitsSettings::default()
            }
        }
    }

    fn redis(&mut self, raw: RawRateLimits) -> Option<RedisSettings> {
        let mut ok = true;
        let mode = match raw.on_backend_failure.as_deref() {
            None => FailureMode::Local,
            Some(text) => FailureMode::parse(text).unwrap_or_else(|| {
                self.error(
                    "rate_limits.on_backend_failure",
                    format!("`{text}` is not one of: local, open, closed"),
                );
                ok = false;
                FailureMode::Local
            }),
        };
        let max_instances = match (raw.max_instances, mode) {
            (Some(n), _) if (1..=MAX_INSTANCES).contains(&n) => n as u32,
            (Some(n), _) => {
                self.error(
                    "rate_limits.max_instances",
                    format!("must be between 1 and {MAX_INSTANCES}, got {n}"),
                );
                ok = false;
                1
            }
            (None, FailureMode::Local) => {
                self.error(
                    "rate_limits.max_instances",
                    "required with `on_backend_failure: local`: the most instances that can run at once (Cloud Run's max instances); while Redis fails each enforces limit / max_instances",
                );
                ok = false;
                1
            }
            (None, _) => 1,
        };
        let Some(redis) = raw.redis else {
            self.error(
                "rate_limits.redis.url",
                "required with `backend: redis`: e.g. rediss://10.0.0.3:6378",
            );
            return None;
        };
        let url = match redis.url.as_deref() {
            None => {
                self.error(
                    "rate_limits.redis.url",
                    "required with `backend: redis`: e.g. rediss://10.0.0.3:6378",
                );
                None
            }
            Some(text) => self.redis_url("rate_limits.redis.url", text),
        };
        let mut reference = |key: &str, text: Option<&str>| match text.map(SecretRef::parse) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                self.error(&format!("rate_limits.redis.{key}"), e);
                ok = false;
                None
            }
        };
        let auth = reference("auth", redis.auth.as_deref());
        let ca_bundle = reference("ca_bundle", redis.ca_bundle.as_deref());
        if ca_bundle.is_some() && url.as_ref().is_some_and(|u| u.scheme() == "redis") {
            self.error(
                "rate_limits.redis.ca_bundle",
                "needs a rediss:// url: over plaintext redis:// no certificate is checked",
            );
            ok = false;
        }
        let timeout = match redis.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Duration::from_millis(ms as u64),
            Some(ms) => {
                self.error(
                    "rate_limits.redis.timeout_ms",
                    format!(
                        "must be between 1 and {MAX_TIMEOUT_MS} milliseconds, got {ms} (default 20)"
                    ),
                );
                ok = false;
                DEFAULT_TIMEOUT
            }
        };
        let key_prefix = redis
            .key_prefix
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
        if key_prefix.len() > 64
            || key_prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            self.error(
                "rate_limits.redis.key_prefix",
                "must be at most 64 characters without braces (the route is the hash tag), spaces or control characters",
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        Some(RedisSettings {
            url: url?,
            auth,
            ca_bundle,
            timeout,
            key_prefix,
            on_backend_failure: mode,
            max_instances,
        })
    }

    /// `redis://` only to loopback or private IP literals; `rediss://` anywhere. No
    /// credentials in the URL (they belong in `auth`).
    fn redis_url(&mut self, path: &str, text: &str) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(e) => {
                // The text may carry a password (a mistake `check` refuses below): never
                // echo what sits between `://` and the last `@`.
                self.error(
                    path,
                    format!("`{}` is not a URL: {e}", without_userinfo(text)),
                );
                return None;
            }
        };
        if !matches!(url.scheme(), "redis" | "rediss") {
            self.error(
                path,
                format!(
                    "scheme `{}` is not supported: use rediss:// (TLS) or redis://",
                    url.scheme()
                ),
            );
            return None;
        }
        if url.host_str().is_none_or(str::is_empty) {
            self.error(path, format!("`{}` has no host", without_userinfo(text)));
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.error(
                path,
                "credentials in the URL are not allowed: put the AUTH string in a secret and name it in rate_limits.redis.auth",
            );
            return None;
        }
        if !matches!(url.path(), "" | "/") && url.path()[1..].parse::<u16>().is_err() {
            self.error(
                path,
                format!(
                    "the path `{}` is not a database number such as /0",
                    url.path()
                ),
            );
            return None;
        }
        if url.query().is_some() || url.fragment().is_some() {
            self.error(path, "a query or fragment is not supported");
            return None;
        }
        if url.scheme() == "redis" && !plaintext_allowed(&url) {
            self.error(
                path,
                format!("`{text}` is plaintext redis:// to a host that is not a loopback or private IP literal: use rediss:// (Memorystore in-transit encryption), or a private address (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7)"),
            );
            return None;
        }
        Some(url)
    }
}

/// Loopback (`127.0.0.0/8`, `::1`, `localhost`) or a private IP literal (`10.0.0.0/8`,
/// `172.16.0.0/12`, `192.168.0.0/16`, `100.64.0.0/10`, `fc00::/7`).
fn plaintext_allowed(url: &Url) -> bool {
    let ip = match url.host() {
        // redis:// is not a special scheme: the URL parser leaves an IPv4 host as text.
        Some(url::Host::Domain(d)) => match d.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return d.eq_ignore_ascii_case("localhost"),
        },
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        None => return false,
    };
    const PRIVATE: [&str; 7] = [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ];
    PRIVATE
        .iter()
        .filter_map(|net| net.parse::<ipnet::IpNet>().ok())
        .any(|net| net.contains(&ip))
}

/// `text` with anything between `://` and the last `@` of the authority replaced by `***`.
fn without_userinfo(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    match text[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &text[start + at..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Severity, parse};

    const BASE: &str = "identity: { audiences: [a] }\nroutes: {}\n";

    #[test]
    fn a_url_that_does_not_parse_is_named_without_its_password() {
        for url in ["redis://:hunter2@/0", "redis://user:hunter2@10.0.0.3:99999"] {
            let found = problems(&format!(
                "rate_limits:\n  backend: redis\n  on_backend_failure: open\n  redis:\n    url: \"{url}\"\n"
            ));
            assert!(!found.is_empty(), "{url}: {found:?}");
            for (path, message) in &found {
                assert!(!message.contains("hunter2"), "{path}: {message}");
            }
            assert!(
                found
                    .iter()
                    .any(|(p, m)| p == "rate_limits.redis.url" && m.contains("***@")),
                "{found:?}"
            );
        }
        assert_eq!(
            super::without_userinfo("redis://10.0.0.3:6379"),
            "redis://10.0.0.3:6379"
        );
        assert_eq!(
            super::without_userinfo("rediss://a:b@c@host:1/0?x=@"),
            "rediss://***@host:1/0?x=@"
        );
    }

    fn problems(block: &str) -> Vec<(String, String)> {
        match parse(&format!("{BASE}{block}"), &|_| None) {
            Ok((_, warnings)) => warnings
                .into_iter()
                .filter(|p| p.severity == Severity::Error)
                .map(|p| (p.path, p.message))
                .collect(),
            Err(problems) => problems
                .0
                .into_iter()
                .filter(|p| p.severity == Severity::Error)
                .map(|p| (p.path, p.message))
                .collect(),
        }
    }

    fn settings(block: &str) -> crate::config::RedisSettings {
        parse(&format!("{BASE}{block}"), &|_| None)
            .unwrap_or_else(|p| panic!("{p}"))
            .0
            .rate_limits
            .redis
            .expect("redis")
    }

    #[test]
    fn defaults_and_a_full_block() {
        let s = settings(
            "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1:6379\" }, max_instances: 3 }\n",
        );
        assert_eq!(s.timeout.as_millis(), 20);
        assert_eq!(s.key_prefix, "credproxy:");
        assert_eq!(s.on_backend_failure.as_str(), "local");
        assert_eq!(s.max_instances, 3);
        let s = settings(
            "rate_limits:\n  backend: redis\n  redis:\n    url: \"rediss://redis.internal:6378\"\n    auth: \"projects/p/secrets/redis-auth/versions/latest\"\n    ca_bundle: \"env:REDIS_CA\"\n    timeout_ms: 50\n    key_prefix: \"cp:\"\n  on_backend_failure: closed\n",
        );
        assert_eq!(s.on_backend_failure.as_str(), "closed");
        assert_eq!(s.max_instances, 1, "not needed unless local");
        assert_eq!(s.references().count(), 2);
        let local = parse(
            &format!("{BASE}rate_limits: {{ backend: local }}\n"),
            &|_| None,
        )
        .expect("local")
        .0;
        assert!(local.rate_limits.redis.is_none());
    }

    #[test]
    fn plaintext_only_to_loopback_or_private_literals() {
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://localhost:6379",
            "redis://[::1]:6379",
            "redis://10.1.2.3:6379/2",
            "redis://172.16.0.9",
            "redis://192.168.1.1",
            "redis://100.64.0.1",
            "redis://[fd00::1]:6379",
            "rediss://redis.example.com:6378",
            "rediss://8.8.8.8:6378",
        ] {
            let block = format!(
                "rate_limits: {{ backend: redis, redis: {{ url: \"{ok}\" }}, on_backend_failure: open }}\n"
            );
            assert_eq!(problems(&block), vec![], "{ok}");
        }
        for bad in [
            "redis://8.8.8.8:6379",
            "redis://redis.internal:6379",
            "redis://172.32.0.1",
            "redis://[2001:db8::1]:6379",
        ] {
            let block = format!(
                "rate_limits: {{ backend: redis, redis: {{ url: \"{bad}\" }}, on_backend_failure: open }}\n"
            );
            let p = problems(&block);
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert_eq!(p[0].0, "rate_limits.redis.url");
            assert!(p[0].1.contains("plaintext"), "{p:?}");
        }
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let cases = [
            (
                "rate_limits: { backend: memcached }\n",
                "rate_limits.backend",
            ),
            (
                "rate_limits: { backend: redis, max_instances: 2 }\n",
                "rate_limits.redis.url",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\" } }\n",
                "rate_limits.max_instances",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\" }, max_instances: 0 }\n",
                "rate_limits.max_instances",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\" }, on_backend_failure: maybe }\n",
                "rate_limits.on_backend_failure",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\", timeout_ms: 0 }, on_backend_failure: open }\n",
                "rate_limits.redis.timeout_ms",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\", timeout_ms: 60000 }, on_backend_failure: open }\n",
                "rate_limits.redis.timeout_ms",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://:pw@127.0.0.1\" }, on_backend_failure: open }\n",
                "rate_limits.redis.url",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"http://127.0.0.1\" }, on_backend_failure: open }\n",
                "rate_limits.redis.url",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\", auth: \"vault:x\" }, on_backend_failure: open }\n",
                "rate_limits.redis.auth",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\", ca_bundle: \"env:CA\" }, on_backend_failure: open }\n",
                "rate_limits.redis.ca_bundle",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\", key_prefix: \"a{b}\" }, on_backend_failure: open }\n",
                "rate_limits.redis.key_prefix",
            ),
            (
                "rate_limits: { backend: redis, redis: { url: \"redis://127.0.0.1\", pasword: x }, on_backend_failure: open }\n",
                "rate_limits.redis.pasword",
            ),
        ];
        for (block, path) in cases {
            let p = problems(block);
            assert!(
                p.iter().any(|(at, _)| at == path),
                "{block}: expected a problem at {path}, got {p:?}"
            );
        }
    }
}
