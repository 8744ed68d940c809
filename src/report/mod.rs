//! `credproxy report`: least privilege from evidence (SPEC, "Least-privilege report and
//! shadow rules").
//!
//! It reads audit entries ([`input`]), attributes each allowed one to the rule of today's
//! configuration that allowed it (by `rule_hash`, else by `rule`) and accumulates usage in
//! bounded memory ([`analysis`], [`paths`]), then lists per rule what was used against what
//! is allowed, the findings ([`findings`]) and narrower rules to try under `shadow_allow`
//! ([`proposal`]); as text, stable JSON, or one self-contained HTML page ([`html`]).
//!
//! Two passes over the input: the first finds the newest entry, which ends the `--since`
//! window; the second analyses the entries inside it. Stdin is spooled to a temporary file
//! for this. Memory does not grow with the number of entries.

pub mod analysis;
pub mod findings;
pub mod html;
pub mod input;
pub mod paths;
pub mod proposal;

use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::Config;
use input::{RawEntry, Source, Stamp};

/// Which entries count: since a duration before the newest entry, since a time, or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// `30d`, `12h`, `90m`, `3600s`, `2w`: ending at the newest entry.
    Before(Duration),
    /// An RFC 3339 time.
    At(DateTime<Utc>),
    /// `all`.
    All,
}

impl Since {
    /// Parses `--since`.
    pub fn parse(text: &str) -> Result<Since, String> {
        if text == "all" {
            return Ok(Since::All);
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(Since::At(t.with_timezone(&Utc)));
        }
        let bad = || {
            format!(
                "`{text}` is not a window: use e.g. 30d, 12h, 90m, 2w, an RFC 3339 time, or all"
            )
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: i64 = text[..split].parse().map_err(|_| bad())?;
        let d = match &text[split..] {
            "w" => Duration::try_weeks(n),
            "d" => Duration::try_days(n),
            "h" => Duration::try_hours(n),
            "m" => Duration::try_minutes(n),
            "s" => Duration::try_seconds(n),
            _ => None,
        };
        d.filter(|d| *d > Duration::zero())
            .map(Since::Before)
            .ok_or_else(bad)
    }
}

/// What to report on.
#[derive(Debug, Clone)]
pub struct Options {
    /// The audit file (`-` for stdin).
    pub audit: PathBuf,
    /// The window.
    pub since: Since,
    /// Also propose `shadow_grants` for the Terraform module `credproxy_config`.
    pub terraform: bool,
    /// Now, for expiring grants.
    pub now: DateTime<Utc>,
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The input could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Nothing in it was an audit entry.
    #[error("{0}: no readable audit entry ({1} unreadable, {2} other JSON objects)")]
    NoEntries(String, u64, u64),
}

/// A time as the report writes it.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// From and to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Span {
    /// Oldest (RFC 3339), null when empty.
    pub from: Option<String>,
    /// Newest (RFC 3339), null when empty.
    pub to: Option<String>,
}

/// The window asked for.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// `--since` as given.
    pub since: String,
    /// Start of the window (null for `all`).
    pub from: Option<String>,
    /// End: the newest entry.
    pub to: Option<String>,
}

/// What the input held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputReport {
    /// Audit entries in the whole input.
    pub entries: u64,
    /// Oldest and newest entry of the whole input.
    pub span: Span,
    /// Entries before the window.
    pub outside_window: u64,
}

/// One path pattern of a rule.
#[derive(Debug, Clone, Serialize)]
pub struct PatternReport {
    /// As written.
    pub pattern: String,
    /// Requests whose path it matched first.
    pub requests: u64,
    /// Narrower patterns covering the observed paths (null: not narrowed).
    pub narrowed: Option<Vec<String>>,
}

/// Usage of one allow rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// `routes.R.allow[i]`.
    pub rule: String,
    /// Its hash.
    pub rule_hash: String,
    /// Its route.
    pub route: String,
    /// Requests it allowed.
    pub requests: u64,
    /// Newest of them.
    pub last_used: Option<String>,
    /// Its caller patterns that some request used (as written).
    pub callers_used: Vec<String>,
    /// Those none did.
    pub callers_unused: Vec<String>,
    /// Its methods used (as written).
    pub methods_used: Vec<String>,
    /// Its methods never used.
    pub methods_unused: Vec<String>,
    /// Distinct paths used (decoded), at most 20.
    pub paths_sample: Vec<String>,
    /// Per path pattern.
    pub patterns: Vec<PatternReport>,
    /// `expires` as written.
    pub expires: Option<String>,
}

