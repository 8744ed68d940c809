//! The request vocabulary every layer shares: the request id, the client address, and the
//! tables of headers credproxy owns (hop-by-hop and framing headers, and caller headers that
//! are never forwarded). No imports from the rest of the crate, so config, injection and the
//! proxy can all use it.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Credproxy-Error`: the error code, on every response credproxy answers itself (never on
/// an upstream response passed through, which loses any header of that name).
pub const X_CREDPROXY_ERROR: HeaderName = HeaderName::from_static("x-credproxy-error");
/// `X-Credproxy-Labels`: the caller's `key=value` labels for its audit entry; never forwarded.
pub const X_CREDPROXY_LABELS: HeaderName = HeaderName::from_static("x-credproxy-labels");
/// At most this many caller labels are kept.
pub const MAX_LABELS: usize = 8;

/// The caller's labels (SPEC, "Caller labels"): the `key=value` pairs of every
/// `X-Credproxy-Labels` header, in order, with key `[a-z0-9_]{1,32}` and value
/// `[A-Za-z0-9._:/+-]{1,128}`. A pair that does not match, or repeats a key already kept, is
/// dropped (never an error); the first [`MAX_LABELS`] valid pairs are kept. Whitespace around
/// a pair, its key and its value is ignored.
pub fn caller_labels(headers: &HeaderMap) -> Vec<(String, String)> {
    let key_ok = |k: &str| {
        (1..=32).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let value_ok = |v: &str| {
        (1..=128).contains(&v.len())
            && v.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'+' | b'-')
            })
    };
    let mut kept: Vec<(String, String)> = Vec::new();
    let pairs = headers
        .get_all(X_CREDPROXY_LABELS)
        .iter()
        // Split the raw bytes: a pair with a non-ASCII byte is dropped on its own, not the
        // whole header (`to_str` fails for the header as a whole).
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|pair| std::str::from_utf8(pair).ok());
    for pair in pairs {
        if kept.len() == MAX_LABELS {
            break;
        }
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim_matches(is_ows), value.trim_matches(is_ows));
        if key_ok(key) && value_ok(value) && !kept.iter().any(|(k, _)| k == key) {
            kept.push((key.to_string(), value.to_string()));
        }
    }
    kept
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A caller-supplied request id is kept when it is a sane token, else one is generated.
pub fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    request_id_of(headers, true)
}

/// [`request_id`], told whether the request carries `X-Request-Id` (see [`optional`]).
pub fn request_id_of(headers: &http::HeaderMap, present: bool) -> HeaderValue {
    if present && let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        {
            return v.clone();
        }
    }
    // 32 hex digits of a random u128, without `format!` (this is on every request).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u128>();
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Shared from the start: the id is cloned into the upstream request and the response,
    // and a clone of bytes made from a `Vec` allocates again to share them.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Which of the optional request headers credproxy reads are there.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Optional {
    /// `X-Request-Id`.
    pub request_id: bool,
    /// `X-Credproxy-Labels`.
    pub labels: bool,
    /// `traceparent` or `X-Cloud-Trace-Context`.
    pub trace: bool,
}

/// [`Optional`] in one pass over the header names: most requests carry none of these, and
/// a lookup of each would hash its name.
pub fn optional(headers: &HeaderMap) -> Optional {
    let mut found = Optional::default();
    for name in headers.keys() {
        match name.as_str() {
            "x-request-id" => found.request_id = true,
            "x-credproxy-labels" => found.labels = true,
            "traceparent" | "x-cloud-trace-context" => found.trace = true,
            _ => {}
        }
    }
    found
}

/// The client's address: the TCP peer, or with `trusted_proxy_hops = n` the n-th
/// `X-Forwarded-For` entry from the right (each trusted proxy appends the address it saw;
/// entries further left are whatever the client sent). `None` when there are fewer entries
/// than trusted hops: requests then fail any `source_ranges` check.
pub fn client_address(
    headers: &http::HeaderMap,
    peer: Option<IpAddr>,
    hops: usize,
) -> Option<IpAddr> {
    if hops == 0 {
        return peer;
    }
    let entry = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','))
        .nth(hops - 1)?;
    entry.trim().parse::<IpAddr>().ok()
}

