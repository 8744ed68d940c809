//! Route validation: upstream, credential, rules, headers, limits and source ranges of one
//! `routes.NAME` block, every problem with its key path.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue, Method};

use super::raw::*;
use super::validate::Validator;
use super::*;
use crate::inject::Injection;
use crate::policy::PathPattern;

impl Validator<'_> {
    pub(super) fn route(&mut self, name: String, raw: RawRoute) -> Option<RouteSpec> {
        let p = format!("routes.{name}");
        let mut ok = true;
        if !valid_route_name(&name) {
            self.error(
                &p,
                format!("route name `{name}` must be 1-63 characters of a-z, A-Z, 0-9, `-`, `_` and `.`, not starting with `_` or `.` (it is the first path segment)"),
            );
            ok = false;
        }
        let upstream = self.upstream(&format!("{p}.upstream"), &raw.upstream);
        let credential = self.credential(&format!("{p}.credential"), raw.credential);

        let mut upstream_tls = None;
        if let Some(tls) = &raw.upstream_tls {
            if upstream
                .as_ref()
                .is_some_and(|u| u.origin.starts_with("http://"))
            {
                self.error(
                    &format!("{p}.upstream_tls"),
                    "needs an https:// upstream: over http:// no client certificate would be sent",
                );
                ok = false;
            }
            let mut reference = |key: &str, text: &str| match SecretRef::parse(text) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.error(&format!("{p}.upstream_tls.{key}"), e);
                    None
                }
            };
            let certificate = reference("client_certificate", &tls.client_certificate);
            let key = reference("client_key", &tls.client_key);
            let ca_bundle = tls.ca_bundle.as_deref().map(|c| reference("ca_bundle", c));
            match (certificate, key, ca_bundle) {
                (Some(certificate), Some(key), None) => {
                    upstream_tls = Some(UpstreamTls {
                        certificate,
                        key,
                        ca_bundle: None,
                    });
                }
                (Some(certificate), Some(key), Some(Some(ca))) => {
                    upstream_tls = Some(UpstreamTls {
                        certificate,
                        key,
                        ca_bundle: Some(ca),
                    });
                }
                _ => ok = false,
            }
        }
        let mut source_ranges = None;
        if let Some(ranges) = &raw.source_ranges {
            let mut nets = Vec::with_capacity(ranges.len());
            if ranges.is_empty() {
                self.error(
                    &format!("{p}.source_ranges"),
                    "an empty list would refuse every request: remove the key to allow any address",
                );
                ok = false;
            }
            for (i, text) in ranges.iter().enumerate() {
                let parsed = text
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from));
                match parsed {
                    Ok(net) => nets.push(net.trunc()),
                    Err(_) => {
                        self.error(
                            &format!("{p}.source_ranges[{i}]"),
                            format!(
                                "`{text}` is not a CIDR range such as 10.8.0.0/24 or 2001:db8::/32"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            source_ranges = Some(nets);
        }
        let mut rate = |key: &str, raw: &Option<RawRate>| match raw {
            None => None,
            Some(r) => match crate::limit::RateSpec::parse(r.per_second, r.burst) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    self.error(&format!("{p}.{key}"), e);
                    None
                }
            },
        };
        let rate_limit = rate("rate_limit", &raw.rate_limit);
        let route_rate_limit = rate("route_rate_limit", &raw.route_rate_limit);
        ok &= raw.rate_limit.is_none() || rate_limit.is_some();
        ok &= raw.route_rate_limit.is_none() || route_rate_limit.is_some();

        if raw.allow.is_empty() {
            self.push(
                Severity::Warning,
                &format!("{p}.allow"),
                "no allow rules: every request to this route will be refused",
            );
        }
        let mut allow = Vec::with_capacity(raw.allow.len());
        for (i, rule) in raw.allow.into_iter().enumerate() {
            match self.rule(&format!("{p}.allow[{i}]"), rule) {
                Some(rule) => allow.push(rule),
                None => ok = false,
            }
        }

        let mut shadow_allow = None;
        if let Some(raw_shadow) = raw.shadow_allow {
            if raw_shadow.is_empty() {
                self.push(
                    Severity::Warning,
                    &format!("{p}.shadow_allow"),
                    "an empty shadow_allow judges every request a shadow deny: remove the key to judge nothing",
                );
            }
            let mut rules = Vec::with_capacity(raw_shadow.len());
            for (i, rule) in raw_shadow.into_iter().enumerate() {
                match self.rule(&format!("{p}.shadow_allow[{i}]"), rule) {
                    Some(rule) => rules.push(rule),
                    None => ok = false,
                }
            }
            shadow_allow = Some(rules);
        }

        let injected_header = credential.as_ref().and_then(|c| c.inject.owned_header());
        let mut request_headers_set = Vec::new();
        for (hname, value) in raw.request_headers.set {
            let hp = format!("{p}.request_headers.set.{hname}");
            let Some(header) = self.header_name(&hp, &hname) else {
                ok = false;
                continue;
            };
            if crate::headers::is_protected_request_header(&header)
                || Some(&header) == injected_header.as_ref()
            {
                self.error(
                    &hp,
                    format!("`{hname}` cannot be set here: credproxy owns it (credentials are injected with credential.inject)"),
                );
                ok = false;
                continue;
            }
            match HeaderValue::from_str(&value) {
                Ok(v) => request_headers_set.push((header, v)),
                Err(_) => {
                    self.error(
                        &hp,
                        "header value has characters not allowed in HTTP headers",
                    );
                    ok = false;
                }
            }
        }
        let mut request_headers_remove = Vec::new();
        for (i, hname) in raw.request_headers.remove.iter().enumerate() {
            match self.header_name(&format!("{p}.request_headers.remove[{i}]"), hname) {
                Some(h) => request_headers_remove.push(h),
                None => ok = false,
            }
        }
        let mut response_headers_remove = Vec::new();
        for (i, hname) in raw.response_headers.remove.iter().enumerate() {
            match self.header_name(&format!("{p}.response_headers.remove[{i}]"), hname) {
                Some(h) => response_headers_remove.push(h),
                None => ok = false,
            }
        }

        let timeout = self.seconds(&format!("{p}.timeout_seconds"), raw.timeout_seconds, 30);
        let idle_timeout = self.seconds(
            &format!("{p}.idle_timeout_seconds"),
            raw.idle_timeout_seconds,
            60,
        );
        let max_body_bytes = match raw.max_body_bytes {
            None => 10 * 1024 * 1024,
            Some(v) if v >= 0 => v as u64,
            Some(v) => {
                self.error(
                    &format!("{p}.max_body_bytes"),
                    format!("must be 0 or more bytes, got {v}"),
                );
                ok = false;
                0
            }
        };
        if let Some(c) = &credential
            && c.inject.needs_body()
            && max_body_bytes > BODY_BUDGET_BYTES
        {
            self.error(
                &format!("{p}.max_body_bytes"),
                format!(
                    "{max_body_bytes} bytes is over the {} MiB credproxy holds in memory for all signed bodies together: this route signs its body, so it must be held whole; use at most {BODY_BUDGET_BYTES}",
                    BODY_BUDGET_BYTES / (1024 * 1024)
                ),
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        Some(RouteSpec {
            name,
            upstream: upstream?,
            credential: credential?,
            allow,
            shadow_allow,
            request_headers_set,
            request_headers_remove,
            response_headers_remove,
            timeout,
            idle_timeout,
            max_body_bytes,
            scrub_responses: raw.scrub_responses.unwrap_or(true),
            source_ranges,
            upstream_tls,
            rate_limit,
            route_rate_limit,
        })
    }

    fn header_name(&mut self, path: &str, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.error(path, format!("`{name}` is not a valid HTTP header name"));
                None
            }
        }
    }

    fn upstream(&mut self, path: &str, text: &str) -> Option<Upstream> {
        let url = self.url(path, text)?;
        if url.query().is_some() || url.fragment().is_some() {
            self.error(
                path,
                "an upstream may carry a base path but no query or fragment",
            );
            return None;
        }
        let host = url.host_str()?.to_string();
        let origin = match url.port() {
            Some(port) => format!("{}://{}:{port}", url.scheme(), host),
            None => format!("{}://{}", url.scheme(), host),
        };
        let base_path = url.path().trim_end_matches('/').to_string();
        let parsed = match http::Uri::try_from(origin.as_str()) {
            Ok(uri) => uri,
            Err(err) => {
                self.error(
                    path,
                    format!("`{origin}` is not a usable upstream origin: {err}"),
                );
                return None;
            }
        };
        let (Some(scheme), Some(authority)) =
            (parsed.scheme().cloned(), parsed.authority().cloned())
        else {
            self.error(path, format!("`{origin}` is not a usable upstream origin"));
            return None;
        };
        Some(Upstream {
            origin,
            base_path,
            scheme,
            authority,
        })
    }

    fn credential(&mut self, p: &str, raw: RawCredential) -> Option<CredentialSpec> {
        let secret = match SecretRef::parse(&raw.secret) {
            Ok(r) => Some(r),
            Err(e) => {
                self.error(&format!("{p}.secret"), e);
                None
            }
        };
        if raw.field.as_deref() == Some("") {
            self.error(&format!("{p}.field"), "field must not be empty");
        }
        let ip = format!("{p}.inject");
        let inject = match Injection::parse(raw.inject) {
            Ok(inject) => inject,
            Err(problems) => {
                for problem in problems {
                    let path = if problem.key.is_empty() {
                        ip.clone()
                    } else {
                        format!("{ip}.{}", problem.key)
                    };
                    self.error(&path, problem.message);
                }
                return None;
            }
        };
        Some(CredentialSpec {
            secret: secret?,
            field: raw.field,
            inject,
        })
    }

    fn rule(&mut self, p: &str, raw: RawRule) -> Option<Rule> {
        let id = rule_id(p, &raw);
        let mut ok = true;
        for (key, empty) in [
            ("callers", raw.callers.is_empty()),
            ("methods", raw.methods.is_empty()),
            ("paths", raw.paths.is_empty()),
        ] {
            if empty {
                self.error(
                    &format!("{p}.{key}"),
                    format!("a rule needs at least one entry in `{key}`"),
                );
                ok = false;
            }
        }
        let mut callers = Vec::new();
        for (i, c) in raw.callers.iter().enumerate() {
            match CallerPattern::parse(c) {
                Ok(c) => callers.push(c),
                Err(e) => {
                    self.error(&format!("{p}.callers[{i}]"), e);
                    ok = false;
                }
            }
        }
        let mut methods = Vec::new();
        for (i, m) in raw.methods.iter().enumerate() {
            match parse_method(m) {
                Ok(m) => methods.push(m),
                Err(e) => {
                    self.error(&format!("{p}.methods[{i}]"), e);
                    ok = false;
                }
            }
        }
        let mut paths = Vec::new();
        for (i, text) in raw.paths.iter().enumerate() {
            match PathPattern::parse(text) {
                Ok(pat) => paths.push(pat),
                Err(e) => {
                    self.error(&format!("{p}.paths[{i}]"), e);
                    ok = false;
                }
            }
        }
        let expires = match raw.expires.as_deref() {
            None => None,
            Some(text) => match DateTime::parse_from_rfc3339(text) {
                Ok(t) => {
                    let t = t.with_timezone(&Utc);
                    let now = Utc::now();
                    if t <= now {
                        self.push(
                            Severity::Warning,
                            &format!("{p}.expires"),
                            format!("this grant expired at {text}: it no longer allows anything"),
                        );
                    } else if t - now < chrono::Duration::days(7) {
                        self.push(
                            Severity::Warning,
                            &format!("{p}.expires"),
                            format!("this grant expires within 7 days ({text})"),
                        );
                    }
                    Some(t)
                }
                Err(_) => {
                    self.error(
                        &format!("{p}.expires"),
                        format!("`{text}` is not an RFC 3339 time with a zone, e.g. 2026-12-31T00:00:00Z"),
                    );
                    ok = false;
                    None
                }
            },
        };
        if !ok {
            return None;
        }
        Some(Rule {
            callers,
            methods,
            paths,
            expires,
            id,
        })
    }
}