/// A method granted in a matrix cell.
#[derive(Debug, Clone, Serialize)]
pub struct CellMethod {
    /// As written.
    pub method: String,
    /// Whether a request of this caller pattern used it.
    pub used: bool,
}

/// One cell of the caller × route matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Caller pattern as written.
    pub caller: String,
    /// Route.
    pub route: String,
    /// Methods its rules grant, in order of first mention.
    pub methods: Vec<CellMethod>,
    /// The rules granting them.
    pub rules: Vec<String>,
}

/// A shadow rule's use.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowRuleReport {
    /// `routes.R.shadow_allow[i]`.
    pub rule: String,
    /// Its hash.
    pub rule_hash: String,
    /// Requests it would have allowed.
    pub would_allow: u64,
}

/// Shadow decisions of one route with `shadow_allow`.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// Route.
    pub route: String,
    /// Allowed, and `shadow_allow` agrees.
    pub allowed_shadow_allowed: u64,
    /// Allowed today, `shadow_allow` would deny: the requests a promotion would break.
    pub allowed_shadow_denied: u64,
    /// Denied today, `shadow_allow` would allow.
    pub denied_shadow_allowed: u64,
    /// Denied by both.
    pub denied_shadow_denied: u64,
    /// Per shadow rule.
    pub rules: Vec<ShadowRuleReport>,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `unused_rule`, `unused_caller`, `unused_method`, `broad_path`, `denied_caller`,
    /// `decoy_hit`, `expiring_grant` or `shadow_would_deny`.
    pub code: &'static str,
    /// Route.
    pub route: Option<String>,
    /// Rule key path.
    pub rule: Option<String>,
    /// Caller (pattern or email).
    pub caller: Option<String>,
    /// How many requests it is about.
    pub count: Option<u64>,
    /// For people.
    pub message: String,
    /// Newest request it is about.
    pub last_used: Option<String>,
    /// `METHOD path` or path samples.
    pub samples: Vec<String>,
}

/// The proposal.
#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    /// Every route's `shadow_allow`, under `routes:`.
    pub yaml: String,
    /// Per route, its `shadow_allow:` block alone.
    pub routes: std::collections::BTreeMap<String, String>,
    /// `shadow_grants` for the Terraform module, when the config is rendered by it.
    pub terraform: Option<String>,
}

/// The report (`--format json` is this, serialised).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Oldest and newest entry analysed.
    pub span: Span,
    /// The window asked for.
    pub window: Window,
    /// The whole input.
    pub input: InputReport,
    /// Entries analysed (in the window).
    pub entries: u64,
    /// Lines or elements that were not JSON of an entry's shape.
    pub unreadable: u64,
    /// JSON objects that are not audit entries.
    pub not_audit: u64,
    /// Allowed entries matched to no rule of the configuration.
    pub unattributed: u64,
    /// Per allow rule.
    pub rules: Vec<RuleReport>,
    /// Caller × route.
    pub matrix: Vec<Cell>,
    /// Per route with `shadow_allow`.
    pub shadow: Vec<ShadowReport>,
    /// Findings, by code.
    pub findings: Vec<Finding>,
    /// Narrower rules to try.
    pub proposal: Proposal,
}

impl Report {
    /// Whether `--fail-on-unused` fails: an `unused_rule` or `unused_caller` finding.
    pub fn has_unused(&self) -> bool {
        self.findings
            .iter()
            .any(|f| matches!(f.code, "unused_rule" | "unused_caller"))
    }
}

