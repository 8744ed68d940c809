//! `credproxy explain`: a policy dry run that decides exactly as `serve` does for a caller,
//! client address and time: the same normaliser, the same route lookup, and the same
//! [`policy::authorize_request`] (decoys, source ranges, expired grants, exact method
//! names, rules). Only authentication is assumed: the caller is taken as verified.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use http::Method;

use crate::config::Config;
use crate::policy::{self, Attempt, DenyReason};

/// The verdict and a human-readable report of how it was reached.
#[derive(Debug)]
pub struct Explanation {
    /// Whether the request would be allowed.
    pub allowed: bool,
    /// Lines to print.
    pub report: String,
}

/// What is being asked: who, from where, when, and the request line.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// The caller email (the ID token's `email`).
    pub caller: &'a str,
    /// The client address (`--client-ip`); `None` fails any `source_ranges`, as in `serve`.
    pub client_ip: Option<IpAddr>,
    /// The method, exactly as it would be sent (`get` is not `GET`).
    pub method: &'a str,
    /// The request path as the caller would send it: `/ROUTE/PATH[?query]`.
    pub url_path: &'a str,
    /// When (`--at`, default now): grants are judged at this time.
    pub at: DateTime<Utc>,
}

/// Explains what credproxy would do with `method url_path` from `caller` at `now`.
pub fn explain(
    config: &Config,
    caller: &str,
    method: &str,
    url_path: &str,
    now: DateTime<Utc>,
) -> Explanation {
    explain_question(
        config,
        Question {
            caller,
            client_ip: None,
            method,
            url_path,
            at: now,
        },
    )
}