/// The canonical JSON of a rule as written: the object of its keys `callers`, `methods`,
/// `paths` and (when set) `expires`, keys sorted, lists in the order written, values as
/// written, no whitespace (SPEC, "Least-privilege report and shadow rules").
pub(super) fn canonical_rule(raw: &RawRule) -> String {
    let mut object = std::collections::BTreeMap::new();
    object.insert("callers", serde_json::json!(raw.callers));
    object.insert("methods", serde_json::json!(raw.methods));
    object.insert("paths", serde_json::json!(raw.paths));
    if let Some(expires) = &raw.expires {
        object.insert("expires", serde_json::json!(expires));
    }
    serde_json::to_string(&object).unwrap_or_default()
}

/// `rule_hash`: the first 8 lower-case hex digits of SHA-256 of the canonical JSON.
pub fn rule_hash(canonical: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The attribution of the rule at key path `key`, computed once at load.
fn rule_id(key: &str, raw: &RawRule) -> crate::policy::RuleId {
    let canonical = canonical_rule(raw);
    crate::policy::RuleId {
        key: key.into(),
        hash: rule_hash(&canonical).into(),
        canonical: canonical.into(),
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    const ALLOWED: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let upper = text.to_ascii_uppercase();
    if ALLOWED.contains(&upper.as_str()) {
        Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "`{text}` is not a method credproxy forwards; use one of {}",
            ALLOWED.join(", ")
        ))
    }
}

