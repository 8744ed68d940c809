//! The `credproxy` command line: parses arguments, calls the library, maps outcomes to exit
//! codes (0 ok, 1 error, 2 usage, 3 `explain` deny, 4 `report --fail-on-unused` found unused
//! grants).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: measured against glibc malloc under the bench load, it took the request path
/// from 22-25k to 39-40k requests/s at c=64 (malloc and free were 8% of the profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use credproxy::config::{self, Severity};

#[derive(Parser)]
#[command(
    name = "credproxy",
    version,
    about = "Credential-injecting API proxy for data pipelines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (config: --config, else $CREDPROXY_CONFIG, else /etc/credproxy/config.yaml).
    Serve {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file: exit 0 when valid, else 1 with every problem.
    Check {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Policy dry run: exit 0 when allowed, 3 when denied.
    Explain {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Caller email (the ID token's `email`).
        #[arg(long)]
        caller: String,
        /// Client address, judged against `source_ranges` (without it, a route with
        /// source ranges is a deny, as in serve).
        #[arg(long, value_name = "IP")]
        client_ip: Option<std::net::IpAddr>,
        /// When to judge expiring grants (RFC 3339, e.g. 2026-12-31T00:00:00Z; default now).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// HTTP method.
        method: String,
        /// Request path as the caller would send it: /ROUTE/PATH
        url_path: String,
    },
    /// Least-privilege report from audit entries: usage per rule, findings, narrower rules.
    Report {
        /// Configuration file (today's rules).
        #[arg(long)]
        config: PathBuf,
        /// Audit entries: credproxy's JSON lines or a Cloud Logging export (JSON array or
        /// JSON lines of LogEntry), plain or gzip; `-` for stdin.
        #[arg(long)]
        audit: PathBuf,
        /// Window ending at the newest entry (30d, 12h, 90m, 2w), an RFC 3339 time, or all.
        #[arg(long, default_value = "30d", value_parser = credproxy::report::Since::parse)]
        since: credproxy::report::Since,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write the report here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit 4 when a rule or a rule's caller had no traffic in the window.
        #[arg(long)]
        fail_on_unused: bool,
        /// Also propose `shadow_grants` for the Terraform module credproxy_config (implied
        /// when the config starts with the module's "Rendered by Terraform" header).
        #[arg(long)]
        terraform: bool,
    },
    /// Offline demo: local signing key and JWKS, echo upstream, ready config, curl lines.
    Dev {
        /// Port on 127.0.0.1 (default $PORT, else 8765: 8080 is Airflow's webserver).
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Html,
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            format!("`{text}` is not an RFC 3339 time with a zone, e.g. 2026-12-31T00:00:00Z")
        })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn print_problems(problems: &[config::Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config: path } => match config::load_file(&path, &env) {
            Ok((config, warnings)) => {
                print_problems(&warnings);
                println!(
                    "{}: valid ({} route(s){})",
                    path.display(),
                    config.routes.len(),
                    if warnings.is_empty() {
                        String::new()
                    } else {
                        format!(", {} warning(s)", warnings.len())
                    }
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                print_problems(&problems.0);
                let errors = problems
                    .0
                    .iter()
                    .filter(|p| p.severity == Severity::Error)
                    .count();
                eprintln!("{}: invalid ({errors} error(s))", path.display());
                ExitCode::from(1)
            }
        },
        Command::Explain {
            config: path,
            caller,
            client_ip,
            at,
            method,
            url_path,
        } => match config::load_file(&path, &env) {
            Ok((config, _)) => {
                let e = credproxy::explain::explain_question(
                    &config,
                    credproxy::explain::Question {
                        caller: &caller,
                        client_ip,
                        method: &method,
                        url_path: &url_path,
                        at: at.unwrap_or_else(chrono::Utc::now),
                    },
                );
                print!("{}", e.report);
                if e.allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                }
            }
            Err(problems) => {
                print_problems(&problems.0);
                ExitCode::from(1)
            }
        },
        Command::Report {
            config: path,
            audit,
            since,
            format,
            out,
            fail_on_unused,
            terraform,
        } => {
            let (config, rendered) = match config::load_file(&path, &env) {
                Ok((config, _)) => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let rendered = text.starts_with(credproxy::report::proposal::TERRAFORM_HEADER);
                    (config, rendered)
                }
                Err(problems) => {
                    print_problems(&problems.0);
                    return ExitCode::from(1);
                }
            };
            let options = credproxy::report::Options {
                audit,
                since,
                terraform: terraform || rendered,
                now: chrono::Utc::now(),
            };
            let report = match credproxy::report::run(&config, &options) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("credproxy report: {e}");
                    return ExitCode::from(1);
                }
            };
            let text = match format {
                Format::Text => credproxy::report::text(&report),
                Format::Json => {
                    let mut json = serde_json::to_string_pretty(&report).unwrap_or_default();
                    json.push('\n');
                    json
                }
                Format::Html => credproxy::report::html::render(&report),
            };
            let written = match &out {
                Some(file) => std::fs::write(file, text),
                None => {
                    use std::io::Write as _;
                    std::io::stdout().lock().write_all(text.as_bytes())
                }
            };
            if let Err(e) = written {
                eprintln!("credproxy report: cannot write the report: {e}");
                return ExitCode::from(1);
            }
            if fail_on_unused && report.has_unused() {
                ExitCode::from(4)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Serve { config: flag } => {
            credproxy::telemetry::init_json();
            let path = config::config_path(flag, &env);
            let config = match config::load_file(&path, &env) {
                Ok((config, warnings)) => {
                    print_problems(&warnings);
                    config
                }
                Err(problems) => {
                    print_problems(&problems.0);
                    eprintln!("credproxy: {} is invalid; not starting", path.display());
                    return ExitCode::from(1);
                }
            };
            run_runtime(async move { credproxy::run(config, &env_sync, shutdown_signal()).await })
        }
        Command::Dev { port } => {
            credproxy::telemetry::init_human();
            run_runtime(async move { dev(port).await })
        }
    }
}

fn env_sync(name: &str) -> Option<String> {
    env(name)
}

fn run_runtime(
    future: impl std::future::Future<Output = Result<(), credproxy::StartError>>,
) -> ExitCode {
    // Startup, refreshers and the accept loop run here; connections are served on the
    // threads `server::serve` starts (CREDPROXY_WORKER_THREADS, default one per CPU), each
    // with a runtime of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credproxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credproxy: {e}");
            ExitCode::from(1)
        }
    }
}

async fn dev(port: Option<u16>) -> Result<(), credproxy::StartError> {
    let port = port
        .or_else(|| env("PORT").and_then(|p| p.parse().ok()))
        .unwrap_or(credproxy::dev::DEFAULT_PORT);
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // The port first: a taken port is said at once, before any banner.
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            return Err(credproxy::StartError::Setting(
                credproxy::dev::port_problem(listen, &e),
            ));
        }
    };
    let session = credproxy::dev::prepare(listen)
        .await
        .map_err(std::io::Error::other)?;
    let secret =
        env("CREDPROXY_DEV_SECRET").unwrap_or_else(|| credproxy::dev::DEV_SECRET.to_string());
    let lookup = move |name: &str| {
        if name == "CREDPROXY_DEV_SECRET" {
            Some(secret.clone())
        } else {
            None
        }
    };
    let (config, _) = config::parse(&session.config, &lookup)?;
    println!("{}", credproxy::dev::banner(listen, &session));
    credproxy::run_with(config, &lookup, Some(listener), shutdown_signal()).await
}

/// Completes on SIGTERM (Cloud Run) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
