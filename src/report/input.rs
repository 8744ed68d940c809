//! Reading audit entries for `credproxy report`: credproxy's own JSON lines, or Cloud
//! Logging exports (the JSON array `gcloud logging read --format=json` prints, or JSON
//! lines of LogEntry), plain or gzip, from a file or stdin.
//!
//! The input is streamed, never collected: JSON lines are read one bounded line at a time,
//! and a JSON array is walked element by element by a serde `SeqAccess` visitor. A line or
//! element that is not JSON is counted as unreadable, a JSON object that is not an audit
//! entry is counted as such; neither stops the report.
//!
//! A LogEntry is turned back into the entry credproxy wrote: its `jsonPayload` merged with
//! what Cloud Logging lifted out of the structured line (`httpRequest`, `severity`,
//! `timestamp` for `time`, `labels`, `trace`).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{DeserializeOwned, SeqAccess, Visitor};

/// Longest line read as one entry; a longer one is skipped and counted as unreadable
/// (credproxy's own entries stay under 16 KiB).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Where entries come from: a file (plain or gzip), or stdin spooled to a temporary file so
/// that it can be read twice (once for the span, once for the analysis).
pub struct Source {
    path: PathBuf,
    _spool: Option<tempfile::NamedTempFile>,
}

impl Source {
    /// Opens `path`, or stdin for `-`.
    pub fn open(path: &Path) -> io::Result<Source> {
        if path == Path::new("-") {
            let mut spool = tempfile::NamedTempFile::new()?;
            io::copy(&mut io::stdin().lock(), spool.as_file_mut())?;
            spool.as_file_mut().rewind()?;
            return Ok(Source {
                path: spool.path().to_path_buf(),
                _spool: Some(spool),
            });
        }
        File::open(path)?;
        Ok(Source {
            path: path.to_path_buf(),
            _spool: None,
        })
    }

    /// Calls `each` with every element of the input parsed as `T` (`None` when it is not
    /// JSON or not of `T`'s shape). The bytes are decompressed when they are gzip (known by
    /// its magic bytes, whatever the name says; concatenated members are read in turn).
    pub fn for_each<T: DeserializeOwned>(&self, mut each: impl FnMut(Option<T>)) -> io::Result<()> {
        let mut file = BufReader::with_capacity(256 * 1024, File::open(&self.path)?);
        if file.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
            let gz = flate2::bufread::MultiGzDecoder::new(file);
            read_any(BufReader::with_capacity(256 * 1024, gz), &mut each)
        } else {
            read_any(file, &mut each)
        }
    }
}

/// JSON lines or one JSON array, told apart by the first non-blank byte.
fn read_any<T: DeserializeOwned, R: BufRead>(
    mut reader: R,
    each: &mut impl FnMut(Option<T>),
) -> io::Result<()> {
    {
        // An array (a `gcloud logging read --format=json` export) or JSON lines.
        let array = loop {
            let buf = reader.fill_buf()?;
            match buf.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) => {
                    let first = buf[i];
                    reader.consume(i);
                    break first == b'[';
                }
                None if buf.is_empty() => return Ok(()),
                None => {
                    let n = buf.len();
                    reader.consume(n);
                }
            }
        };
        if array {
            read_array(reader, each);
            Ok(())
        } else {
            read_lines(reader, each)
        }
    }
}

/// JSON lines: each non-blank line is one element.
fn read_lines<T: DeserializeOwned, R: BufRead>(
    mut reader: R,
    each: &mut impl FnMut(Option<T>),
) -> io::Result<()> {
    let mut line = Vec::with_capacity(16 * 1024);
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            // Too long: skip to its end, count it once.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = (&mut reader).take(64 * 1024).read_until(b'\n', &mut rest)?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            each(None);
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        each(serde_json::from_slice(&line).ok());
    }
}

