//! Path normalisation: a request target split into the route name, the decoded path policy
//! judges and the canonical encoded path that is forwarded, or refused (400).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Why a request target was rejected before policy (400 `bad_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The target is not in origin form (`/path`).
    #[error("the request target must be a path starting with `/`")]
    NotOriginForm,
    /// `//` somewhere in the path, or a segment that is only path parameters (`;x`).
    #[error("the path has an empty segment (`//` or `/;`)")]
    EmptySegment,
    /// `.` or `..`, raw or encoded.
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    /// Encoded `/` or `\`, raw `\`, NUL or another control character.
    #[error("the path has an encoded `/`, a `\\`, NUL or a control character")]
    ForbiddenCharacter,
    /// A `%` not followed by two hex digits.
    #[error("the path has a `%` that is not followed by two hex digits")]
    BadEscape,
    /// `%25` followed by two hex digits: a double-encoded byte, which an upstream that
    /// decodes twice would read as something policy never judged (`%252e%252e` is `..`).
    #[error("the path has a double-encoded byte (`%25` followed by two hex digits)")]
    DoubleEncoded,
    /// A percent-encoding that does not decode to UTF-8.
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    /// No route segment at all.
    #[error("the path names no route: use /ROUTE/PATH")]
    NoRoute,
}

/// A normalised request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// First segment, decoded: the route name.
    pub route: Cow<'a, str>,
    /// The rest of the path, decoded, starting with `/` (policy judges this).
    pub path: Cow<'a, str>,
    /// The rest of the path in canonical percent-encoding (this is forwarded).
    pub upstream_path: Cow<'a, str>,
}

/// Splits and normalises an origin-form path (`/route/rest`), rejecting anything that could
/// be read differently by credproxy and the upstream.
///
/// Policy judges the fully decoded path. The upstream gets the canonical form: escapes of
/// unreserved characters decoded (`%41` is `A`), every other escape kept with upper-case hex
/// (so an encoded `;` or `?` stays data), raw characters as sent. A `%` that is not followed
/// by two hex digits (`%u002e`, which lenient servers decode) is rejected.
pub fn normalise(raw: &str) -> Result<Target<'_>, PathError> {
    if let Some(plain) = plain_target(raw) {
        return plain;
    }
    normalise_escaped(raw)
}

/// The bytes a path can hold without anything to decode or check beyond segments: visible
/// ASCII but `%`, `;` and `\\`.
fn is_plain(byte: u8) -> bool {
    byte > b' ' && byte < 0x7f && byte != b'%' && byte != b';' && byte != b'\\'
}

/// [`normalise`] of a path of plain bytes only (nearly every request), with its result
/// (`None` for any other path): the segments need no decoding, so only empty and dot
/// segments are refused, and everything is borrowed.
fn plain_target(raw: &str) -> Option<Result<Target<'_>, PathError>> {
    let bytes = raw.as_bytes();
    // No early exit, so it vectorises.
    if bytes.first() != Some(&b'/') || !bytes.iter().fold(true, |all, &b| all & is_plain(b)) {
        return None;
    }
    let after = &raw[1..];
    // Byte scans rather than `find` and `split`: a path is a few dozen bytes, and their
    // searcher set-up cost more than the scan.
    let (route, rest) = match after.bytes().position(|b| b == b'/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    if route.is_empty() {
        return Some(Err(if rest.is_empty() {
            PathError::NoRoute
        } else {
            PathError::EmptySegment
        }));
    }
    if route == "." || route == ".." {
        return Some(Err(PathError::DotSegment));
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    // Each segment after the route: empty only as the last one, never `.` or `..`.
    let is_dots = |len: usize, dots: usize| len > 0 && len <= 2 && dots == len;
    let (mut len, mut dots) = (0usize, 0usize);
    for &b in &rest.as_bytes()[1..] {
        if b == b'/' {
            if len == 0 {
                return Some(Err(PathError::EmptySegment));
            }
            if is_dots(len, dots) {
                return Some(Err(PathError::DotSegment));
            }
            (len, dots) = (0, 0);
        } else {
            len += 1;
            dots += usize::from(b == b'.');
        }
    }
    if is_dots(len, dots) {
        return Some(Err(PathError::DotSegment));
    }
    Some(Ok(Target {
        route: Cow::Borrowed(route),
        path: Cow::Borrowed(rest),
        upstream_path: Cow::Borrowed(rest),
    }))
}