/// Explains what credproxy would do with the request of `q`.
pub fn explain_question(config: &Config, q: Question<'_>) -> Explanation {
    let deny = |reason: String| Explanation {
        allowed: false,
        report: format!("deny\nreason: {reason}\n"),
    };
    // hyper takes any token as a method, case-sensitively; rules name upper-case methods.
    let Ok(method) = Method::from_bytes(q.method.as_bytes()) else {
        return deny(format!(
            "`{}` is not an HTTP method (400 bad_request)",
            q.method
        ));
    };
    let path_only = q.url_path.split('?').next().unwrap_or_default();
    let target = match policy::normalise(path_only) {
        Ok(t) => t,
        Err(e) => return deny(format!("{e} (400 bad_request)")),
    };
    let Some(route) = config.routes.iter().find(|r| r.name == target.route) else {
        let decoy = if config.decoys.route(&target.route) || config.decoys.caller(q.caller) {
            "; it is a decoy, so the attempt is audited at ALERT with reason decoy"
        } else {
            ""
        };
        return deny(format!(
            "no route named `{}` (404 unknown_route){decoy}",
            target.route
        ));
    };
    let attempt = Attempt {
        caller: q.caller,
        client_ip: q.client_ip,
        method: &method,
        path: &target.path,
        now: q.at,
    };
    let judged = policy::judge(&config.decoys, route.access(), attempt);
    // One line for routes with shadow_allow; the exit code follows the enforced decision.
    let shadow = match judged.shadow {
        None => String::new(),
        Some(Some(i)) => format!("shadow: allow routes.{}.shadow_allow[{i}]\n", route.name),
        Some(None) => "shadow: deny\n".to_string(),
    };
    let mut explanation = match judged.enforced {
        Ok(allowed) => {
            let upstream = format!(
                "{}{}{}",
                route.upstream.origin, route.upstream.base_path, target.upstream_path
            );
            let credential = format!(
                "{} injection from {}",
                route.credential.inject.kind(),
                route.credential.secret.resource()
            );
            Explanation {
                allowed: true,
                report: format!(
                    "allow\nroute: {name} -> {upstream}\nrule: routes.{name}.allow[{rule}]: {desc}\ncredential: {credential}\n",
                    name = route.name,
                    rule = allowed.rule,
                    desc = route.allow[allowed.rule],
                ),
            }
        }
        Err(denial) => deny(match denial.reason {
            DenyReason::Decoy => format!(
                "decoy: {} is a decoy (403 forbidden, decoy; serve audits it at ALERT)",
                if config.decoys.route(&route.name) {
                    format!("route `{}`", route.name)
                } else {
                    format!("caller {}", q.caller)
                }
            ),
            DenyReason::SourceNotAllowed => format!(
                "{denial} (403 forbidden, source_not_allowed){}",
                if q.client_ip.is_none() {
                    "; pass --client-ip to judge an address"
                } else {
                    ""
                }
            ),
            DenyReason::GrantExpired { rule } => format!(
                "routes.{name}.allow[{rule}] would allow it but expired (403 forbidden, grant_expired): {desc}",
                name = route.name,
                desc = route.allow[rule],
            ),
            DenyReason::NoRule => format!(
                "{denial} (403 forbidden); the route has {} rule(s)",
                route.allow.len()
            ),
        }),
    };
    explanation.report.push_str(&shadow);
    explanation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
identity: { audiences: ["a"] }
routes:
  stripe:
    upstream: "https://api.stripe.com"
    credential: { secret: "env:K", inject: { header: { name: Authorization, format: "Bearer {secret}" } } }
    allow:
      - callers: ["a@p.iam.gserviceaccount.com"]
        methods: [GET]
        paths: ["/v1/**"]
      - callers: ["b@p.iam.gserviceaccount.com"]
        methods: [POST]
        paths: ["/v1/**"]
        expires: "2020-01-01T00:00:00Z"
"#;
        crate::config::parse(text, &|_| None).expect("valid").0
    }

    #[test]
    fn explains_allow_with_rule_and_upstream() {
        let e = explain(
            &config(),
            "a@p.iam.gserviceaccount.com",
            "GET",
            "/stripe/v1/x?y=1",
            Utc::now(),
        );
        assert!(e.allowed);
        assert!(e.report.contains("routes.stripe.allow[0]"), "{}", e.report);
        assert!(
            e.report.contains("https://api.stripe.com/v1/x"),
            "{}",
            e.report
        );
    }

    #[test]
    fn prints_the_shadow_decision_and_keeps_the_enforced_verdict() {
        let text = r#"
identity: { audiences: ["a"] }
routes:
  stripe:
    upstream: "https://api.stripe.com"
    credential: { secret: "env:K", inject: { header: { name: Authorization, format: "Bearer {secret}" } } }
    allow:
      - callers: ["a@p.iam.gserviceaccount.com"]
        methods: [GET]
        paths: ["/v1/**"]
    shadow_allow:
      - callers: ["a@p.iam.gserviceaccount.com"]
        methods: [GET, DELETE]
        paths: ["/v1/charges"]
"#;
        let c = crate::config::parse(text, &|_| None).expect("valid").0;
        let a = "a@p.iam.gserviceaccount.com";
        let e = explain(&c, a, "GET", "/stripe/v1/charges", Utc::now());
        assert!(e.allowed);
        assert!(
            e.report
                .ends_with("shadow: allow routes.stripe.shadow_allow[0]\n"),
            "{}",
            e.report
        );
        let e = explain(&c, a, "GET", "/stripe/v1/other", Utc::now());
        assert!(e.allowed);
        assert!(e.report.ends_with("\nshadow: deny\n"), "{}", e.report);
        let e = explain(&c, a, "DELETE", "/stripe/v1/charges", Utc::now());
        assert!(!e.allowed, "the shadow rule never allows: {}", e.report);
        assert!(
            e.report
                .contains("shadow: allow routes.stripe.shadow_allow[0]")
        );
        // No shadow_allow, no shadow line.
        let e = explain(&config(), a, "GET", "/stripe/v1/x", Utc::now());
        assert!(!e.report.contains("shadow"), "{}", e.report);
    }

    #[test]
    fn explains_denials() {
        let c = config();
        let now = Utc::now();
        let e = explain(
            &c,
            "a@p.iam.gserviceaccount.com",
            "DELETE",
            "/stripe/v1/x",
            now,
        );
        assert!(!e.allowed);
        assert!(e.report.contains("403"), "{}", e.report);
        let e = explain(
            &c,
            "b@p.iam.gserviceaccount.com",
            "POST",
            "/stripe/v1/x",
            now,
        );
        assert!(e.report.contains("expired"), "{}", e.report);
        let e = explain(&c, "a@p.iam.gserviceaccount.com", "GET", "/nope/v1/x", now);
        assert!(e.report.contains("unknown_route"), "{}", e.report);
        let e = explain(
            &c,
            "a@p.iam.gserviceaccount.com",
            "GET",
            "/stripe/../x",
            now,
        );
        assert!(e.report.contains("bad_request"), "{}", e.report);
    }
}
