//! Proposed narrower rules: the callers that used a rule, the methods they used, and its
//! path patterns narrowed to the observed paths (never broader than the pattern), as YAML
//! ready to paste under a route's `shadow_allow`, and, for a configuration rendered by the
//! Terraform module `credproxy_config`, as that module's `shadow_grants` variable.
//! Nothing here writes a file.

use std::fmt::Write as _;

use super::{Proposal, RuleReport};
use crate::config::Config;

/// The first line the Terraform module `credproxy_config` writes into the document.
pub const TERRAFORM_HEADER: &str = "# Rendered by Terraform (terraform/modules/credproxy_config)";

/// One proposed rule.
struct Proposed<'a> {
    from: &'a RuleReport,
    paths: Vec<String>,
}

fn quote(text: &str) -> String {
    // A JSON string is a YAML double-quoted scalar.
    serde_json::to_string(text).unwrap_or_default()
}

fn hcl_quote(text: &str) -> String {
    // HCL strings are JSON strings, except that `${` and `%{` start templates.
    quote(text).replace("${", "$${").replace("%{", "%%{")
}

fn list(items: &[String], q: fn(&str) -> String) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn proposed<'a>(rules: &'a [RuleReport], route: &str) -> Vec<Proposed<'a>> {
    rules
        .iter()
        .filter(|r| r.route == route && r.requests > 0)
        .map(|r| {
            let mut paths: Vec<String> = Vec::new();
            for p in r.patterns.iter().filter(|p| p.requests > 0) {
                let narrowed = p
                    .narrowed
                    .clone()
                    .unwrap_or_else(|| vec![p.pattern.clone()]);
                for n in narrowed {
                    if !paths.contains(&n) {
                        paths.push(n);
                    }
                }
            }
            Proposed { from: r, paths }
        })
        .collect()
}

/// The `shadow_allow:` block of one route, unindented.
fn route_yaml(rules: &[Proposed<'_>]) -> String {
    if rules.is_empty() {
        return "shadow_allow: []  # no request was allowed in the window\n".to_string();
    }
    let mut out = String::from("shadow_allow:\n");
    for p in rules {
        let r = p.from;
        let _ = writeln!(
            out,
            "  # from {} ({} request(s), last {})",
            r.rule,
            r.requests,
            r.last_used.as_deref().unwrap_or("never")
        );
        let _ = writeln!(out, "  - callers: {}", list(&r.callers_used, quote));
        let _ = writeln!(out, "    methods: {}", list(&r.methods_used, quote));
        let _ = writeln!(out, "    paths: {}", list(&p.paths, quote));
        if let Some(e) = &r.expires {
            let _ = writeln!(out, "    expires: {}", quote(e));
        }
    }
    out
}

/// The proposal for every route of `config`.
pub fn propose(config: &Config, rules: &[RuleReport], terraform: bool, summary: &str) -> Proposal {
    let mut yaml = format!(
        "# credproxy report: proposed shadow_allow rules from {summary}.\n\
         # Paste each route's shadow_allow under that route, watch shadow_would_deny in later\n\
         # reports, then promote the rules to allow.\n\
         routes:\n"
    );
    let mut routes = std::collections::BTreeMap::new();
    let mut grants = String::new();
    for route in &config.routes {
        let p = proposed(rules, &route.name);
        let block = route_yaml(&p);
        let _ = writeln!(yaml, "  {}:", route.name);
        for line in block.lines() {
            let _ = writeln!(yaml, "    {line}");
        }
        routes.insert(route.name.clone(), block);
        for rule in &p {
            for caller in &rule.from.callers_used {
                let _ = writeln!(grants, "  {{");
                let _ = writeln!(grants, "    caller  = {}", hcl_quote(caller));
                let _ = writeln!(grants, "    route   = {}", hcl_quote(&route.name));
                let _ = writeln!(
                    grants,
                    "    methods = {}",
                    list(&rule.from.methods_used, hcl_quote)
                );
                let _ = writeln!(grants, "    paths   = {}", list(&rule.paths, hcl_quote));
                if let Some(e) = &rule.from.expires {
                    let _ = writeln!(grants, "    expires = {}", hcl_quote(e));
                }
                let _ = writeln!(grants, "  }},");
            }
        }
    }
    let terraform = terraform.then(|| {
        format!(
            "# credproxy report: proposed rules from {summary}, for the credproxy_config module.\n\
             # Set as shadow_grants to try them in shadow; move them to grants to enforce them.\n\
             shadow_grants = [\n{grants}]\n"
        )
    });
    Proposal {
        yaml,
        routes,
        terraform,
    }
}
