//! Response scrubbing: an upstream that echoes the request (debug endpoints, error pages that
//! quote headers or the URL) would hand the injected credential back to the pipeline. Every
//! occurrence of the injected value in any of the forms of [`forms`] (base64 alone and
//! embedded, percent-encoding, JSON escaping, hex) is replaced with `[redacted]` in response
//! header values and in the streamed body, also when a match is split across chunks; a
//! response header whose *name* holds one is dropped.
//!
//! The body scrubber holds back, between chunks, only a tail that could still grow into a
//! match (at most `longest needle - 1` bytes), so it streams with a bounded buffer and
//! passes ordinary text on at once. Values shorter than [`MIN_SCRUB_LEN`] bytes are not
//! scrubbed: replacing every occurrence of a 3-byte value would corrupt ordinary responses.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use aho_corasick::AhoCorasick;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::HeaderValue;

/// What replaces a scrubbed value.
pub const REDACTED: &[u8] = b"[redacted]";
/// Shorter values are not scrubbed.
pub const MIN_SCRUB_LEN: usize = 8;

/// The byte strings to scrub, compiled once per secret version.
pub struct Needles {
    matcher: AhoCorasick,
    /// The same patterns, ASCII case-insensitive, for header names (which hyper lower-cases).
    names: AhoCorasick,
    max_len: usize,
    /// The shortest pattern: shorter header names and values hold no match.
    min_len: usize,
    /// The bytes a pattern starts with: a tail starting with any other byte is no prefix.
    starts: [bool; 256],
    /// Every proper prefix of every pattern: the body scrubber holds back only a tail that
    /// could still grow into a match, not a fixed `max_len - 1` bytes.
    prefixes: std::collections::HashSet<Box<[u8]>, foldhash::fast::RandomState>,
}

impl fmt::Debug for Needles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the patterns: they are the secret.
        write!(f, "Needles({} patterns)", self.matcher.patterns_len())
    }
}

impl Needles {
    /// Compiles the needles (taken as they are); `None` when none is long enough to scrub.
    pub fn new(values: &[&[u8]]) -> Option<Self> {
        let mut patterns: Vec<&[u8]> = values
            .iter()
            .copied()
            .filter(|v| v.len() >= MIN_SCRUB_LEN)
            .collect();
        patterns.sort();
        patterns.dedup();
        let max_len = patterns.iter().map(|p| p.len()).max()?;
        let min_len = patterns.iter().map(|p| p.len()).min()?;
        let mut starts = [false; 256];
        for p in &patterns {
            starts[usize::from(p[0])] = true;
        }
        let build = |case_insensitive| {
            AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .ascii_case_insensitive(case_insensitive)
                .build(&patterns)
                .ok()
        };
        let prefixes = patterns
            .iter()
            .flat_map(|p| (1..p.len()).map(|n| Box::from(&p[..n])))
            .collect();
        Some(Needles {
            matcher: build(false)?,
            names: build(true)?,
            max_len,
            min_len,
            starts,
            prefixes,
        })
    }

    /// The needles of secret texts `secrets`: every form of [`forms`] of each.
    pub fn for_secrets(secrets: &[&[u8]]) -> Option<Self> {
        let all: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| s.len() >= MIN_SCRUB_LEN)
            .flat_map(|s| forms(s))
            .collect();
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        Self::new(&refs)
    }

    /// The length of the longest tail of `buf` that could be the start of a match.
    fn open_tail(&self, buf: &[u8]) -> usize {
        (1..self.max_len.min(buf.len() + 1))
            .rev()
            .find(|&n| {
                let tail = &buf[buf.len() - n..];
                self.starts[usize::from(tail[0])] && self.prefixes.contains(tail)
            })
            .unwrap_or(0)
    }

    /// Whether a response header name holds a needle (any case): such a header is dropped.
    pub fn in_header_name(&self, name: &http::HeaderName) -> bool {
        name.as_str().len() >= self.min_len && self.names.is_match(name.as_str().as_bytes())
    }

    /// Replaces every match in `input`; returns the new bytes and the number of matches.
    pub fn replace_all(&self, input: &[u8]) -> (Vec<u8>, u64) {
        let mut out = Vec::with_capacity(input.len());
        let mut pos = 0;
        let mut count = 0;
        for m in self.matcher.find_iter(input) {
            out.extend_from_slice(&input[pos..m.start()]);
            out.extend_from_slice(REDACTED);
            pos = m.end();
            count += 1;
        }
        out.extend_from_slice(&input[pos..]);
        (out, count)
    }

    /// `body` with every match replaced, and the number of matches; a body without a match
    /// is returned as it is, uncopied.
    pub fn scrub_whole(&self, body: Bytes) -> (Bytes, u64) {
        if !self.matcher.is_match(&body[..]) {
            return (body, 0);
        }
        let (clean, count) = self.replace_all(&body);
        (Bytes::from(clean), count)
    }

    /// A scrubbed copy of a header value, or `None` when it holds no match.
    pub fn header_value(&self, value: &HeaderValue) -> Option<(HeaderValue, u64)> {
        if value.len() < self.min_len || !self.matcher.is_match(value.as_bytes()) {
            return None;
        }
        let (bytes, count) = self.replace_all(value.as_bytes());
        HeaderValue::from_bytes(&bytes).ok().map(|v| (v, count))
    }
}

