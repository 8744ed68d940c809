//! Token verification micro-benchmarks.
//!
//! - `verify/cold`: every verified token is one this `Verifier` has never seen, so it always
//!   measures a full verification (header decode, RSA signature, claims). The timed loop
//!   cycles through a pool of pre-minted tokens that differ in `iat`/`jti`, and a *fresh*
//!   `Verifier` is built (untimed) for each sample and again whenever the pool wraps around.
//!   So even with a verified-token cache of any capacity, no token is ever seen twice by the
//!   same `Verifier` and `cold` stays a cache miss. Assumption: such a cache lives inside the
//!   `Verifier` (not in a process-wide static); if it ever becomes global, cold must get
//!   more tokens than its capacity, or a way to clear it.
//! - `verify/cached`: the same token again and again through one `Verifier`. Today this
//!   re-verifies the RSA signature every time; once a verified-token cache lands, it measures
//!   the cache-hit path.
//!
//! - `verify_distinct/{1,1000,10000}`: one pass over that many distinct tokens, every one
//!   already in the cache (its capacity is 10,000 tokens), per iteration divided by the
//!   count: the cost of a hit must not grow with the number of callers cached.
//!   `CREDPROXY_BENCH_TOKENS_100K=1` adds 100,000 (minting them takes a minute or two): past
//!   the capacity, most are misses and pay the full verification, while the cache stays
//!   at its bound.
//!
//! No network: the key set is installed directly with `Verifier::install`.

use std::hint::black_box;
use std::time::Duration;

use credproxy::config::IdentitySettings;
use credproxy::dev::{DEV_AUDIENCE, DEV_CALLER, DEV_ISSUER, Signer};
use credproxy::identity::{KeySet, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};

/// Distinct tokens in the cold pool. Minting costs about one RSA signature each (~1 ms), so
/// this is a few seconds of setup; samples larger than the pool rebuild the `Verifier`.
const COLD_TOKENS: usize = 4096;

fn settings() -> IdentitySettings {
    IdentitySettings {
        audiences: vec![DEV_AUDIENCE.to_string()],
        // Never contacted: keys are installed directly.
        jwks_url: "http://127.0.0.1:9/certs".parse().expect("url"),
        issuers: vec![DEV_ISSUER.to_string()],
        leeway_seconds: 30,
        cloud_run_invoker_check: false,
    }
}

fn verifier(settings: &IdentitySettings, jwks: &[u8]) -> Verifier {
    let verifier = Verifier::new(settings).expect("verifier");
    verifier.install(KeySet::parse(jwks).expect("jwks"));
    verifier
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
    );
    headers
}

/// A Google-shaped token, distinct from every other `i` through `iat` and `jti`.
fn mint(signer: &Signer, i: usize) -> String {
    let mut claims = Signer::claims(DEV_CALLER, DEV_ISSUER, DEV_AUDIENCE);
    let now = chrono::Utc::now().timestamp();
    claims["iat"] = (now - (i % 600) as i64).into();
    claims["jti"] = format!("bench-{i:06}").into();
    signer.sign(&claims)
}

/// Mints `n` distinct tokens on all cores (outside any timed region).
fn mint_pool(signer: &Signer, n: usize) -> Vec<HeaderMap> {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let chunk = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(n))
                        .map(|i| bearer(&mint(signer, i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("minting thread"))
            .collect()
    })
}

fn bench_verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let signer = Signer::generate().expect("signing key");
    let jwks = signer.jwks().to_string().into_bytes();
    let settings = settings();
    let pool = mint_pool(&signer, COLD_TOKENS);

    // Every pooled token must verify, so the bench never times an error path. A separate
    // verifier does the check, so a future cache is not warmed by it.
    rt.block_on(async {
        let check = verifier(&settings, &jwks);
        for headers in &pool {
            let caller = check.verify(headers).await.expect("pooled token verifies");
            assert_eq!(&*caller.email, DEV_CALLER);
        }
    });

    let mut group = c.benchmark_group("verify");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("cold", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (pool, settings, jwks) = (&pool, &settings, &jwks);
            async move {
                let mut elapsed = Duration::ZERO;
                let mut remaining = iters as usize;
                let mut failures = 0usize;
                while remaining > 0 {
                    // Untimed: a verifier that has seen none of the pool.
                    let v = verifier(settings, jwks);
                    let batch = remaining.min(pool.len());
                    let start = tokio::time::Instant::now();
                    for headers in &pool[..batch] {
                        failures +=
                            usize::from(black_box(v.verify(black_box(headers)).await).is_err());
                    }
                    elapsed += start.elapsed();
                    remaining -= batch;
                }
                assert_eq!(failures, 0, "cold verification failed");
                elapsed
            }
        });
    });

    let cached = verifier(&settings, &jwks);
    let headers = &pool[0];
    rt.block_on(cached.verify(headers)).expect("token verifies");
    group.bench_function("cached", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cached.verify(black_box(headers)).await) });
    });

    group.finish();
}

fn bench_distinct(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let signer = Signer::generate().expect("signing key");
    let jwks = signer.jwks().to_string().into_bytes();
    let settings = settings();
    let mut sizes = vec![1, 1000, 10_000];
    if std::env::var_os("CREDPROXY_BENCH_TOKENS_100K").is_some() {
        sizes.push(100_000);
    }
    let pool = mint_pool(&signer, sizes.iter().copied().max().unwrap_or(1));
    let mut group = c.benchmark_group("verify_distinct");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in sizes {
        let tokens = &pool[..n];
        let v = verifier(&settings, &jwks);
        rt.block_on(async {
            for headers in tokens {
                v.verify(headers).await.expect("token verifies");
            }
        });
        group.throughput(criterion::Throughput::Elements(n as u64));
        group.bench_function(n.to_string(), |b| {
            b.to_async(&rt).iter(|| async {
                for headers in tokens {
                    black_box(v.verify(black_box(headers)).await).expect("token verifies");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_verify, bench_distinct);
criterion_main!(benches);