/// A JSON array, one element at a time: each is taken as raw JSON text and parsed on its
/// own, so an element of another shape is counted, not fatal. A syntax error ends the array
/// (what follows cannot be framed) and counts once.
fn read_array<T: DeserializeOwned, R: BufRead>(reader: R, each: &mut impl FnMut(Option<T>)) {
    struct Elements<'a, T, F>(&'a mut F, std::marker::PhantomData<T>);

    impl<'de, T: DeserializeOwned, F: FnMut(Option<T>)> Visitor<'de> for Elements<'_, T, F> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array of log entries")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(raw) = seq.next_element::<Box<serde_json::value::RawValue>>()? {
                (self.0)(serde_json::from_str(raw.get()).ok());
            }
            Ok(())
        }
    }

    let mut de = serde_json::Deserializer::from_reader(reader);
    let walked = serde::Deserializer::deserialize_seq(
        &mut de,
        Elements(each, std::marker::PhantomData::<T>),
    );
    if walked.is_err() {
        each(None);
    }
}

// ------------------------------------------------------------------------------------------
// The shapes read

/// What the first pass needs: the time of an audit entry.
#[derive(Debug, Deserialize)]
pub struct Stamp {
    time: Option<String>,
    timestamp: Option<String>,
    decision: Option<String>,
    #[serde(rename = "jsonPayload")]
    payload: Option<Box<Stamp>>,
}

