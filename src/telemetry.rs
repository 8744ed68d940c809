//! Operational logs: `tracing` events as Cloud Logging JSON (tracing-stackdriver) on stderr,
//! so they never mix with the audit entries on stdout. `CREDPROXY_LOG` sets the filter
//! (default `info`). Request paths record no tokens or secret values: handlers log error
//! codes and reasons, never headers.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("CREDPROXY_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the Cloud Logging JSON subscriber writing to stderr (for `serve`).
pub fn init_json() {
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(tracing_stackdriver::layer().with_writer(std::io::stderr))
        .try_init();
}

/// Installs a human-readable subscriber writing to stderr (for `dev`).
pub fn init_human() {
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_writer(std::io::stderr),
        )
        .try_init();
}

/// `err: cause: cause` for logs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
