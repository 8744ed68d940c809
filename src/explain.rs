//! `credproxy explain`: a policy dry run over the same normaliser and matcher the server uses.

use chrono::{DateTime, Utc};
use http::Method;

use crate::config::Config;
use crate::policy::{self, Decision, DenyReason};

/// The verdict and a human-readable report of how it was reached.
#[derive(Debug)]
pub struct Explanation {
    /// Whether the request would be allowed.
    pub allowed: bool,
    /// Lines to print.
    pub report: String,
}

/// Explains what credproxy would do with `method url_path` from `caller` at `now`.
pub fn explain(
    config: &Config,
    caller: &str,
    method: &str,
    url_path: &str,
    now: DateTime<Utc>,
) -> Explanation {
    let deny = |reason: String| Explanation {
        allowed: false,
        report: format!("deny\nreason: {reason}\n"),
    };
    let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        return deny(format!(
            "`{method}` is not an HTTP method (400 bad_request)"
        ));
    };
    let path_only = url_path.split('?').next().unwrap_or_default();
    let target = match policy::normalise(path_only) {
        Ok(t) => t,
        Err(e) => return deny(format!("{e} (400 bad_request)")),
    };
    let Some(route) = config.routes.iter().find(|r| r.name == target.route) else {
        return deny(format!(
            "no route named `{}` (404 unknown_route)",
            target.route
        ));
    };
    let upstream = format!(
        "{}{}{}",
        route.upstream.origin, route.upstream.base_path, target.upstream_path
    );
    let credential = format!(
        "{} injection from {}",
        route.credential.inject.kind(),
        route.credential.secret.resource()
    );
    match policy::authorize(&route.allow, caller, &method, &target.path, now) {
        Decision::Allow { rule } => Explanation {
            allowed: true,
            report: format!(
                "allow\nroute: {name} -> {upstream}\nrule: routes.{name}.allow[{rule}]: {desc}\ncredential: {credential}\n",
                name = route.name,
                desc = route.allow[rule],
            ),
        },
        Decision::Deny(DenyReason::GrantExpired { rule }) => deny(format!(
            "routes.{name}.allow[{rule}] would allow it but expired (403 forbidden, grant_expired): {desc}",
            name = route.name,
            desc = route.allow[rule],
        )),
        Decision::Deny(DenyReason::NoRule) => deny(format!(
            "no rule of route `{}` allows caller {caller} to {method} {} (403 forbidden); the route has {} rule(s)",
            route.name,
            target.path,
            route.allow.len()
        )),
    }
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
