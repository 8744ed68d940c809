//! Shadow rules: `shadow_allow` judged beside the enforced rules, in the one decision
//! `serve` and `explain` share.

use super::{Access, Allowed, Attempt, Decoys, Denial, authorize_request};

/// The enforced decision and, on a route with `shadow_allow`, the shadow one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// What is enforced: [`authorize_request`] on the route's `allow`.
    pub enforced: Result<Allowed, Box<Denial>>,
    /// `None` on a route without `shadow_allow`; else `Some(Some(i))` when
    /// `shadow_allow[i]` would allow the request and `Some(None)` when it would deny it.
    pub shadow: Option<Option<usize>>,
}

/// The one decision `serve` and `explain` both make: the enforced one, then the shadow one.
/// The shadow decision is [`authorize_request`] with `shadow_allow` in place of `allow`
/// (decoys, source ranges and expired grants judged alike), taken for every request the
/// enforced rules judged, allowed or denied; it never changes what is enforced.
pub fn judge(decoys: &Decoys, access: Access<'_>, attempt: Attempt<'_>) -> Judgement {
    let enforced = authorize_request(decoys, access, attempt);
    let shadow = access.shadow.map(|rules| {
        let candidate = Access {
            rules,
            shadow: None,
            ..access
        };
        authorize_request(decoys, candidate, attempt)
            .ok()
            .map(|a| a.rule)
    });
    Judgement { enforced, shadow }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::*;

    fn rule(caller: &str, method: Method, path: &str) -> Rule {
        Rule {
            callers: vec![CallerPattern::parse(caller).expect("caller")],
            methods: vec![method],
            paths: vec![PathPattern::parse(path).expect("path")],
            expires: None,
            id: RuleId::default(),
        }
    }

    #[test]
    fn shadow_rules_are_judged_beside_the_enforced_ones_and_never_change_them() {
        let a = "a@p.iam.gserviceaccount.com";
        let allow = vec![rule(a, Method::GET, "/v1/**")];
        let shadow = vec![
            rule(a, Method::GET, "/v1/charges"),
            rule(a, Method::POST, "/v2/x"),
        ];
        let decoys = Decoys::default();
        let access = |shadow| Access {
            route: "r",
            rules: &allow,
            shadow,
            source_ranges: None,
        };
        let attempt = |method, path| Attempt {
            caller: a,
            client_ip: None,
            method,
            path,
            now: Utc::now(),
        };
        let j = judge(
            &decoys,
            access(Some(&shadow)),
            attempt(&Method::GET, "/v1/charges"),
        );
        assert_eq!(
            (j.enforced.clone().map(|a| a.rule), j.shadow),
            (Ok(0), Some(Some(0)))
        );
        // Allowed today, denied by the candidate rules.
        let j = judge(
            &decoys,
            access(Some(&shadow)),
            attempt(&Method::GET, "/v1/other"),
        );
        assert_eq!((j.enforced.map(|a| a.rule), j.shadow), (Ok(0), Some(None)));
        // Denied today, allowed by the candidate rules: still denied.
        let j = judge(
            &decoys,
            access(Some(&shadow)),
            attempt(&Method::POST, "/v2/x"),
        );
        assert!(j.enforced.is_err());
        assert_eq!(j.shadow, Some(Some(1)));
        // No shadow_allow: no shadow decision.
        let j = judge(&decoys, access(None), attempt(&Method::GET, "/v1/charges"));
        assert_eq!(j.shadow, None);
        // Decoys deny in shadow too.
        let decoys = Decoys {
            routes: vec![],
            callers: vec![CallerPattern::parse(a).expect("caller")],
        };
        let j = judge(
            &decoys,
            access(Some(&shadow)),
            attempt(&Method::GET, "/v1/charges"),
        );
        assert!(j.enforced.is_err());
        assert_eq!(j.shadow, Some(None));
    }
}
