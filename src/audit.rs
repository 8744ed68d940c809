//! The audit trail: exactly one Cloud Logging structured entry per request, on stdout.
//!
//! Stages record what they learn in a [`RequestContext`] (caller, route, decision, secret
//! version, ...). The handler wraps the response body in [`Observed`], which writes the entry
//! when the body ends, fails, or is dropped (a client disconnect), so streamed sizes count and
//! every request logs exactly once. The entry is a typed struct serialised with serde_json
//! (tracing-stackdriver renames keys and cannot write `null`; `audit/json.rs` writes the
//! same bytes serde_json would, without its byte-at-a-time escaping). The finished context
//! goes to a queue bounded in bytes; a dedicated thread builds the entry, serialises and
//! writes it, so the request path neither blocks on stdout nor spends time on JSON. If the
//! queue is ever full, the entry is dropped and counted; the first drop is logged.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Serialize;
use tokio::time::Instant;

mod guard;
mod json;
mod sink;
pub use guard::{AuditGuard, Completion, Observed};
pub use sink::AuditSink;

/// Longest `requestUrl` and `userAgent`, in bytes, the truncation marker included.
pub const MAX_FIELD_BYTES: usize = 2048;
/// Longest path quoted in `message` (the URL itself is in `httpRequest`).
const MAX_MESSAGE_PATH_BYTES: usize = 256;
/// What ends a value that was cut.
const TRUNCATED: &str = "...[truncated]";

/// `text` cut to at most `max` bytes (on a character boundary), ending in `...[truncated]`
/// when it was cut.
/// `text` within `max` bytes, borrowed when it already is (nearly always).
fn bounded_str(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(bounded(text.to_string(), max))
    }
}

fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max.saturating_sub(TRUNCATED.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(TRUNCATED);
    text
}

/// Severity of an entry, as Cloud Logging names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Allowed, upstream below 500.
    Info,
    /// Denied, limited, or upstream 5xx passed back.
    Warning,
    /// credproxy's own 5xx.
    Error,
    /// Decoy hit.
    Alert,
}

/// Cloud Logging's `httpRequest`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest<'a> {
    /// Method.
    pub request_method: &'a str,
    /// Path and query as received, without the injected query parameter.
    pub request_url: Cow<'a, str>,
    /// Status sent to the caller.
    pub status: u16,
    /// `"0.012s"`.
    pub latency: String,
    /// Client address.
    pub remote_ip: Option<String>,
    /// Caller's `User-Agent`.
    pub user_agent: Option<Cow<'a, str>>,
    /// Response body bytes sent.
    pub response_size: String,
}

/// One audit entry (SPEC, "Audit entry"), borrowing from the request's context: it is
/// written at once and dropped.
#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    /// INFO, WARNING, ERROR or ALERT.
    pub severity: Severity,
    /// Human summary.
    pub message: String,
    /// RFC 3339.
    pub time: String,
    /// The request.
    #[serde(rename = "httpRequest")]
    pub http_request: HttpRequest<'a>,
    /// `projects/P/traces/T`.
    #[serde(
        rename = "logging.googleapis.com/trace",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace: Option<String>,
    /// Span id, 16 hex digits.
    #[serde(
        rename = "logging.googleapis.com/spanId",
        skip_serializing_if = "Option::is_none"
    )]
    pub span_id: Option<&'a str>,
    /// Whether the trace was sampled.
    #[serde(
        rename = "logging.googleapis.com/trace_sampled",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace_sampled: Option<bool>,
    /// Request id (also `X-Request-Id`).
    pub request_id: &'a str,
    /// Verified caller email.
    pub caller: Option<&'a str>,
    /// Route name.
    pub route: Option<&'a str>,
    /// `allow` once policy allowed the request, else `deny`.
    pub decision: &'static str,
    /// Error code or refined reason; null for upstream responses passed through.
    pub reason: Option<&'static str>,
    /// Secret reference without version.
    pub secret: Option<&'a str>,
    /// Resolved version id.
    pub secret_version: Option<&'a str>,
    /// Upstream status.
    pub upstream_status: Option<u16>,
    /// Configured environment label.
    pub environment: Option<&'a str>,
    /// Scrubbed occurrences of the credential in the response.
    pub scrubbed: u64,
    /// Replayed once after an upstream 401 with a newer secret version.
    pub retried: bool,
    /// Key path of the rule that allowed the request (allowed entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'a str>,
    /// `rule_hash` of that rule (allowed entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_hash: Option<&'a str>,
    /// The shadow decision, on routes with `shadow_allow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<&'a ShadowEntry>,
    /// The caller's `X-Credproxy-Labels`, exactly the kept pairs (absent when none).
    #[serde(
        rename = "logging.googleapis.com/labels",
        skip_serializing_if = "Option::is_none"
    )]
    pub labels: Option<std::collections::BTreeMap<&'a str, &'a str>>,
}

