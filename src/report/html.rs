//! `--format html`: one self-contained page (inline style, no script, no external asset)
//! with the caller × route matrix, the findings with their evidence, the rules and the
//! proposal. Every value is escaped: caller emails, paths and samples come from requests.
//! A Content-Security-Policy allowing nothing but the inline style is defence in depth.

use std::fmt::Write as _;

use super::Report;

/// `text` escaped for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px;vertical-align:top;text-align:left;max-width:36em;overflow-wrap:anywhere}\
thead th{background:#eee}ul{margin:0;padding-left:1.2em}.used{color:#05600c}.unused{color:#a00;text-decoration:line-through}\
.none{color:#999}code,pre{background:#f6f6f6}pre{padding:1em;overflow:auto}.code{font-family:monospace;font-weight:bold}";

fn opt(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "-".to_string(), escape)
}

/// The page.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>credproxy least-privilege report</title><style>{STYLE}</style></head><body>\n\
         <h1>credproxy least-privilege report</h1>\n\
         <p id=\"span\">{} entries from {} to {} (window from {}); input: {} entries from {} to {}; {} unreadable, {} not audit entries, {} allowed entries matched no rule.</p>\n",
        report.entries,
        opt(&report.span.from),
        opt(&report.span.to),
        opt(&report.window.from),
        report.input.entries,
        opt(&report.input.span.from),
        opt(&report.input.span.to),
        report.unreadable,
        report.not_audit,
        report.unattributed,
    );

    // The matrix.
    let mut routes: Vec<&str> = report.rules.iter().map(|r| r.route.as_str()).collect();
    routes.dedup();
    let mut callers: Vec<&str> = report.matrix.iter().map(|c| c.caller.as_str()).collect();
    callers.sort_unstable();
    callers.dedup();
    out.push_str("<h2>Caller × route: methods granted, used or unused</h2>\n<table id=\"matrix\"><thead><tr><th scope=\"col\">caller</th>");
    for r in &routes {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(r));
    }
    out.push_str("</tr></thead><tbody>\n");
    for caller in &callers {
        let _ = write!(out, "<tr><th scope=\"row\">{}</th>", escape(caller));
        for route in &routes {
            let cell = report
                .matrix
                .iter()
                .find(|c| c.caller == *caller && c.route == *route);
            let _ = write!(
                out,
                "<td data-caller=\"{}\" data-route=\"{}\">",
                escape(caller),
                escape(route)
            );
            match cell {
                None => out.push_str("<span class=\"none\">none</span>"),
                Some(cell) => {
                    out.push_str("<ul>");
                    for m in &cell.methods {
                        let state = if m.used { "used" } else { "unused" };
                        let _ = write!(
                            out,
                            "<li class=\"{state}\">{} {state}</li>",
                            escape(&m.method)
                        );
                    }
                    out.push_str("</ul>");
                }
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");

    // Findings.
    let _ = write!(
        out,
        "<h2>Findings ({})</h2>\n<table id=\"findings\"><thead><tr><th>code</th><th>route</th><th>rule</th><th>caller</th><th>count</th><th>last use</th><th>message</th><th>samples</th></tr></thead><tbody>\n",
        report.findings.len()
    );
    for f in &report.findings {
        let _ = write!(
            out,
            "<tr class=\"finding\" data-code=\"{code}\"><td class=\"code\">{code}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><ul>",
            opt(&f.route),
            opt(&f.rule),
            opt(&f.caller),
            f.count.map_or_else(|| "-".to_string(), |n| n.to_string()),
            opt(&f.last_used),
            escape(&f.message),
            code = escape(f.code),
        );
        for s in &f.samples {
            let _ = write!(out, "<li><code>{}</code></li>", escape(s));
        }
        out.push_str("</ul></td></tr>\n");
    }
    out.push_str("</tbody></table>\n");

    // Rules.
    out.push_str("<h2>Rules</h2>\n<table id=\"rules\"><thead><tr><th>rule</th><th>hash</th><th>requests</th><th>last use</th><th>callers used</th><th>callers unused</th><th>methods used</th><th>methods unused</th><th>sample paths</th></tr></thead><tbody>\n");
    let join = |v: &[String]| v.iter().map(|s| escape(s)).collect::<Vec<_>>().join("<br>");
    for r in &report.rules {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.rule),
            escape(&r.rule_hash),
            r.requests,
            opt(&r.last_used),
            join(&r.callers_used),
            join(&r.callers_unused),
            join(&r.methods_used),
            join(&r.methods_unused),
            join(&r.paths_sample),
        );
    }
    out.push_str("</tbody></table>\n");

    if !report.shadow.is_empty() {
        out.push_str("<h2>Shadow rules</h2>\n<table id=\"shadow\"><thead><tr><th>route</th><th>allowed, shadow allows</th><th>allowed, shadow would deny</th><th>denied, shadow would allow</th><th>denied by both</th></tr></thead><tbody>\n");
        for s in &report.shadow {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&s.route),
                s.allowed_shadow_allowed,
                s.allowed_shadow_denied,
                s.denied_shadow_allowed,
                s.denied_shadow_denied
            );
        }
        out.push_str("</tbody></table>\n");
    }

    let _ = write!(
        out,
        "<h2>Proposal: paste under shadow_allow</h2>\n<pre id=\"proposal\">{}</pre>\n",
        escape(&report.proposal.yaml)
    );
    if let Some(tf) = &report.proposal.terraform {
        let _ = write!(
            out,
            "<h2>Proposal for the credproxy_config Terraform module</h2>\n<pre id=\"proposal-terraform\">{}</pre>\n",
            escape(tf)
        );
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
    }
}