/// Every form in which an upstream could hand `secret` back, each to be scrubbed:
///
/// - the value itself;
/// - standard and URL-safe base64 of the value alone (padded and unpadded), and the part of
///   a longer base64 text that only the value determines, at each of the three alignments;
/// - percent-encoding with upper- and lower-case hex, with `%20` or `+` for a space, of
///   every byte but the unreserved ones or of every byte but letters and digits;
/// - JSON string escaping: `\"`, `\\` and control characters, optionally `\/` for `/`,
///   `\uXXXX` for non-ASCII (either hex case), and Go's `\u003c`-style HTML escapes;
/// - lower- and upper-case hex of its bytes.
///
/// Forms shorter than [`MIN_SCRUB_LEN`] are dropped by [`Needles::new`].
pub fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![secret.to_vec()];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(secret).into_bytes());
    }
    // Inside a longer base64 text the value starts at byte offset 0, 1 or 2 of a 3-byte
    // group. Only the groups made of value bytes alone come out the same whatever surrounds
    // the value: encode with `k` filler bytes in front, keep the whole groups after the first
    // (for k > 0), and drop the last, partial one.
    for k in 0..3usize {
        let mut padded = vec![0u8; k];
        padded.extend_from_slice(secret);
        let whole = padded.len() / 3 * 3;
        let skip = if k > 0 { 3 } else { 0 };
        if whole > skip {
            let text = STANDARD_NO_PAD.encode(&padded[skip..whole]);
            out.push(text.replace('+', "-").replace('/', "_").into_bytes());
            out.push(text.into_bytes());
        }
    }
    for upper in [true, false] {
        for plus in [false, true] {
            for strict in [false, true] {
                out.push(percent(secret, upper, plus, strict));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(secret) {
        for slash in [false, true] {
            for ascii in [None, Some(true), Some(false)] {
                out.push(json_escaped(text, slash, ascii, false));
            }
        }
        out.push(json_escaped(text, false, None, true));
    }
    let hex_lower: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    out.push(hex_lower.to_ascii_uppercase().into_bytes());
    out.push(hex_lower.into_bytes());
    out.sort();
    out.dedup();
    out
}

/// Percent-encoding of every byte but the unreserved ones (`A-Za-z0-9-._~`; only
/// `A-Za-z0-9` when `strict`, as over-eager encoders do), with upper- or lower-case hex, and
/// with `+` for a space when `plus`.
fn percent(secret: &[u8], upper: bool, plus: bool, strict: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(secret.len() * 3);
    for &b in secret {
        if b.is_ascii_alphanumeric() || (!strict && matches!(b, b'-' | b'.' | b'_' | b'~')) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// A JSON string's content for `text`: `"`, `\` and control characters escaped, `/` as
/// `\/` when `slash`, non-ASCII as `\uXXXX` (upper-case hex when `Some(true)`) when
/// `ascii` is set, and `<`, `>`, `&` as `\u003c`... when `html` (Go's encoder).
fn json_escaped(text: &str, slash: bool, ascii: Option<bool>, html: bool) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() + 8);
    let unicode = |out: &mut String, unit: u16, upper: bool| {
        if upper {
            let _ = write!(out, "\\u{unit:04X}");
        } else {
            let _ = write!(out, "\\u{unit:04x}");
        }
    };
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if slash => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if html => unicode(&mut out, c as u16, false),
            c if (c as u32) < 0x20 => unicode(&mut out, c as u16, false),
            c if !c.is_ascii() && ascii.is_some() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    unicode(&mut out, *unit, ascii == Some(true));
                }
            }
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// A response body stream with every needle replaced, counting replacements into `count`.
pub struct ScrubStream<S> {
    inner: S,
    needles: Arc<Needles>,
    carry: BytesMut,
    count: Arc<AtomicU64>,
    /// The route's metric, counted into as well.
    route_count: Option<prometheus_client::metrics::counter::Counter>,
    done: bool,
}

impl<S> ScrubStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, needles: Arc<Needles>, count: Arc<AtomicU64>) -> Self {
        ScrubStream {
            inner,
            needles,
            carry: BytesMut::new(),
            count,
            route_count: None,
            done: false,
        }
    }

    /// Also counts replacements into `counter` (the route's metric).
    #[must_use]
    pub fn counting_into(mut self, counter: prometheus_client::metrics::counter::Counter) -> Self {
        self.route_count = Some(counter);
        self
    }

    fn counted(&self, count: u64) {
        if count > 0 {
            self.count.fetch_add(count, Ordering::Relaxed);
            if let Some(route) = &self.route_count {
                route.inc_by(count);
            }
        }
    }

    /// Scrubs what can be decided now and keeps the tail that could start a match.
    fn scrub(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty() && !self.needles.matcher.is_match(&chunk[..]) {
            // Nothing to replace: pass the chunk on as it is, but for the tail held back.
            let safe = chunk.len() - self.needles.open_tail(&chunk);
            self.carry.extend_from_slice(&chunk[safe..]);
            return chunk.slice(..safe);
        }
        self.carry.extend_from_slice(&chunk);
        let buf = &self.carry[..];
        let safe = buf.len() - self.needles.open_tail(buf);
        let mut out = BytesMut::with_capacity(buf.len());
        let mut pos = 0;
        let mut count = 0;
        for m in self.needles.matcher.find_iter(buf) {
            // A match starting in the held-back tail may still grow; decide it next time.
            if m.start() >= safe {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(REDACTED);
            pos = m.end();
            count += 1;
        }
        let emit_to = pos.max(safe);
        out.extend_from_slice(&buf[pos..emit_to]);
        let _ = self.carry.split_to(emit_to);
        self.counted(count);
        out.freeze()
    }

    fn flush(&mut self) -> Bytes {
        let (out, count) = self.needles.replace_all(&self.carry);
        self.carry.clear();
        self.counted(count);
        Bytes::from(out)
    }
}