/// [`normalise`] of any path: each segment decoded and checked.
fn normalise_escaped(raw: &str) -> Result<Target<'_>, PathError> {
    let Some(after) = raw.strip_prefix('/') else {
        return Err(PathError::NotOriginForm);
    };
    if raw.contains('\\') {
        return Err(PathError::ForbiddenCharacter);
    }
    let (route_raw, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    if route_raw.is_empty() {
        return Err(if rest.is_empty() {
            PathError::NoRoute
        } else {
            PathError::EmptySegment
        });
    }
    let route = decode_segment(route_raw)?;
    // `/route` and `/route/` both mean the upstream's base path.
    let rest = if rest.is_empty() { "/" } else { rest };
    let segments = &rest[1..];
    let mut escaped = false;
    let mut segs = segments.split('/').peekable();
    while let Some(seg) = segs.next() {
        if seg.is_empty() && segs.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
        decode_segment(seg)?;
        escaped |= seg.contains('%');
    }
    if !escaped {
        return Ok(Target {
            route,
            path: Cow::Borrowed(rest),
            upstream_path: Cow::Borrowed(rest),
        });
    }
    let mut path = String::with_capacity(rest.len());
    let mut upstream = String::with_capacity(rest.len());
    for seg in segments.split('/') {
        path.push('/');
        path.push_str(&decode_segment(seg)?);
        upstream.push('/');
        canonical_segment(seg, &mut upstream);
    }
    Ok(Target {
        route,
        path: Cow::Owned(path),
        upstream_path: Cow::Owned(upstream),
    })
}

/// Appends `seg` with unreserved escapes decoded and other escapes in upper-case hex.
/// `seg` was validated by [`decode_segment`], so every `%` starts a valid escape.
fn canonical_segment(seg: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = seg.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let value = (hex_value(bytes[i + 1]) << 4) | hex_value(bytes[i + 2]);
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(value as char);
            } else {
                out.push('%');
                out.push(HEX[(value >> 4) as usize] as char);
                out.push(HEX[(value & 15) as usize] as char);
            }
            i += 3;
        } else {
            // Copy the run up to the next escape as is.
            let next = seg[i..].find('%').map_or(bytes.len(), |n| i + n);
            out.push_str(&seg[i..next]);
            i = next;
        }
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Decodes one segment for policy, rejecting what could be read differently upstream.
fn decode_segment(seg: &str) -> Result<Cow<'_, str>, PathError> {
    let decoded = if seg.contains('%') {
        let bytes = seg.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return Err(PathError::BadEscape);
            }
            if *b == b'%'
                && bytes.get(i + 1) == Some(&b'2')
                && bytes.get(i + 2) == Some(&b'5')
                && bytes.get(i + 3).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 4).is_some_and(u8::is_ascii_hexdigit)
            {
                return Err(PathError::DoubleEncoded);
            }
        }
        percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| PathError::NotUtf8)?
    } else {
        Cow::Borrowed(seg)
    };
    // `..;x` is `..` to servers that strip path parameters (Tomcat, Jetty), and `;x` is an
    // empty segment to them.
    let before_params = decoded.split(';').next().unwrap_or_default();
    if before_params == "." || before_params == ".." {
        return Err(PathError::DotSegment);
    }
    if before_params.is_empty() && !decoded.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if decoded
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(PathError::ForbiddenCharacter);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_plain_paths_take_the_fast_path() {
        assert!(plain_target("/r/v1/items").is_some());
        assert!(plain_target("/r/..").is_some_and(|t| t == Err(PathError::DotSegment)));
        for raw in [
            "/r/a%41",
            "/r/a;b",
            "/r/a\\b",
            "/r/é",
            "/r/a b",
            "r/a",
            "/r/\u{7f}",
        ] {
            assert!(plain_target(raw).is_none(), "{raw}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn the_fast_path_agrees_with_the_general_one(
            raw in "(/([a-zA-Z0-9._~!$&'()*+,=:@-]{0,6}|\\.|\\.\\.|%41|;x)){0,6}/?",
        ) {
            if let Some(fast) = plain_target(&raw) {
                prop_assert_eq!(fast, normalise_escaped(&raw));
            }
        }
    }
}