impl Stamp {
    /// The entry's time, when this is an audit entry.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let decision = self
            .decision
            .as_deref()
            .or_else(|| self.payload.as_ref()?.decision.as_deref());
        if !matches!(decision, Some("allow" | "deny")) {
            return None;
        }
        let text = self
            .timestamp
            .as_deref()
            .or(self.time.as_deref())
            .or_else(|| self.payload.as_ref()?.time.as_deref())?;
        parse_time(text)
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One element as written: credproxy's own entry, or a LogEntry around one. Only the fields
/// the report uses are read (no `status`: a BigQuery export writes integers as strings).
#[derive(Debug, Default, Deserialize)]
pub struct RawEntry {
    time: Option<String>,
    timestamp: Option<String>,
    #[serde(rename = "httpRequest")]
    http_request: Option<RawHttp>,
    #[serde(rename = "jsonPayload")]
    payload: Option<Box<RawEntry>>,
    request_id: Option<String>,
    caller: Option<String>,
    route: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    rule: Option<String>,
    rule_hash: Option<String>,
    shadow: Option<RawShadow>,
}

#[derive(Debug, Default, Deserialize)]
struct RawHttp {
    #[serde(rename = "requestMethod")]
    request_method: Option<String>,
    #[serde(rename = "requestUrl")]
    request_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawShadow {
    decision: Option<String>,
    rule: Option<String>,
}

/// An audit entry, as the report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `time` (a LogEntry's `timestamp`).
    pub time: DateTime<Utc>,
    /// The verified caller.
    pub caller: Option<String>,
    /// The route.
    pub route: Option<String>,
    /// `decision` is `allow`.
    pub allowed: bool,
    /// The denial reason.
    pub reason: Option<String>,
    /// Key path of the rule that allowed it.
    pub rule: Option<String>,
    /// Its `rule_hash`.
    pub rule_hash: Option<String>,
    /// The shadow decision (allowed?) and shadow rule, on routes with `shadow_allow`.
    pub shadow: Option<(bool, Option<String>)>,
    /// `httpRequest.requestMethod`.
    pub method: String,
    /// `httpRequest.requestUrl`: the path and query as received.
    pub url: String,
}

impl RawEntry {
    /// The audit entry this is, or `None` when it is some other JSON object.
    pub fn into_entry(mut self) -> Option<Entry> {
        if let Some(payload) = self.payload.take() {
            // A LogEntry: the payload, with what Cloud Logging lifted out of it.
            let mut inner = *payload;
            inner.time = self.timestamp.or(inner.time).or(self.time);
            inner.http_request = self.http_request.or(inner.http_request);
            return inner.into_entry();
        }
        let allowed = match self.decision.as_deref()? {
            "allow" => true,
            "deny" => false,
            _ => return None,
        };
        self.request_id.as_ref()?;
        let time = parse_time(self.time.as_deref().or(self.timestamp.as_deref())?)?;
        let http = self.http_request.unwrap_or_default();
        Some(Entry {
            time,
            caller: self.caller,
            route: self.route,
            allowed,
            reason: self.reason,
            rule: self.rule,
            rule_hash: self.rule_hash,
            shadow: self.shadow.and_then(|s| match s.decision.as_deref() {
                Some("allow") => Some((true, s.rule)),
                Some("deny") => Some((false, None)),
                _ => None,
            }),
            method: http.request_method.unwrap_or_default(),
            url: http.request_url.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const OWN: &str = r#"{"severity":"INFO","message":"allow GET /api/v1/x -> 200","time":"2026-11-30T10:00:00.000001Z","httpRequest":{"requestMethod":"GET","requestUrl":"/api/v1/x?a=1","status":200,"latency":"0.001s","remoteIp":"127.0.0.1","userAgent":null,"responseSize":"2"},"request_id":"r1","caller":"a@p.iam.gserviceaccount.com","route":"api","decision":"allow","reason":null,"secret":"env:K","secret_version":"env","upstream_status":200,"environment":"test","scrubbed":0,"retried":false,"rule":"routes.api.allow[0]","rule_hash":"0123abcd","shadow":{"decision":"deny","rule":null}}"#;

    fn entries(bytes: &[u8]) -> (Vec<Entry>, usize, usize) {
        let mut file = tempfile::NamedTempFile::new().expect("temp");
        file.write_all(bytes).expect("write");
        let source = Source::open(file.path()).expect("open");
        let (mut got, mut unreadable, mut other) = (Vec::new(), 0, 0);
        source
            .for_each(|raw: Option<RawEntry>| match raw {
                None => unreadable += 1,
                Some(raw) => match raw.into_entry() {
                    Some(e) => got.push(e),
                    None => other += 1,
                },
            })
            .expect("read");
        (got, unreadable, other)
    }

    fn log_entry(own: &str) -> String {
        let mut payload: serde_json::Value = serde_json::from_str(own).expect("json");
        let obj = payload.as_object_mut().expect("object");
        let http = obj.remove("httpRequest").expect("httpRequest");
        let time = obj.remove("time").expect("time");
        let severity = obj.remove("severity").expect("severity");
        serde_json::json!({
            "insertId": "x1", "jsonPayload": payload, "httpRequest": http, "severity": severity,
            "timestamp": time, "receiveTimestamp": "2026-11-30T10:00:01Z",
            "resource": {"type": "cloud_run_revision", "labels": {}}, "logName": "projects/p/logs/run.googleapis.com%2Fstdout"
        })
        .to_string()
    }

    #[test]
    fn reads_own_lines_counting_garbage_and_other_objects() {
        let text =
            format!("{OWN}\nnot json\n\n{{\"message\":\"credproxy listening\"}}\n[1,2]\n{OWN}");
        let (got, unreadable, other) = entries(text.as_bytes());
        assert_eq!((got.len(), unreadable, other), (2, 2, 1));
        let e = &got[0];
        assert_eq!(e.time.to_rfc3339(), "2026-11-30T10:00:00.000001+00:00");
        assert_eq!(
            (e.method.as_str(), e.url.as_str()),
            ("GET", "/api/v1/x?a=1")
        );
        assert_eq!(e.rule.as_deref(), Some("routes.api.allow[0]"));
        assert_eq!(e.rule_hash.as_deref(), Some("0123abcd"));
        assert_eq!(e.shadow, Some((false, None)));
        assert!(e.allowed);
    }

    #[test]
    fn reads_log_entries_as_an_array_or_as_lines_and_gzip() {
        let one = log_entry(OWN);
        let array = format!("[\n  {one},\n  42,\n  {{\"textPayload\":\"x\"}},\n  {one}\n]\n");
        let (got, unreadable, other) = entries(array.as_bytes());
        assert_eq!((got.len(), unreadable, other), (2, 1, 1));
        assert_eq!(got[0], entries(OWN.as_bytes()).0[0]);
        let lines = format!("{one}\n{one}\n");
        assert_eq!(entries(lines.as_bytes()).0.len(), 2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(array.as_bytes()).expect("gzip");
        let (got, ..) = entries(&gz.finish().expect("gzip"));
        assert_eq!(got.len(), 2);
        // A broken array: what came before counts, the rest is one unreadable.
        let broken = format!("[{one}, {{\"a\": ");
        assert_eq!(entries(broken.as_bytes()).0.len(), 1);
        assert_eq!(entries(broken.as_bytes()).1, 1);
    }

    #[test]
    fn an_overlong_line_is_skipped_and_counted() {
        let text = format!("{}\n{OWN}\n", "x".repeat(MAX_LINE_BYTES + 10));
        let (got, unreadable, _) = entries(text.as_bytes());
        assert_eq!((got.len(), unreadable), (1, 1));
    }
}
