//! Policy: path normalisation, caller and path patterns, and the default-deny rule matcher.
//!
//! This module does no I/O, so `credproxy explain` and the server share one matcher.
//! Patterns are compiled once at load; matching walks `str::split` iterators and allocates
//! nothing.
//!
//! Normalisation turns a request target into the route name, the *decoded* path that policy
//! judges, and the canonical *encoded* path that is forwarded. Both come from the same
//! segments, so the upstream sees exactly the path that policy allowed: an encoded `/`, `\`,
//! NUL, control character or a `.`/`..` segment is rejected instead of being interpreted
//! differently on the two sides.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::Method;
use percent_encoding::percent_decode_str;

mod contain;
mod path;
mod shadow;
pub use path::{PathError, Target, normalise};
pub use shadow::{Judgement, judge};

// ------------------------------------------------------------------------------------------
// Patterns

/// Who a rule applies to: an exact service-account email, or every account of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerPattern {
    /// One email, compared case-insensitively.
    Exact(String),
    /// `*@PROJECT.iam.gserviceaccount.com`: stores `@PROJECT.iam.gserviceaccount.com`.
    Project(String),
}

const SA_DOMAIN: &str = ".iam.gserviceaccount.com";

impl CallerPattern {
    /// Parses `name@domain` or `*@PROJECT.iam.gserviceaccount.com`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(domain) = lower.strip_prefix("*@") {
            let Some(project) = domain.strip_suffix(SA_DOMAIN) else {
                return Err(format!(
                    "`{text}`: a wildcard is allowed only as `*@PROJECT.iam.gserviceaccount.com`"
                ));
            };
            if project.is_empty()
                || !project
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(format!("`{text}`: `{project}` is not a project id"));
            }
            return Ok(CallerPattern::Project(format!("@{domain}")));
        }
        if lower.contains('*') {
            return Err(format!(
                "`{text}`: a wildcard is allowed only as `*@PROJECT.iam.gserviceaccount.com`"
            ));
        }
        let mut parts = lower.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("`{text}` is not an email address"));
        };
        if local.is_empty()
            || domain.is_empty()
            || !domain.contains('.')
            || lower.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("`{text}` is not an email address"));
        }
        Ok(CallerPattern::Exact(lower))
    }

    /// Whether a verified caller email matches.
    pub fn matches(&self, email: &str) -> bool {
        match self {
            CallerPattern::Exact(e) => e.eq_ignore_ascii_case(email),
            CallerPattern::Project(suffix) => {
                email.len() > suffix.len()
                    && email.is_char_boundary(email.len() - suffix.len())
                    && email[email.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !email[..email.len() - suffix.len()].contains('@')
            }
        }
    }
}

impl fmt::Display for CallerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerPattern::Exact(e) => f.write_str(e),
            CallerPattern::Project(s) => write!(f, "*{s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    One,
    Rest,
}

/// A path pattern: `*` matches one non-empty segment, `**` any number of segments (at most
/// one `**` per pattern); a trailing slash is significant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segs: Vec<Seg>,
}