/// The audit entry's `shadow`: what `shadow_allow` would have decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShadowEntry {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// `routes.R.shadow_allow[i]` when a shadow rule would allow, else null.
    pub rule: Option<Arc<str>>,
}

/// What the stages learned about one request.
#[derive(Debug)]
pub struct RequestContext {
    /// The request id.
    pub request_id: HeaderValue,
    started: Instant,
    method: Method,
    /// Path and query for `requestUrl`.
    pub request_url: String,
    user_agent: Option<String>,
    trace: Option<Trace>,
    /// Verified caller.
    pub caller: Option<Arc<str>>,
    /// Route name.
    pub route: Option<Arc<str>>,
    /// Whether policy allowed the request.
    pub allowed: bool,
    /// Refusal reason.
    pub reason: Option<&'static str>,
    /// Secret reference without version.
    pub secret: Option<Arc<str>>,
    /// Resolved version.
    pub secret_version: Option<String>,
    /// Status the upstream answered.
    pub upstream_status: Option<u16>,
    /// Scrub counter, shared with the response stream.
    pub scrubbed: Arc<AtomicU64>,
    /// Whether the request was replayed after an upstream 401 with a newer credential.
    pub retried: bool,
    /// Whether a decoy route or caller was touched.
    pub decoy: bool,
    /// The client's address (after `trusted_proxy_hops`).
    pub client_ip: Option<std::net::IpAddr>,
    /// Time from sending upstream to the upstream's response headers.
    pub upstream_elapsed: Option<std::time::Duration>,
    /// The rule that allowed the request.
    pub rule: Option<crate::policy::RuleId>,
    /// The shadow decision, on routes with `shadow_allow`.
    pub shadow: Option<ShadowEntry>,
    /// The caller's labels (`X-Credproxy-Labels`), as kept.
    labels: Vec<(String, String)>,
}

/// Trace ids from `traceparent` or `X-Cloud-Trace-Context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: Option<String>,
    /// Sampled flag.
    pub sampled: Option<bool>,
}

/// Parses W3C `traceparent` (`00-TRACE-SPAN-FLAGS`), else `X-Cloud-Trace-Context`
/// (`TRACE/SPAN;o=1`, span in decimal).
pub fn parse_trace(headers: &HeaderMap) -> Option<Trace> {
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
    };
    // Named by constants: a `&str` key is parsed into a header name on every lookup.
    const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    const CLOUD_TRACE: http::HeaderName = http::HeaderName::from_static("x-cloud-trace-context");
    if let Some(tp) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        let mut parts = tp.trim().split('-');
        if let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
            && version.len() == 2
            && version.bytes().all(|b| b.is_ascii_hexdigit())
            && version != "ff"
            && hex(trace, 32)
            && hex(span, 16)
            && flags.len() == 2
            && let Ok(flags) = u8::from_str_radix(flags, 16)
        {
            return Some(Trace {
                trace_id: trace.to_ascii_lowercase(),
                span_id: Some(span.to_ascii_lowercase()),
                sampled: Some(flags & 1 == 1),
            });
        }
    }
    let ctx = headers.get(CLOUD_TRACE)?.to_str().ok()?;
    let (ids, options) = ctx.split_once(';').unwrap_or((ctx, ""));
    let (trace, span) = ids.split_once('/').unwrap_or((ids, ""));
    if !hex(trace, 32) {
        return None;
    }
    let span_id = span
        .parse::<u64>()
        .ok()
        .filter(|s| *s != 0)
        .map(|s| format!("{s:016x}"));
    let sampled = options.strip_prefix("o=").map(|o| o.trim() == "1");
    Some(Trace {
        trace_id: trace.to_ascii_lowercase(),
        span_id,
        sampled,
    })
}

