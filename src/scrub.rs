//! Response scrubbing: an upstream that echoes the request (debug endpoints, error pages that
//! quote headers or the URL) would hand the injected credential back to the pipeline. Every
//! occurrence of the injected value, and of its base64 and percent-encoded forms, is replaced
//! with `[redacted]` in response headers and in the streamed body, also when a match is split
//! across chunks.
//!
//! The body scrubber holds back at most `longest needle - 1` bytes between chunks, so it
//! streams with a bounded buffer. Values shorter than [`MIN_SCRUB_LEN`] bytes are not
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
    max_len: usize,
}

impl fmt::Debug for Needles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the patterns: they are the secret.
        write!(f, "Needles({} patterns)", self.matcher.patterns_len())
    }
}

impl Needles {
    /// Compiles the needles; `None` when none is long enough to scrub.
    pub fn new(values: &[&[u8]]) -> Option<Self> {
        let mut patterns: Vec<&[u8]> = values
            .iter()
            .copied()
            .filter(|v| v.len() >= MIN_SCRUB_LEN)
            .collect();
        patterns.sort();
        patterns.dedup();
        let max_len = patterns.iter().map(|p| p.len()).max()?;
        let matcher = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok()?;
        Some(Needles { matcher, max_len })
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

    /// A scrubbed copy of a header value, or `None` when it holds no match.
    pub fn header_value(&self, value: &HeaderValue) -> Option<(HeaderValue, u64)> {
        if !self.matcher.is_match(value.as_bytes()) {
            return None;
        }
        let (bytes, count) = self.replace_all(value.as_bytes());
        HeaderValue::from_bytes(&bytes).ok().map(|v| (v, count))
    }
}

/// A response body stream with every needle replaced, counting replacements into `count`.
pub struct ScrubStream<S> {
    inner: S,
    needles: Arc<Needles>,
    carry: BytesMut,
    count: Arc<AtomicU64>,
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
            done: false,
        }
    }

    /// Scrubs what can be decided now and keeps the tail that could start a match.
    fn scrub(&mut self, chunk: &[u8]) -> Bytes {
        self.carry.extend_from_slice(chunk);
        let buf = &self.carry[..];
        let safe = buf.len().saturating_sub(self.needles.max_len - 1);
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
        if count > 0 {
            self.count.fetch_add(count, Ordering::Relaxed);
        }
        out.freeze()
    }

    fn flush(&mut self) -> Bytes {
        let (out, count) = self.needles.replace_all(&self.carry);
        self.carry.clear();
        if count > 0 {
            self.count.fetch_add(count, Ordering::Relaxed);
        }
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
                    let out = self.scrub(&chunk);
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
}