impl PathPattern {
    /// Compiles a pattern such as `/v1/charges/*` or `/v1/**`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("`{text}` must start with `/`"));
        };
        if text.contains(['?', '#', '\\']) {
            return Err(format!("`{text}`: a path pattern has no `?`, `#` or `\\`"));
        }
        let parts: Vec<&str> = body.split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        let mut rests = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let seg = match *part {
                "" if !last => return Err(format!("`{text}` has an empty segment (`//`)")),
                "**" => {
                    rests += 1;
                    Seg::Rest
                }
                "*" => Seg::One,
                "." | ".." => return Err(format!("`{text}` has a `.` or `..` segment")),
                p if p.contains('*') => {
                    return Err(format!(
                        "`{text}`: `*` and `**` must be whole segments (`/v1/*`, not `/v1/a*`)"
                    ));
                }
                p => {
                    let decoded = percent_decode_str(p)
                        .decode_utf8()
                        .map_err(|_| format!("`{text}` does not decode to UTF-8"))?;
                    if decoded.contains(['/', '\\']) || decoded.chars().any(char::is_control) {
                        return Err(format!(
                            "`{text}` has an encoded `/`, `\\` or control character"
                        ));
                    }
                    Seg::Lit(decoded.into_owned())
                }
            };
            segs.push(seg);
        }
        if rests > 1 {
            return Err(format!("`{text}`: at most one `**` per pattern"));
        }
        Ok(PathPattern {
            text: text.to_string(),
            segs,
        })
    }

    /// Whether a normalised, decoded path (starting with `/`) matches.
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix('/') {
            Some(body) => match_segs(&self.segs, body.split('/')),
            None => false,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn match_segs(pat: &[Seg], mut it: std::str::Split<'_, char>) -> bool {
    match pat.split_first() {
        None => it.next().is_none(),
        Some((Seg::Rest, rest)) => {
            if rest.is_empty() {
                return true;
            }
            loop {
                if match_segs(rest, it.clone()) {
                    return true;
                }
                if it.next().is_none() {
                    return false;
                }
            }
        }
        Some((Seg::One, rest)) => match it.next() {
            Some(s) if !s.is_empty() => match_segs(rest, it),
            _ => false,
        },
        Some((Seg::Lit(lit), rest)) => match it.next() {
            Some(s) if s == lit => match_segs(rest, it),
            _ => false,
        },
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One allow rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Who.
    pub callers: Vec<CallerPattern>,
    /// Which methods (exact; `HEAD` is not implied by `GET`).
    pub methods: Vec<Method>,
    /// Which paths.
    pub paths: Vec<PathPattern>,
    /// After this the rule matches nothing.
    pub expires: Option<DateTime<Utc>>,
    /// Where the rule stands in the configuration and what it said, for the audit entry.
    pub id: RuleId,
}

/// A rule's attribution, computed once when the configuration is loaded: every allowed
/// audit entry carries `key` and `hash`, so usage is attributed exactly even after rules
/// are reordered (SPEC, "Least-privilege report and shadow rules").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleId {
    /// Key path, `routes.R.allow[i]` or `routes.R.shadow_allow[i]`.
    pub key: Arc<str>,
    /// First 8 lower-case hex digits of SHA-256 of `canonical`.
    pub hash: Arc<str>,
    /// The rule's canonical JSON: keys `callers`, `methods`, `paths` and (when set)
    /// `expires`, sorted, lists in written order, values as written, no whitespace.
    pub canonical: Arc<str>,
}

impl Rule {
    fn matches(&self, caller: &str, method: &Method, path: &str) -> bool {
        self.callers.iter().any(|c| c.matches(caller))
            && self.methods.iter().any(|m| m == method)
            && self.paths.iter().any(|p| p.matches(path))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: Vec<String>| v.join(", ");
        write!(
            f,
            "callers [{}], methods [{}], paths [{}]",
            join(self.callers.iter().map(ToString::to_string).collect()),
            join(self.methods.iter().map(ToString::to_string).collect()),
            join(self.paths.iter().map(ToString::to_string).collect()),
        )?;
        if let Some(t) = self.expires {
            write!(f, ", expires {}", t.to_rfc3339())?;
        }
        Ok(())
    }
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Rule `rule` (index into the route's `allow`) allows the request.
    Allow {
        /// Index of the matching rule.
        rule: usize,
    },
    /// No rule allows it.
    Deny(DenyReason),
}

/// Why a request was denied ([`authorize`] gives only the last two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A decoy route or caller.
    Decoy,
    /// The client address is outside the route's `source_ranges`.
    SourceNotAllowed,
    /// No rule matches caller, method and path.
    NoRule,
    /// A rule would match but its grant expired.
    GrantExpired {
        /// Index of the expired rule.
        rule: usize,
    },
}

/// Default deny: the first rule matching caller, method and path (and not expired) allows.
pub fn authorize(
    rules: &[Rule],
    caller: &str,
    method: &Method,
    path: &str,
    now: DateTime<Utc>,
) -> Decision {
    let mut expired = None;
    for (i, rule) in rules.iter().enumerate() {
        if rule.matches(caller, method, path) {
            match rule.expires {
                Some(t) if t <= now => {
                    expired.get_or_insert(i);
                }
                _ => return Decision::Allow { rule: i },
            }
        }
    }
    match expired {
        Some(rule) => Decision::Deny(DenyReason::GrantExpired { rule }),
        None => Decision::Deny(DenyReason::NoRule),
    }
}

/// `decoys:`: names no pipeline should ever use. Touching one is refused as usual and
/// audited at ALERT with reason `decoy`.
#[derive(Debug, Clone, Default)]
pub struct Decoys {
    /// Route names.
    pub routes: Vec<String>,
    /// Caller patterns.
    pub callers: Vec<CallerPattern>,
}

impl Decoys {
    /// Whether `route` (a decoded route name) is a decoy route.
    pub fn route(&self, route: &str) -> bool {
        self.routes.iter().any(|r| r == route)
    }

    /// Whether `email` is a decoy caller.
    pub fn caller(&self, email: &str) -> bool {
        self.callers.iter().any(|c| c.matches(email))
    }

    /// Whether a raw request path names a decoy route in its first segment, decoded (so
    /// `/hon%65y/x` is the decoy `honey`). Checked before authentication: even an
    /// unauthenticated probe of a decoy route raises the alert.
    pub fn probed(&self, raw_path: &str) -> bool {
        if self.routes.is_empty() {
            return false;
        }
        let first = raw_path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        self.route(&percent_decode_str(first).decode_utf8_lossy())
    }
}

/// What a route allows: its name, rules and source ranges.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The route name.
    pub route: &'a str,
    /// Its allow rules.
    pub rules: &'a [Rule],
    /// Its `shadow_allow` rules, when it has them: judged, never enforced.
    pub shadow: Option<&'a [Rule]>,
    /// Its `source_ranges` (`None`: any address).
    pub source_ranges: Option<&'a [ipnet::IpNet]>,
}