impl RequestContext {
    /// Starts the context of a request.
    pub fn new(
        request_id: HeaderValue,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        optional: crate::headers::Optional,
        client_ip: Option<std::net::IpAddr>,
    ) -> Self {
        RequestContext {
            request_id,
            started: Instant::now(),
            method: method.clone(),
            request_url: audit_url(uri.path(), uri.query()),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            trace: optional.trace.then(|| parse_trace(headers)).flatten(),
            caller: None,
            route: None,
            allowed: false,
            reason: None,
            secret: None,
            secret_version: None,
            upstream_status: None,
            scrubbed: Arc::new(AtomicU64::new(0)),
            retried: false,
            decoy: false,
            client_ip,
            upstream_elapsed: None,
            rule: None,
            shadow: None,
            labels: if optional.labels {
                crate::headers::caller_labels(headers)
            } else {
                Vec::new()
            },
        }
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// About how much memory this context holds, for the audit queue's bound.
    fn held_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + self.request_url.len()
            + text(&self.user_agent)
            + text(&self.secret_version)
            + self.trace.as_ref().map_or(0, |t| t.trace_id.len() + 16)
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
    }

    /// Records the query actually forwarded (without the injected parameter), when it is not
    /// the query of `uri` the context was made with.
    pub fn set_query(&mut self, uri: &http::Uri, query: Option<&str>) {
        if query != uri.query() {
            self.request_url = audit_url(uri.path(), query);
        }
    }

    #[cfg(test)]
    fn entry<'a>(
        &'a self,
        status: StatusCode,
        response_size: u64,
        config: &'a AuditConfig,
    ) -> AuditEntry<'a> {
        let end = Ended {
            status,
            response_size,
            latency: self.started.elapsed(),
            time: std::time::SystemTime::now(),
        };
        self.entry_at(&end, config)
    }

    /// The entry of a request that ended as `end` says.
    fn entry_at<'a>(&'a self, end: &Ended, config: &'a AuditConfig) -> AuditEntry<'a> {
        let Ended {
            status,
            response_size,
            latency,
            time,
        } = *end;
        let status_u16 = status.as_u16();
        let own_5xx = self.upstream_status.is_none() && status.is_server_error();
        let severity = if self.reason == Some("decoy") {
            Severity::Alert
        } else if own_5xx && self.reason != Some("overloaded") {
            Severity::Error
        } else if !self.allowed || self.reason.is_some() || status.is_server_error() {
            Severity::Warning
        } else {
            Severity::Info
        };
        let decision = if self.allowed { "allow" } else { "deny" };
        // Only an allowed entry names a rule.
        let rule = self.rule.as_ref().filter(|_| self.allowed);
        // The path only, bounded: the whole URL is in httpRequest.requestUrl.
        let path = self.request_url.split('?').next().unwrap_or_default();
        let path = bounded_str(path, MAX_MESSAGE_PATH_BYTES);
        let mut message = String::with_capacity(path.len() + 48);
        message.push_str(decision);
        message.push(' ');
        message.push_str(self.method.as_str());
        message.push(' ');
        message.push_str(&path);
        message.push_str(" -> ");
        message.push_str(status.as_str());
        if let Some(reason) = self.reason {
            message.push_str(" (");
            message.push_str(reason);
            message.push(')');
        }
        let (trace, span_id, trace_sampled) = match (&self.trace, &config.project_id) {
            (Some(t), Some(project)) => (
                Some(format!("projects/{project}/traces/{}", t.trace_id)),
                t.span_id.as_deref(),
                t.sampled,
            ),
            _ => (None, None, None),
        };
        AuditEntry {
            severity,
            message,
            time: rfc3339_micros(time),
            http_request: HttpRequest {
                request_method: self.method.as_str(),
                request_url: bounded_str(&self.request_url, MAX_FIELD_BYTES),
                status: status_u16,
                latency: seconds_text(latency),
                // Formatted here, on the writer's thread.
                remote_ip: self.client_ip.map(ip_text),
                user_agent: self
                    .user_agent
                    .as_deref()
                    .map(|ua| bounded_str(ua, MAX_FIELD_BYTES)),
                response_size: itoa::Buffer::new().format(response_size).to_string(),
            },
            trace,
            span_id,
            trace_sampled,
            request_id: self.request_id.to_str().unwrap_or_default(),
            caller: self.caller.as_deref(),
            route: self.route.as_deref(),
            decision,
            reason: self.reason,
            secret: self.secret.as_deref(),
            secret_version: self.secret_version.as_deref(),
            upstream_status: self.upstream_status,
            environment: config.environment.as_deref(),
            scrubbed: self.scrubbed.load(Ordering::Relaxed),
            retried: self.retried,
            rule_hash: rule.map(|r| &*r.hash),
            rule: rule.map(|r| &*r.key),
            shadow: self.shadow.as_ref(),
            labels: (!self.labels.is_empty()).then(|| {
                self.labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            }),
        }
    }
}

