//! The writer of audit lines: a finished request's context is queued (bounded in bytes)
//! to a dedicated thread, which builds its entry, serialises it and writes it to stdout. The
//! request path neither blocks on stdout nor spends its time on JSON. What cannot be
//! queued is counted and reported.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

use tokio::time::Instant;

use super::{AuditConfig, Ended, RequestContext};

/// Bytes of entries waiting for the writer thread before new ones are dropped.
pub(super) const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Minimum time between two "audit queue full" errors.
const DROP_REPORT_INTERVAL_SECONDS: u64 = 10;

enum Msg {
    /// A finished request, and the bytes it counts against the queue's bound.
    Entry(Box<RequestContext>, Ended, usize),
    Flush(mpsc::Sender<()>),
}

/// Drains the queue: writes everything queued, flushes, then sleeps briefly. Polling
/// instead of blocking on the channel means a request enqueueing an entry never has to
/// wake this thread (a futex syscall per request); entries wait at most `IDLE_MAX`.
#[allow(clippy::disallowed_methods)] // a dedicated OS thread, not the async runtime
fn write_loop(
    rx: &mpsc::Receiver<Msg>,
    out: Box<dyn Write + Send>,
    queued: &AtomicUsize,
    config: &AuditConfig,
) {
    const IDLE_MIN: std::time::Duration = std::time::Duration::from_millis(1);
    const IDLE_MAX: std::time::Duration = std::time::Duration::from_millis(20);
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    // Entries are 600-900 bytes: one buffer, reused.
    let mut line = Vec::with_capacity(4096);
    let mut idle = IDLE_MIN;
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(Msg::Entry(cx, end, size)) => {
                    line.clear();
                    super::json::write_entry(&mut line, &cx.entry_at(&end, config));
                    line.push(b'\n');
                    let _ = out.write_all(&line);
                    drop(cx);
                    queued.fetch_sub(size, Ordering::AcqRel);
                    wrote = true;
                }
                Ok(Msg::Flush(ack)) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            let _ = out.flush();
            idle = IDLE_MIN;
        } else {
            idle = (idle * 2).min(IDLE_MAX);
        }
        std::thread::sleep(idle);
    }
}

/// The writer of audit lines: a bounded queue drained by a dedicated thread.
///
/// Clones share one allocation: every request's audit guard holds one, and a clone is then
/// one reference count (one atomic on a line all serving threads touch) instead of one per
/// field.
#[derive(Clone)]
pub struct AuditSink {
    inner: Arc<SinkInner>,
}

impl std::ops::Deref for AuditSink {
    type Target = SinkInner;
    fn deref(&self) -> &SinkInner {
        &self.inner
    }
}

/// What an [`AuditSink`] shares.
pub struct SinkInner {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Bytes of entries queued and not yet written.
    pub(super) queued: Arc<AtomicUsize>,
    /// When (seconds since the sink started, plus one) the last drop was reported.
    reported: Arc<AtomicU64>,
    started: Instant,
    /// Set at the drain deadline: requests cut from then on are audited as `shutdown`.
    pub(super) shutting_down: Arc<AtomicBool>,
}

impl AuditSink {
    /// Starts the writer thread over `out` (stdout in production).
    pub fn start(config: AuditConfig, out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued.clone();
        std::thread::Builder::new()
            .name("credproxy-audit".to_string())
            .spawn(move || write_loop(&rx, out, &writer_queued, &config))?;
        Ok(AuditSink {
            inner: Arc::new(SinkInner {
                tx,
                dropped: Arc::default(),
                queued,
                reported: Arc::default(),
                started: Instant::now(),
                shutting_down: Arc::default(),
            }),
        })
    }

    /// From now on, a request whose future is dropped before it answered was cut by the
    /// drain deadline (503 `shutdown`), not by its caller.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Entries dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues the entry of the request `cx`, ended as `end`, without blocking.
    pub(super) fn submit(&self, cx: Box<RequestContext>, end: Ended) {
        let len = cx.held_bytes();
        let fits = self.queued.fetch_add(len, Ordering::AcqRel) + len <= QUEUE_BYTES;
        if !fits || self.tx.send(Msg::Entry(cx, end, len)).is_err() {
            // A refused context is dropped here (in `send`'s error, or unsent).
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().audit_dropped.inc();
            self.report_drop();
        }
    }

    /// An ERROR about dropped entries, at most once per 10 s.
    fn report_drop(&self) {
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.reported.load(Ordering::Relaxed);
        if (last == 0 || now >= last + DROP_REPORT_INTERVAL_SECONDS)
            && self
                .reported
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                dropped_total = self.dropped(),
                "audit queue full (64 MiB waiting for stdout): audit entries are being dropped (counted in credproxy_audit_dropped_total)"
            );
        }
    }

    /// Waits (off the runtime) until everything queued so far is written.
    pub async fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::channel();
        let tx = self.tx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if tx.send(Msg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv_timeout(std::time::Duration::from_secs(2));
            }
        })
        .await;
    }
}