/// Who asks for what, from where and when.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The verified caller email.
    pub caller: &'a str,
    /// The client address (`None` when unknown: fails any `source_ranges`).
    pub client_ip: Option<IpAddr>,
    /// The method, exactly as sent.
    pub method: &'a Method,
    /// The decoded, normalised path below the route.
    pub path: &'a str,
    /// The time grants are judged at.
    pub now: DateTime<Utc>,
}

/// An allowed request: which rule allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// Index into the route's `allow`.
    pub rule: usize,
}

/// A refused request, with what the message needs. Status (403), message and audit reason
/// all derive from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub reason: DenyReason,
    /// The route.
    pub route: String,
    /// The caller.
    pub caller: String,
    /// The method.
    pub method: Method,
    /// The decoded path below the route.
    pub path: String,
    /// The client address.
    pub client_ip: Option<IpAddr>,
}

impl Denial {
    /// The audit `reason`.
    pub fn audit_reason(&self) -> &'static str {
        match self.reason {
            DenyReason::Decoy => "decoy",
            DenyReason::SourceNotAllowed => "source_not_allowed",
            DenyReason::GrantExpired { .. } => "grant_expired",
            DenyReason::NoRule => "forbidden",
        }
    }
}

impl fmt::Display for Denial {
    /// The message the caller gets. A decoy is refused exactly like a request no rule
    /// allows, so the message does not reveal it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            DenyReason::NoRule | DenyReason::Decoy => write!(
                f,
                "no rule of route `{}` allows caller {} to {} {}",
                self.route, self.caller, self.method, self.path
            ),
            DenyReason::SourceNotAllowed => write!(
                f,
                "client address {} is not in the source ranges of route `{}`",
                self.client_ip
                    .map_or_else(|| "(unknown)".to_string(), |ip| ip.to_string()),
                self.route
            ),
            DenyReason::GrantExpired { rule } => write!(
                f,
                "the grant routes.{}.allow[{rule}] that allowed caller {} to {} {} has expired",
                self.route, self.caller, self.method, self.path
            ),
        }
    }
}