/// `2026-11-26T03:05:33.123456Z`, as chrono's `to_rfc3339_opts(Micros, true)` writes it. The
/// part up to the seconds is formatted once per second per thread, not per entry.
fn rfc3339_micros(now: std::time::SystemTime) -> String {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            *prefix = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            *cached = secs;
        }
        let mut out = String::with_capacity(prefix.len() + 8);
        out.push_str(prefix);
        out.push('.');
        push_micros(&mut out, since.subsec_micros());
        out.push('Z');
        out
    })
}

/// `"0.012345s"`: whole seconds, then six digits of microseconds (no `format!`: it is on
/// every entry).
fn seconds_text(d: std::time::Duration) -> String {
    let mut out = String::with_capacity(16);
    out.push_str(itoa::Buffer::new().format(d.as_secs()));
    out.push('.');
    push_micros(&mut out, d.subsec_micros());
    out.push('s');
    out
}

/// Microseconds below one second as exactly six digits.
fn push_micros(out: &mut String, micros: u32) {
    let mut digits = [b'0'; 6];
    let mut rest = micros % 1_000_000;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits.iter().for_each(|&d| out.push(char::from(d)));
}

/// An address as `Display` writes it; IPv4 without the formatting machinery (it is on
/// every entry).
pub fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(octet));
            }
            out
        }
        std::net::IpAddr::V6(v6) => v6.to_string(),
    }
}

/// Query parameters that carry caller tokens if a client puts them in the URL by mistake:
/// their values never reach the audit log.
const TOKEN_PARAMS: [&str; 3] = ["access_token", "id_token", "token"];

fn audit_url(path: &str, query: Option<&str>) -> String {
    let mut url = String::with_capacity(path.len() + query.map_or(0, str::len) + 1);
    url.push_str(path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                url.push('&');
            }
            let name = pair.split('=').next().unwrap_or_default();
            if TOKEN_PARAMS.iter().any(|t| name.eq_ignore_ascii_case(t)) {
                url.push_str(name);
                url.push_str("=[redacted]");
            } else {
                url.push_str(pair);
            }
        }
    }
    url
}

/// Static parts of every entry.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `environment` label.
    pub environment: Option<String>,
    /// Project id for trace names.
    pub project_id: Option<String>,
}