impl<S> Stream for ScrubStream<S>
where
    S: Stream<Item = Result<Bytes, io::Error>> + Unpin,
{
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.scrub(chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // Never release the held-back tail unscrubbed on an error.
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let out = self.flush();
                    return if out.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Ok(out)))
                    };
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needles() -> Arc<Needles> {
        Arc::new(Needles::new(&[b"sk_live_SECRET", b"c2tfbGl2ZV9TRUNSRVQ="]).expect("needles"))
    }

    async fn run(chunks: &[&[u8]]) -> (String, u64) {
        let count = Arc::new(AtomicU64::new(0));
        let input: Vec<Result<Bytes, io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut s = ScrubStream::new(futures_util::stream::iter(input), needles(), count.clone());
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        (
            String::from_utf8(out).expect("utf8"),
            count.load(Ordering::Relaxed),
        )
    }

    #[tokio::test]
    async fn replaces_whole_and_split_matches() {
        let (out, n) = run(&[b"key=sk_live_SECRET&x"]).await;
        assert_eq!((out.as_str(), n), ("key=[redacted]&x", 1));
        // Split at every position.
        let text = b"a sk_live_SECRET b c2tfbGl2ZV9TRUNSRVQ= c";
        for cut in 0..text.len() {
            let (out, n) = run(&[&text[..cut], &text[cut..]]).await;
            assert_eq!(out, "a [redacted] b [redacted] c", "cut at {cut}");
            assert_eq!(n, 2);
        }
        // One byte per chunk.
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(run(&bytes).await.0, "a [redacted] b [redacted] c");
    }

    #[tokio::test]
    async fn leaves_other_bytes_alone() {
        let (out, n) = run(&[b"sk_live_SECRE", b"T_not", b" quite sk_live_SECRE"]).await;
        assert_eq!(out, "[redacted]_not quite sk_live_SECRE");
        assert_eq!(n, 1);
        assert_eq!(run(&[b""]).await.0, "");
    }

    #[test]
    fn short_values_are_not_scrubbed_and_debug_hides_patterns() {
        assert!(Needles::new(&[b"short"]).is_none());
        assert!(!format!("{:?}", needles()).contains("SECRET"));
    }

    #[test]
    fn scrubs_header_values() {
        let n = needles();
        let v = HeaderValue::from_static("https://x/?key=sk_live_SECRET");
        let (v, count) = n.header_value(&v).expect("match");
        assert_eq!(v, "https://x/?key=[redacted]");
        assert_eq!(count, 1);
        assert!(n.header_value(&HeaderValue::from_static("clean")).is_none());
    }

    /// A secret with characters that every encoding treats differently.
    const SECRET: &str = "sk_live/Ab+c d\"é~9";

    /// The forms an upstream could reflect, spelled out independently of [`forms`].
    fn reflections() -> Vec<(&'static str, String)> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        let mut out = vec![
            ("plain", SECRET.to_string()),
            ("base64", STANDARD.encode(SECRET)),
            ("base64url", URL_SAFE_NO_PAD.encode(SECRET)),
            ("hex", hex.clone()),
            ("HEX", hex.to_ascii_uppercase()),
            (
                "percent upper",
                "sk_live%2FAb%2Bc%20d%22%C3%A9~9".to_string(),
            ),
            (
                "percent lower",
                "sk_live%2fAb%2bc%20d%22%c3%a9~9".to_string(),
            ),
            ("form", "sk_live%2FAb%2Bc+d%22%C3%A9~9".to_string()),
            (
                "json",
                serde_json::to_string(SECRET).expect("json")[1..]
                    .trim_end_matches('"')
                    .to_string(),
            ),
            ("json slash", r#"sk_live\/Ab+c d\"é~9"#.to_string()),
            ("json ascii", r#"sk_live/Ab+c d\"\u00e9~9"#.to_string()),
            (
                "json ascii upper slash",
                r#"sk_live\/Ab+c d\"\u00E9~9"#.to_string(),
            ),
        ];
        // Base64 of a longer text holding the secret, at each alignment.
        for prefix in ["", "x", "xy", "xyz"] {
            let text = format!("{{\"user\":\"{prefix}{SECRET}\",\"n\":1}}");
            out.push(("embedded base64", STANDARD.encode(&text)));
            out.push(("embedded base64url", URL_SAFE_NO_PAD.encode(&text)));
        }
        out
    }

    #[tokio::test]
    async fn every_form_is_scrubbed_at_every_chunk_split() {
        let needles = Arc::new(Needles::for_secrets(&[SECRET.as_bytes()]).expect("needles"));
        for (form, reflected) in reflections() {
            let body = format!("<<{reflected}>>");
            let whole = needles.replace_all(body.as_bytes()).0;
            let whole = String::from_utf8_lossy(&whole).into_owned();
            assert!(whole.contains("[redacted]"), "{form}: {whole}");
            for cut in 0..=body.len() {
                let count = Arc::new(AtomicU64::new(0));
                let chunks = vec![
                    Ok(Bytes::copy_from_slice(&body.as_bytes()[..cut])),
                    Ok(Bytes::copy_from_slice(&body.as_bytes()[cut..])),
                ];
                let mut s =
                    ScrubStream::new(futures_util::stream::iter(chunks), needles.clone(), count);
                let mut out = Vec::new();
                while let Some(chunk) = s.next().await {
                    out.extend_from_slice(&chunk.expect("chunk"));
                }
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    whole,
                    "{form}, split at {cut}"
                );
            }
        }
    }

    #[test]
    fn embedded_base64_loses_only_the_bytes_around_the_secret() {
        use base64::Engine as _;
        let needles = Needles::for_secrets(&[SECRET.as_bytes()]).expect("needles");
        for prefix in ["", "x", "xy"] {
            let text = format!("{prefix}{SECRET}-tail-of-the-document");
            let encoded = base64::engine::general_purpose::STANDARD.encode(&text);
            let (out, n) = needles.replace_all(encoded.as_bytes());
            assert_eq!(n, 1, "{prefix:?}");
            // What is left cannot be decoded back to the secret.
            let out = String::from_utf8_lossy(&out);
            assert!(out.contains("[redacted]"), "{out}");
            assert!(out.len() < encoded.len(), "{out}");
        }
    }

    #[test]
    fn header_names_holding_the_secret_are_recognised_in_any_case() {
        let needles = Needles::for_secrets(&[b"Tok3nValue99"]).expect("needles");
        let name = http::HeaderName::from_static("x-tok3nvalue99-echo");
        assert!(needles.in_header_name(&name));
        assert!(!needles.in_header_name(&http::HeaderName::from_static("x-other")));
    }

    #[tokio::test]
    async fn text_that_cannot_start_a_match_is_passed_on_at_once() {
        let needles = Arc::new(Needles::for_secrets(&[SECRET.as_bytes()]).expect("needles"));
        let count = Arc::new(AtomicU64::new(0));
        let mut s = ScrubStream::new(
            futures_util::stream::iter(vec![
                Ok(Bytes::from_static(b"chunk0;")),
                Ok(Bytes::from_static(b"ends in sk_li")),
            ]),
            needles,
            count,
        );
        assert_eq!(s.next().await.expect("first").expect("ok"), "chunk0;");
        // "sk_li" could begin the secret: held back until the body ends.
        assert_eq!(s.next().await.expect("second").expect("ok"), "ends in ");
        assert_eq!(s.next().await.expect("tail").expect("ok"), "sk_li");
    }
}
