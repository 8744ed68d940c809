//! From accumulated usage to the report's rules, matrix, shadow results and findings.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::analysis::{Group, Usage};
use super::{
    Cell, CellMethod, Finding, PatternReport, RuleReport, ShadowReport, ShadowRuleReport, time,
};
use crate::config::Config;
use crate::policy::Rule;

/// Grants expiring within this long are reported.
pub const EXPIRING_WITHIN_DAYS: i64 = 7;

/// A rule's fields as written in the configuration (from its canonical JSON).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Written {
    /// `callers` as written.
    pub callers: Vec<String>,
    /// `methods` as written.
    pub methods: Vec<String>,
    /// `paths` as written.
    pub paths: Vec<String>,
    /// `expires` as written.
    pub expires: Option<String>,
}

/// The fields of `rule` as written.
pub fn written(rule: &Rule) -> Written {
    serde_json::from_str(&rule.id.canonical).unwrap_or_default()
}

/// Finding codes, in the order they are listed.
pub const CODES: [&str; 8] = [
    "unused_rule",
    "unused_caller",
    "unused_method",
    "broad_path",
    "denied_caller",
    "decoy_hit",
    "expiring_grant",
    "shadow_would_deny",
];

fn finding(code: &'static str, route: Option<&str>, rule: Option<&str>) -> Finding {
    Finding {
        code,
        route: route.map(str::to_string),
        rule: rule.map(str::to_string),
        caller: None,
        count: None,
        message: String::new(),
        last_used: None,
        samples: Vec::new(),
    }
}

fn group_finding(code: &'static str, route: &str, caller: Option<&str>, g: &Group) -> Finding {
    let mut f = finding(code, Some(route), None);
    f.caller = caller.map(str::to_string);
    f.count = Some(g.count);
    f.last_used = g.last.map(time);
    f.samples = g.samples.iter().cloned().collect();
    f
}