/// The one authorisation decision, shared by `serve` and `explain`: decoys (route or
/// caller), then source ranges, then the rules (exact method names, expired grants).
pub fn authorize_request(
    decoys: &Decoys,
    access: Access<'_>,
    attempt: Attempt<'_>,
) -> Result<Allowed, Box<Denial>> {
    let deny = |reason| {
        Box::new(Denial {
            reason,
            route: access.route.to_string(),
            caller: attempt.caller.to_string(),
            method: attempt.method.clone(),
            path: attempt.path.to_string(),
            client_ip: attempt.client_ip,
        })
    };
    if decoys.route(access.route) || decoys.caller(attempt.caller) {
        return Err(deny(DenyReason::Decoy));
    }
    if let Some(ranges) = access.source_ranges
        && !attempt
            .client_ip
            .is_some_and(|ip| ranges.iter().any(|net| net.contains(&ip)))
    {
        return Err(deny(DenyReason::SourceNotAllowed));
    }
    match authorize(
        access.rules,
        attempt.caller,
        attempt.method,
        attempt.path,
        attempt.now,
    ) {
        Decision::Allow { rule } => Ok(Allowed { rule }),
        Decision::Deny(reason) => Err(deny(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn pat(p: &str) -> PathPattern {
        PathPattern::parse(p).expect("pattern")
    }

    #[test]
    fn splits_route_and_rest() {
        let t = normalise("/stripe/v1/charges").expect("ok");
        assert_eq!(t.route, "stripe");
        assert_eq!(t.path, "/v1/charges");
        assert!(matches!(t.path, Cow::Borrowed(_)));
        assert_eq!(normalise("/stripe").expect("ok").path, "/");
        assert_eq!(normalise("/stripe/").expect("ok").path, "/");
        assert_eq!(normalise("/stripe/v1/a/").expect("ok").path, "/v1/a/");
    }

    #[test]
    fn decodes_for_policy_and_reencodes_for_upstream() {
        let t = normalise("/stripe/v1/%63harges/a%20b").expect("ok");
        assert_eq!(t.path, "/v1/charges/a b");
        assert_eq!(t.upstream_path, "/v1/charges/a%20b");
        let t = normalise("/stripe/v1/caf%c3%a9").expect("ok");
        assert_eq!(t.path, "/v1/café");
        assert_eq!(t.upstream_path, "/v1/caf%C3%A9");
        // An encoded delimiter stays encoded; a raw one stays raw.
        let t = normalise("/stripe/v1/a%3bb/c;d/%3F").expect("ok");
        assert_eq!(t.path, "/v1/a;b/c;d/?");
        assert_eq!(t.upstream_path, "/v1/a%3Bb/c;d/%3F");
    }

    #[test]
    fn rejects_traversal_and_encoding_tricks() {
        for (raw, err) in [
            ("/stripe/../admin", PathError::DotSegment),
            ("/stripe/./x", PathError::DotSegment),
            ("/stripe/%2e%2e/admin", PathError::DotSegment),
            ("/stripe/%2E./admin", PathError::DotSegment),
            ("/stripe/v1/..;/admin", PathError::DotSegment),
            ("/stripe/v1/.;x/admin", PathError::DotSegment),
            ("/../stripe/x", PathError::DotSegment),
            ("/stripe/v1%2f..%2fadmin", PathError::ForbiddenCharacter),
            ("/stripe/v1%2Fadmin", PathError::ForbiddenCharacter),
            ("/stripe/v1%5cadmin", PathError::ForbiddenCharacter),
            ("/stripe/v1\\admin", PathError::ForbiddenCharacter),
            ("/stripe/v1%00", PathError::ForbiddenCharacter),
            (
                "/stripe/v1%0d%0aX-Injected:1",
                PathError::ForbiddenCharacter,
            ),
            ("/stripe//v1", PathError::EmptySegment),
            ("//evil.example/x", PathError::EmptySegment),
            ("/stripe/%ff", PathError::NotUtf8),
            ("/stripe/v1/%u002e%u002e/admin", PathError::BadEscape),
            ("/stripe/v1/%zz", PathError::BadEscape),
            ("/stripe/v1/a%2", PathError::BadEscape),
            ("/stripe/v1/charges/;x", PathError::EmptySegment),
            ("/stripe/v1/%3Bx", PathError::EmptySegment),
            ("http://evil.example/stripe/x", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("/", PathError::NoRoute),
        ] {
            assert_eq!(normalise(raw), Err(err), "{raw}");
        }
    }

    #[test]
    fn single_star_matches_one_nonempty_segment() {
        let p = pat("/v1/charges/*");
        assert!(p.matches("/v1/charges/ch_1"));
        assert!(!p.matches("/v1/charges"));
        assert!(!p.matches("/v1/charges/"));
        assert!(!p.matches("/v1/charges/ch_1/refunds"));
    }

    #[test]
    fn double_star_matches_zero_or_more_segments() {
        let p = pat("/v1/**");
        assert!(p.matches("/v1"));
        assert!(p.matches("/v1/"));
        assert!(p.matches("/v1/a/b/c"));
        assert!(!p.matches("/v2/a"));
        assert!(!p.matches("/v1x"));
        let p = pat("/v1/**/items");
        assert!(p.matches("/v1/items"));
        assert!(p.matches("/v1/a/b/items"));
        assert!(!p.matches("/v1/a/b/items/x"));
    }

    #[test]
    fn trailing_slash_is_significant() {
        assert!(!pat("/v1/a").matches("/v1/a/"));
        assert!(!pat("/v1/a/").matches("/v1/a"));
        assert!(pat("/v1/a/").matches("/v1/a/"));
        assert!(pat("/").matches("/"));
    }

    #[test]
    fn pattern_containment_is_proved_or_refused() {
        for (narrow, wide) in [
            ("/v1/charges", "/v1/**"),
            ("/v1/charges/*", "/v1/**"),
            ("/v1/**", "/v1/**"),
            ("/v1/a/**", "/v1/**"),
            ("/v1/a/b", "/v1/*/b"),
            ("/v1/*/items", "/v1/**/items"),
            ("/v1/items", "/v1/**/items"),
            ("/v1/a/", "/v1/**"),
            ("/", "/**"),
        ] {
            assert!(pat(narrow).within(&pat(wide)), "{narrow} within {wide}");
        }
        for (narrow, wide) in [
            ("/v1/**", "/v1/*"),
            ("/v2/a", "/v1/**"),
            ("/v1/*", "/v1/a"),
            ("/v1/a/", "/v1/a/*"),
            ("/v1/**", "/v1/**/items"),
            ("/v1/a/b", "/v1/*"),
            ("/v1", "/v1/*"),
        ] {
            assert!(
                !pat(narrow).within(&pat(wide)),
                "{narrow} not within {wide}"
            );
        }
    }

    #[test]
    fn rejects_bad_patterns() {
        for p in [
            "v1", "/v1//a", "/v1/a*", "/**/x/**", "/v1/../x", "/v1?x", "/a%2fb",
        ] {
            assert!(PathPattern::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn caller_patterns() {
        let exact = CallerPattern::parse("Daily@acme.iam.gserviceaccount.com").expect("ok");
        assert!(exact.matches("daily@acme.iam.gserviceaccount.com"));
        assert!(!exact.matches("daily@acme2.iam.gserviceaccount.com"));
        let proj = CallerPattern::parse("*@acme.iam.gserviceaccount.com").expect("ok");
        assert!(proj.matches("etl@acme.iam.gserviceaccount.com"));
        assert!(!proj.matches("@acme.iam.gserviceaccount.com"));
        assert!(!proj.matches("etl@evilacme.iam.gserviceaccount.com"));
        assert!(!proj.matches("a@b@acme.iam.gserviceaccount.com"));
        assert!(!proj.matches("etl@other.iam.gserviceaccount.com"));
        for bad in [
            "*",
            "*@gmail.com",
            "a*@acme.iam.gserviceaccount.com",
            "nobody",
            "a@b@c.d",
        ] {
            assert!(CallerPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_deny_and_expired_grants() {
        let now = Utc::now();
        let rules = vec![
            Rule {
                callers: vec![CallerPattern::parse("a@p.iam.gserviceaccount.com").expect("ok")],
                methods: vec![Method::GET],
                paths: vec![pat("/v1/**")],
                expires: None,
                id: RuleId::default(),
            },
            Rule {
                callers: vec![CallerPattern::parse("b@p.iam.gserviceaccount.com").expect("ok")],
                methods: vec![Method::POST],
                paths: vec![pat("/v1/**")],
                expires: Some(now - chrono::Duration::seconds(1)),
                id: RuleId::default(),
            },
        ];
        let a = "a@p.iam.gserviceaccount.com";
        let b = "b@p.iam.gserviceaccount.com";
        assert_eq!(
            authorize(&rules, a, &Method::GET, "/v1/x", now),
            Decision::Allow { rule: 0 }
        );
        assert_eq!(
            authorize(&rules, a, &Method::POST, "/v1/x", now),
            Decision::Deny(DenyReason::NoRule)
        );
        assert_eq!(
            authorize(&rules, a, &Method::HEAD, "/v1/x", now),
            Decision::Deny(DenyReason::NoRule)
        );
        assert_eq!(
            authorize(&rules, b, &Method::POST, "/v1/x", now),
            Decision::Deny(DenyReason::GrantExpired { rule: 1 })
        );
        assert_eq!(
            authorize(
                &rules,
                b,
                &Method::POST,
                "/v1/x",
                now - chrono::Duration::hours(1)
            ),
            Decision::Allow { rule: 1 }
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_~-]{1,8}",
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e%2e".to_string()),
            Just("%2f".to_string()),
            Just("%5c".to_string()),
            Just(";x".to_string()),
            Just("..;".to_string()),
            Just("%00".to_string()),
            Just("%zz".to_string()),
            Just("%41".to_string()),
            Just("%3B".to_string()),
            Just("".to_string()),
            "[ -~]{0,6}",
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 0..8).prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn normalise_never_panics_and_never_yields_dot_segments(raw in prop_oneof![path(), "\\PC{0,64}"]) {
            if let Ok(t) = normalise(&raw) {
                prop_assert!(t.path.starts_with('/'));
                prop_assert!(t.upstream_path.starts_with('/'));
                for seg in t.path[1..].split('/') {
                    let head = seg.split(';').next().unwrap_or_default();
                    prop_assert!(head != ".." && head != ".", "{raw} -> {}", t.path);
                }
                for seg in t.upstream_path[1..].split('/') {
                    prop_assert!(seg != ".." && seg != ".");
                }
                prop_assert!(!t.path.contains("//") && !t.upstream_path.contains("//"));
                prop_assert!(!t.path.contains('\\'));
                // Policy and upstream see the same path: decoding the forwarded form gives
                // exactly what policy judged.
                let decoded = percent_decode_str(&t.upstream_path)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .ok();
                prop_assert_eq!(decoded.as_deref(), Some(t.path.as_ref()));
            }
        }

        #[test]
        fn a_request_never_lands_on_another_route(route in "[a-z][a-z0-9-]{0,10}", rest in path()) {
            if let Ok(t) = normalise(&format!("/{route}{rest}")) {
                prop_assert_eq!(t.route.as_ref(), route.as_str());
            }
        }

        #[test]
        fn patterns_never_panic_and_literals_match_themselves(
            pattern in prop_oneof![path(), "\\PC{0,32}"],
            candidate in path(),
        ) {
            if let Ok(p) = PathPattern::parse(&pattern) {
                if let Ok(t) = normalise(&format!("/r{candidate}")) {
                    let _ = p.matches(&t.path);
                }
                if !pattern.contains('*') && !pattern.contains('%') {
                    prop_assert!(p.matches(&pattern), "{pattern} does not match itself");
                }
            }
        }
    }
}