/// How a request ended: what its entry needs beyond its context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended {
    status: StatusCode,
    response_size: u64,
    latency: std::time::Duration,
    time: std::time::SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_formatted_numbers_match_format() {
        for (secs, micros) in [(0, 0), (0, 7), (1, 123_456), (59, 999_999), (86_400, 10)] {
            let d = std::time::Duration::new(secs, micros * 1000 + 999);
            assert_eq!(seconds_text(d), format!("{secs}.{micros:06}s"));
        }
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "192.168.100.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("ip");
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn entry_times_match_chrono_rfc3339_with_micros() {
        let base = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        for offset_us in [0u64, 1, 999_999, 1_000_000, 1_234_567, 86_400_000_001] {
            let t = base + std::time::Duration::from_micros(offset_us);
            let want = chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(rfc3339_micros(t), want);
            // Twice: the second comes from the per-second cache.
            assert_eq!(rfc3339_micros(t), want);
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn parses_traceparent() {
        let t = parse_trace(&headers(&[(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )]))
        .expect("trace");
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(t.sampled, Some(true));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-xyz-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let h = HeaderMap::from_iter([(
                http::header::HeaderName::from_static("traceparent"),
                HeaderValue::from_str(bad).expect("value"),
            )]);
            assert_eq!(parse_trace(&h), None, "{bad}");
        }
    }

    #[test]
    fn parses_x_cloud_trace_context() {
        let t = parse_trace(&headers(&[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )]))
        .expect("trace");
        assert_eq!(t.trace_id, "105445aa7843bc8bf206b12000100000");
        assert_eq!(t.span_id.as_deref(), Some("0000000000000001"));
        assert_eq!(t.sampled, Some(true));
        // traceparent wins when both are present.
        let t = parse_trace(&headers(&[
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/1;o=1",
            ),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        ]))
        .expect("trace");
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.sampled, Some(false));
    }

    #[test]
    fn audit_urls_never_carry_token_parameters() {
        assert_eq!(
            audit_url("/r/x", Some("a=1&access_token=eyJ.x.y&TOKEN=z")),
            "/r/x?a=1&access_token=[redacted]&TOKEN=[redacted]"
        );
        assert_eq!(audit_url("/r/x", None), "/r/x");
    }

    fn cx() -> RequestContext {
        let h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        RequestContext::new(
            HeaderValue::from_static("rid"),
            &Method::GET,
            &"/api/v1/x?a=1".parse().expect("uri"),
            &h,
            crate::headers::optional(&h),
            Some([10, 0, 0, 1].into()),
        )
    }

    #[test]
    fn severity_follows_the_spec() {
        let config = AuditConfig {
            environment: Some("prod".to_string()),
            project_id: Some("acme".to_string()),
        };
        let mut allowed = cx();
        allowed.allowed = true;
        allowed.upstream_status = Some(200);
        let e = allowed.entry(StatusCode::OK, 10, &config);
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(e.decision, "allow");
        assert_eq!(
            e.trace.as_deref(),
            Some("projects/acme/traces/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["httpRequest"]["requestUrl"], "/api/v1/x?a=1");
        assert_eq!(json["httpRequest"]["responseSize"], "10");
        assert!(json["reason"].is_null());
        assert_eq!(json["logging.googleapis.com/spanId"], "00f067aa0ba902b7");

        let mut upstream_5xx = cx();
        upstream_5xx.allowed = true;
        upstream_5xx.upstream_status = Some(503);
        assert_eq!(
            upstream_5xx
                .entry(StatusCode::SERVICE_UNAVAILABLE, 0, &config)
                .severity,
            Severity::Warning
        );

        let mut own_5xx = cx();
        own_5xx.allowed = true;
        own_5xx.reason = Some("upstream_unreachable");
        assert_eq!(
            own_5xx.entry(StatusCode::BAD_GATEWAY, 0, &config).severity,
            Severity::Error
        );

        let mut denied = cx();
        denied.reason = Some("forbidden");
        let e = denied.entry(StatusCode::FORBIDDEN, 0, &config);
        assert_eq!((e.severity, e.decision), (Severity::Warning, "deny"));

        let mut decoy = cx();
        decoy.reason = Some("decoy");
        assert_eq!(
            decoy.entry(StatusCode::NOT_FOUND, 0, &config).severity,
            Severity::Alert
        );

        let no_project = AuditConfig {
            environment: None,
            project_id: None,
        };
        assert!(cx().entry(StatusCode::OK, 0, &no_project).trace.is_none());
    }

    /// A writer that never returns until released: stdout stuck behind a full pipe.
    struct Stuck(std::sync::Arc<std::sync::Barrier>);

    impl std::io::Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.wait();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_drops_are_counted() {
        let release = std::sync::Arc::new(std::sync::Barrier::new(2));
        let config = AuditConfig {
            environment: None,
            project_id: None,
        };
        let sink =
            AuditSink::start(config.clone(), Box::new(Stuck(release.clone()))).expect("sink");
        // A context holding 64 KiB (its URL; the entry would cut it, the queue counts it).
        let big = || {
            let mut cx = cx();
            cx.request_url = "x".repeat(64 * 1024);
            AuditGuard::new(cx, &sink)
        };
        let mut written = 0usize;
        while sink.dropped() == 0 {
            big().finish(StatusCode::OK, 0);
            written += 1;
            assert!(written < 10_000, "nothing was ever dropped");
        }
        // About 64 MiB of 64 KiB contexts were taken before the first drop (plus the few
        // the writer took out: their lines, cut to 2 KiB, fill its 64 KiB buffer first).
        assert!(
            (1000..=1060).contains(&written),
            "{written} entries before a drop"
        );
        assert!(sink.queued.load(Ordering::Acquire) <= sink::QUEUE_BYTES);
        big().finish(StatusCode::OK, 0);
        assert_eq!(sink.dropped(), 2);
        drop(release);
    }

    #[test]
    fn long_fields_are_cut_with_a_marker_inside_the_limit() {
        let cut = bounded("a".repeat(5000), MAX_FIELD_BYTES);
        assert_eq!(cut.len(), MAX_FIELD_BYTES);
        assert!(cut.ends_with("...[truncated]"));
        assert_eq!(bounded("short".to_string(), MAX_FIELD_BYTES), "short");
        let multibyte = bounded("é".repeat(3000), MAX_FIELD_BYTES);
        assert!(multibyte.len() <= MAX_FIELD_BYTES && multibyte.ends_with("[truncated]"));
    }
}