/// Builds the report of `options.audit` against `config`.
pub fn run(config: &Config, options: &Options) -> Result<Report, ReportError> {
    let name = options.audit.display().to_string();
    let io = |source| ReportError::Io {
        path: name.clone(),
        source,
    };
    let source = Source::open(&options.audit).map_err(io)?;
    // Pass 1: the span of the input.
    let mut all: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    let mut total = 0u64;
    source
        .for_each(|stamp: Option<Stamp>| {
            if let Some(t) = stamp.as_ref().and_then(Stamp::time) {
                total += 1;
                all = Some(all.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
            }
        })
        .map_err(io)?;
    let from = match (options.since, all) {
        (Since::Before(d), Some((_, newest))) => Some(newest - d),
        (Since::At(t), _) => Some(t),
        _ => None,
    };
    // Pass 2: the analysis.
    let mut usage = analysis::Usage::new(config);
    let (mut unreadable, mut not_audit, mut outside) = (0u64, 0u64, 0u64);
    source
        .for_each(
            |raw: Option<RawEntry>| match raw.map(RawEntry::into_entry) {
                None => unreadable += 1,
                Some(None) => not_audit += 1,
                Some(Some(e)) if from.is_some_and(|f| e.time < f) => outside += 1,
                Some(Some(e)) => usage.add(&e),
            },
        )
        .map_err(io)?;
    if total == 0 {
        return Err(ReportError::NoEntries(name, unreadable, not_audit));
    }
    let (rules, matrix, shadow, findings) = findings::build(config, &usage, options.now);
    let span = Span {
        from: usage.span.map(|s| time(s.0)),
        to: usage.span.map(|s| time(s.1)),
    };
    let summary = format!(
        "{} entries, {} to {}",
        usage.entries,
        span.from.as_deref().unwrap_or("-"),
        span.to.as_deref().unwrap_or("-")
    );
    let proposal = proposal::propose(config, &rules, options.terraform, &summary);
    Ok(Report {
        window: Window {
            since: match options.since {
                Since::All => "all".to_string(),
                Since::At(t) => time(t),
                Since::Before(d) => format!("{}s", d.num_seconds()),
            },
            from: from.map(time),
            to: all.map(|a| time(a.1)),
        },
        input: InputReport {
            entries: total,
            span: Span {
                from: all.map(|a| time(a.0)),
                to: all.map(|a| time(a.1)),
            },
            outside_window: outside,
        },
        span,
        entries: usage.entries,
        unreadable,
        not_audit,
        unattributed: usage.unattributed,
        rules,
        matrix,
        shadow,
        findings,
        proposal,
    })
}

/// `--format text`.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_string());
    let _ = writeln!(
        out,
        "credproxy report: {} entries from {} to {} (window since {}; input {} entries from {} to {}, {} before the window)",
        report.entries,
        dash(&report.span.from),
        dash(&report.span.to),
        dash(&report.window.from),
        report.input.entries,
        dash(&report.input.span.from),
        dash(&report.input.span.to),
        report.input.outside_window
    );
    let _ = writeln!(
        out,
        "skipped: {} unreadable, {} not audit entries; {} allowed entries matched no rule\n",
        report.unreadable, report.not_audit, report.unattributed
    );
    let _ = writeln!(out, "rules:");
    for r in &report.rules {
        let _ = writeln!(
            out,
            "  {} [{}]: {} request(s), last {}\n    callers used [{}], unused [{}]\n    methods used [{}], unused [{}]\n    paths [{}]",
            r.rule,
            r.rule_hash,
            r.requests,
            dash(&r.last_used),
            r.callers_used.join(", "),
            r.callers_unused.join(", "),
            r.methods_used.join(", "),
            r.methods_unused.join(", "),
            r.paths_sample.join(", ")
        );
    }
    for s in &report.shadow {
        let _ = writeln!(
            out,
            "  shadow {}: allowed {} (shadow would deny {}), denied {} (shadow would allow {})",
            s.route,
            s.allowed_shadow_allowed + s.allowed_shadow_denied,
            s.allowed_shadow_denied,
            s.denied_shadow_allowed + s.denied_shadow_denied,
            s.denied_shadow_allowed
        );
    }
    let _ = writeln!(out, "\nfindings ({}):", report.findings.len());
    for f in &report.findings {
        let _ = write!(out, "  {}: {}", f.code, f.message);
        if let Some(n) = f.count.filter(|n| *n > 0) {
            let _ = write!(out, " [count {n}]");
        }
        if let Some(last) = &f.last_used {
            let _ = write!(out, " [last {last}]");
        }
        if !f.samples.is_empty() {
            let _ = write!(out, " [e.g. {}]", f.samples.join("; "));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nproposal (paste under shadow_allow):\n{}",
        report.proposal.yaml
    );
    if let Some(tf) = &report.proposal.terraform {
        let _ = writeln!(
            out,
            "proposal for the credproxy_config Terraform module:\n{tf}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_windows() {
        assert_eq!(Since::parse("30d"), Ok(Since::Before(Duration::days(30))));
        assert_eq!(Since::parse("2w"), Ok(Since::Before(Duration::weeks(2))));
        assert_eq!(
            Since::parse("90m"),
            Ok(Since::Before(Duration::minutes(90)))
        );
        assert_eq!(Since::parse("all"), Ok(Since::All));
        assert!(matches!(
            Since::parse("2026-11-01T00:00:00Z"),
            Ok(Since::At(_))
        ));
        for bad in ["", "d", "30", "30y", "-3d", "0d", "99999999999999999w"] {
            assert!(Since::parse(bad).is_err(), "{bad}");
        }
    }
}