/// Rules, matrix, shadow results and findings.
pub fn build(
    config: &Config,
    usage: &Usage<'_>,
    now: DateTime<Utc>,
) -> (Vec<RuleReport>, Vec<Cell>, Vec<ShadowReport>, Vec<Finding>) {
    let mut rules = Vec::new();
    let mut cells: Vec<Cell> = Vec::new();
    let mut findings = Vec::new();
    for (r, route) in config.routes.iter().enumerate() {
        for (i, rule) in route.allow.iter().enumerate() {
            let u = &usage.rules[r][i];
            let w = written(rule);
            let key = &*rule.id.key;
            let used_callers: Vec<bool> = u.callers.iter().map(|c| c.requests > 0).collect();
            let pick = |used: bool| -> Vec<String> {
                w.callers
                    .iter()
                    .zip(&used_callers)
                    .filter(|(_, u)| **u == used)
                    .map(|(c, _)| c.clone())
                    .collect()
            };
            let method_used: Vec<bool> = rule
                .methods
                .iter()
                .map(|m| Usage::used(u.methods, m))
                .collect();
            let pick_methods = |used: bool| -> Vec<String> {
                w.methods
                    .iter()
                    .zip(&method_used)
                    .filter(|(_, u)| **u == used)
                    .map(|(m, _)| m.clone())
                    .collect()
            };
            let patterns: Vec<PatternReport> = rule
                .paths
                .iter()
                .zip(&u.paths)
                .zip(&w.paths)
                .map(|((p, (n, tree)), text)| PatternReport {
                    pattern: text.clone(),
                    requests: *n,
                    narrowed: if *n > 0 { tree.narrowed(p) } else { None },
                })
                .collect();
            let report = RuleReport {
                rule: key.to_string(),
                rule_hash: rule.id.hash.to_string(),
                route: route.name.clone(),
                requests: u.requests,
                last_used: u.last_used.map(time),
                callers_used: pick(true),
                callers_unused: pick(false),
                methods_used: pick_methods(true),
                methods_unused: pick_methods(false),
                paths_sample: u.samples.iter().cloned().collect(),
                patterns,
                expires: w.expires.clone(),
            };

            if u.requests == 0 {
                let mut f = finding("unused_rule", Some(&route.name), Some(key));
                f.count = Some(0);
                f.message = format!("{key} allowed no request in the window ({rule})");
                findings.push(f);
            } else {
                for caller in &report.callers_unused {
                    let mut f = finding("unused_caller", Some(&route.name), Some(key));
                    f.caller = Some(caller.clone());
                    f.count = Some(0);
                    f.message = format!("{caller} never used {key}");
                    findings.push(f);
                }
                for method in &report.methods_unused {
                    let mut f = finding("unused_method", Some(&route.name), Some(key));
                    f.count = Some(0);
                    f.message = format!("{key} allows {method}, which no request used");
                    findings.push(f);
                }
                for p in &report.patterns {
                    let broad = p.pattern.contains('*');
                    if let Some(narrowed) = p
                        .narrowed
                        .as_ref()
                        .filter(|n| broad && **n != [p.pattern.clone()])
                    {
                        let mut f = finding("broad_path", Some(&route.name), Some(key));
                        f.count = Some(p.requests);
                        f.last_used = report.last_used.clone();
                        f.samples = report.paths_sample.iter().take(5).cloned().collect();
                        f.message = format!(
                            "`{}` is broader than the paths used: {}",
                            p.pattern,
                            narrowed.join(", ")
                        );
                        findings.push(f);
                    }
                }
            }
            if let Some(expires) = rule.expires
                && expires > now
                && expires - now <= Duration::days(EXPIRING_WITHIN_DAYS)
            {
                let mut f = finding("expiring_grant", Some(&route.name), Some(key));
                f.count = Some(u.requests);
                f.last_used = report.last_used.clone();
                f.message = format!(
                    "{key} expires at {} (in {} h); {} request(s) used it in the window",
                    w.expires.as_deref().unwrap_or_default(),
                    (expires - now).num_hours(),
                    u.requests
                );
                findings.push(f);
            }

            // The matrix: one cell per caller pattern as written and route.
            for (c, caller) in w.callers.iter().enumerate() {
                let cell = match cells
                    .iter_mut()
                    .find(|x| x.caller == *caller && x.route == route.name)
                {
                    Some(cell) => cell,
                    None => {
                        cells.push(Cell {
                            caller: caller.clone(),
                            route: route.name.clone(),
                            methods: Vec::new(),
                            rules: Vec::new(),
                        });
                        cells.last_mut().expect("pushed")
                    }
                };
                cell.rules.push(key.to_string());
                let mask = u.callers.get(c).map_or(0, |x| x.methods);
                for (m, text) in rule.methods.iter().zip(&w.methods) {
                    let used = Usage::used(mask, m);
                    match cell.methods.iter_mut().find(|x| x.method == *text) {
                        Some(x) => x.used |= used,
                        None => cell.methods.push(CellMethod {
                            method: text.clone(),
                            used,
                        }),
                    }
                }
            }
            rules.push(report);
        }
    }
    for ((route, caller), g) in &usage.denied {
        let mut f = group_finding("denied_caller", route, Some(caller), g);
        let reasons: Vec<String> = g.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        f.message = format!(
            "{caller} was denied on route {route} {} time(s) ({})",
            g.count,
            reasons.join(", ")
        );
        findings.push(f);
    }
    for ((route, caller), g) in &usage.decoys {
        let mut f = group_finding("decoy_hit", route, caller.as_deref(), g);
        f.message = format!(
            "decoy touched {} time(s) on `{route}` by {}",
            g.count,
            caller.as_deref().unwrap_or("an unauthenticated caller")
        );
        findings.push(f);
    }
    let mut shadow = Vec::new();
    for (r, route) in config.routes.iter().enumerate() {
        let Some(s) = &usage.shadow[r] else { continue };
        for (rule, g) in &s.would_deny {
            let mut f = group_finding("shadow_would_deny", &route.name, None, g);
            f.rule = Some(rule.clone()).filter(|r| !r.is_empty());
            f.message = format!(
                "{} request(s) allowed by {} would be denied by shadow_allow",
                g.count,
                if rule.is_empty() {
                    "an unnamed rule"
                } else {
                    rule
                }
            );
            findings.push(f);
        }
        let shadow_rules = route.shadow_allow.as_deref().unwrap_or_default();
        shadow.push(ShadowReport {
            route: route.name.clone(),
            allowed_shadow_allowed: s.counts[0][0],
            allowed_shadow_denied: s.counts[0][1],
            denied_shadow_allowed: s.counts[1][0],
            denied_shadow_denied: s.counts[1][1],
            rules: shadow_rules
                .iter()
                .zip(&s.rules)
                .map(|(rule, n)| ShadowRuleReport {
                    rule: rule.id.key.to_string(),
                    rule_hash: rule.id.hash.to_string(),
                    would_allow: *n,
                })
                .collect(),
        });
    }
    findings.sort_by_key(|f| CODES.iter().position(|c| *c == f.code));
    cells.sort_by(|a, b| (&a.caller, &a.route).cmp(&(&b.caller, &b.route)));
    (rules, cells, shadow, findings)
}
