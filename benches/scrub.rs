//! Response scrubbing against the length of the body: `scrub_body/{1KiB,64KiB,1MiB}` streams
//! a JSON-ish body in 16 KiB chunks through the scrubber of a secret's every form (as a
//! route with `scrub_responses` does), with no occurrence in it (the common case), and
//! `scrub_body_with_secret/64KiB` with the secret echoed once per chunk, split across chunk
//! boundaries. Throughput is in bytes, so a cost growing faster than the body shows.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use credproxy::scrub::{Needles, ScrubStream};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;

const SECRET: &[u8] = b"sk_live_51HbenchSECRETvalue0123456789";
const CHUNK: usize = 16 * 1024;

fn body(len: usize, echo: bool) -> Vec<Bytes> {
    let item = br#"{"id":"item-0001","name":"bench item","price_cents":1999,"tags":["a","b"]},"#;
    let mut text: Vec<u8> = item.iter().copied().cycle().take(len).collect();
    if echo {
        // Straddling every chunk boundary.
        let mut at = CHUNK - SECRET.len() / 2;
        while at + SECRET.len() <= text.len() {
            text[at..at + SECRET.len()].copy_from_slice(SECRET);
            at += CHUNK;
        }
    }
    text.chunks(CHUNK).map(Bytes::copy_from_slice).collect()
}

async fn scrub(needles: &Arc<Needles>, chunks: &[Bytes]) -> (usize, u64) {
    let count = Arc::new(AtomicU64::new(0));
    let input = futures_util::stream::iter(chunks.iter().cloned().map(Ok::<_, std::io::Error>));
    let mut stream = ScrubStream::new(input, needles.clone(), count.clone());
    let mut out = 0;
    while let Some(chunk) = stream.next().await {
        out += chunk.expect("chunk").len();
    }
    (out, count.load(std::sync::atomic::Ordering::Relaxed))
}

fn bench_scrub(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let needles = Arc::new(Needles::for_secrets(&[SECRET]).expect("needles"));
    let mut group = c.benchmark_group("scrub_body");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    for (name, len) in [("1KiB", 1024), ("64KiB", 64 * 1024), ("1MiB", 1024 * 1024)] {
        let chunks = body(len, false);
        assert_eq!(
            rt.block_on(scrub(&needles, &chunks)),
            (len, 0),
            "passed on whole"
        );
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(scrub(&needles, black_box(&chunks)))))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("scrub_body_with_secret");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    let len = 64 * 1024;
    let chunks = body(len, true);
    let (_, found) = rt.block_on(scrub(&needles, &chunks));
    assert_eq!(found, 3, "every echo is scrubbed");
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("64KiB", |b| {
        b.iter(|| black_box(rt.block_on(scrub(&needles, black_box(&chunks)))))
    });
    group.finish();
}

criterion_group!(benches, bench_scrub);
criterion_main!(benches);