fn valid_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['_', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != ".."
}

#[cfg(test)]
mod rule_id_tests {
    use super::*;

    fn raw(expires: Option<&str>) -> RawRule {
        RawRule {
            callers: vec!["Daily@acme.iam.gserviceaccount.com".to_string()],
            methods: vec!["GET".to_string(), "post".to_string()],
            paths: vec!["/v1/charges".to_string(), "/v1/charges/*".to_string()],
            expires: expires.map(str::to_string),
        }
    }

    #[test]
    fn canonical_json_is_sorted_compact_and_as_written() {
        assert_eq!(
            canonical_rule(&raw(None)),
            r#"{"callers":["Daily@acme.iam.gserviceaccount.com"],"methods":["GET","post"],"paths":["/v1/charges","/v1/charges/*"]}"#
        );
        assert_eq!(
            canonical_rule(&raw(Some("2026-12-31T00:00:00Z"))),
            r#"{"callers":["Daily@acme.iam.gserviceaccount.com"],"expires":"2026-12-31T00:00:00Z","methods":["GET","post"],"paths":["/v1/charges","/v1/charges/*"]}"#
        );
    }

    #[test]
    fn rule_hash_is_the_first_8_hex_of_sha256() {
        // printf '%s' '{"callers":...}' | sha256sum | cut -c1-8, computed outside credproxy.
        assert_eq!(rule_hash(&canonical_rule(&raw(None))), "a709e25e");
        assert_eq!(
            rule_hash(&canonical_rule(&raw(Some("2026-12-31T00:00:00Z")))),
            "92fb1f7e"
        );
        assert_eq!(rule_hash(""), "e3b0c442");
    }
}