/// Headers that describe one connection or the framing of one message.
pub fn is_hop_by_hop_or_framing(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Caller headers that are never forwarded (besides the injected credential's name and the
/// headers named in `Connection`).
pub fn is_protected_request_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    is_hop_by_hop_or_framing(name)
        || n.starts_with("proxy-")
        || n.starts_with("x-forwarded-")
        || matches!(
            n,
            "authorization"
                | "x-serverless-authorization"
                | "cookie"
                | "x-http-method-override"
                | "x-http-method"
                | "x-method-override"
                | "forwarded"
                | "x-real-ip"
                | "expect"
                | "x-request-id"
                | "x-original-url"
                | "x-rewrite-url"
                | "x-original-uri"
                | "true-client-ip"
                | "x-client-ip"
                | "cf-connecting-ip"
                | "fastly-client-ip"
                | "x-cluster-client-ip"
                | "x-credproxy-labels"
        )
}

/// Connection tokens (lowercase) the caller listed in `Connection`.
pub fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    let mut values = headers.get_all(header::CONNECTION).iter();
    // What nearly every message carries: no `Connection`, or just `keep-alive` (skipped
    // below too), answered without splitting.
    match values.next() {
        None => return Vec::new(),
        Some(only)
            if values.next().is_none() && only.as_bytes().eq_ignore_ascii_case(b"keep-alive") =>
        {
            return Vec::new();
        }
        Some(_) => {}
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `keep-alive` (what nearly every HTTP/1.1 server sends) names a header that is
        // dropped as hop-by-hop anyway: skipping it spares a String per message.
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("keep-alive"))
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_finds_each_header_in_any_case() {
        let mut h = HeaderMap::new();
        assert_eq!(optional(&h), Optional::default());
        h.insert("x-other", HeaderValue::from_static("1"));
        assert_eq!(optional(&h), Optional::default());
        h.insert("X-Request-Id", HeaderValue::from_static("abc"));
        h.insert("X-Cloud-Trace-Context", HeaderValue::from_static("t/1"));
        assert_eq!(
            optional(&h),
            Optional {
                request_id: true,
                labels: false,
                trace: true
            }
        );
        h.append("x-credproxy-labels", HeaderValue::from_static("a=b"));
        h.remove("x-cloud-trace-context");
        h.insert("traceparent", HeaderValue::from_static("00-x"));
        assert_eq!(
            optional(&h),
            Optional {
                request_id: true,
                labels: true,
                trace: true
            }
        );
    }

    #[test]
    fn client_address_trusts_only_the_configured_hops() {
        let peer: Option<IpAddr> = "10.0.0.9".parse().ok();
        let mut h = http::HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        assert_eq!(client_address(&h, peer, 0), peer);
        assert_eq!(client_address(&h, peer, 1), "1.2.3.4".parse().ok());
        assert_eq!(client_address(&h, peer, 2), "6.6.6.6".parse().ok());
        assert_eq!(client_address(&h, peer, 3), None);
        h.append("x-forwarded-for", HeaderValue::from_static("5.5.5.5"));
        assert_eq!(client_address(&h, peer, 1), "5.5.5.5".parse().ok());
        assert_eq!(client_address(&http::HeaderMap::new(), peer, 1), None);
    }

    fn labels(values: &[&str]) -> Vec<(String, String)> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_CREDPROXY_LABELS, HeaderValue::from_str(v).expect("value"));
        }
        caller_labels(&h)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_non_ascii_pair_is_dropped_alone_not_the_whole_header() {
        let mut h = HeaderMap::new();
        h.append(
            X_CREDPROXY_LABELS,
            HeaderValue::from_bytes("dag_id=daily_sales, note=caf\u{e9}, try_number=2".as_bytes())
                .expect("obs-text is a valid header value"),
        );
        assert_eq!(
            caller_labels(&h),
            pairs(&[("dag_id", "daily_sales"), ("try_number", "2")])
        );
    }

    #[test]
    fn caller_labels_keep_valid_pairs_in_order_and_drop_the_rest() {
        assert_eq!(
            labels(&["dag_id=daily_sales, task_id=pull.charges ,try_number=2"]),
            pairs(&[
                ("dag_id", "daily_sales"),
                ("task_id", "pull.charges"),
                ("try_number", "2")
            ])
        );
        // Bad keys (upper case, too long, empty, other characters) and bad values are dropped.
        let long_key = "k".repeat(33);
        let long_value = "v".repeat(129);
        let header = format!(
            "Dag=x, {long_key}=x, =x, a-b=x, ok=1, v={long_value}, e=, q=a b, j=\"x\", novalue, run_id=manual__2026-12-01T06:00:00+00:00"
        );
        assert_eq!(
            labels(&[&header]),
            pairs(&[("ok", "1"), ("run_id", "manual__2026-12-01T06:00:00+00:00")])
        );
        // Limits are inclusive.
        let k32 = "k".repeat(32);
        let v128 = "v".repeat(128);
        assert_eq!(labels(&[&format!("{k32}={v128}")]), pairs(&[(&k32, &v128)]));
        // A repeated key keeps its first value; several headers are read in order.
        assert_eq!(
            labels(&["a=1, a=2", "b=3"]),
            pairs(&[("a", "1"), ("b", "3")])
        );
        // The first 8 valid pairs only.
        let many: Vec<String> = (0..12).map(|i| format!("k{i}=v{i}")).collect();
        let kept = labels(&[&format!("bad!=x, {}", many.join(","))]);
        assert_eq!(kept.len(), MAX_LABELS);
        assert_eq!(kept[0], ("k0".to_string(), "v0".to_string()));
        assert_eq!(kept[7], ("k7".to_string(), "v7".to_string()));
        assert!(labels(&[]).is_empty());
        assert!(is_protected_request_header(&X_CREDPROXY_LABELS));
    }

    #[test]
    fn keeps_sane_request_ids_and_replaces_others() {
        let mut h = http::HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc.DEF_1-2"));
        assert_eq!(request_id(&h), "abc.DEF_1-2");
        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).expect("value"));
            let id = request_id(&h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
    }
}
