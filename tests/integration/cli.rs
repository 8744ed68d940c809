//! The command line as a user meets it: the real `credproxy` binary run as a child process
//! with a clean environment and config files in a temporary directory.
//! Exit codes (0 ok, 1 error, 2 usage, 3 `explain` deny), key paths and line numbers are
//! asserted exactly.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// What one finished run of the binary produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `credproxy ARGS` with only `envs` in its environment. A run that has not finished
/// after 15 s (e.g. `serve` that started listening) is killed and fails the test.
async fn credproxy(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_credproxy"));
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn credproxy");
    // On timeout the child is dropped, which kills it.
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("credproxy {args:?} did not exit within 15 s"))
        .expect("wait for credproxy");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `text` as `name` into `dir` and returns the path.
fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Guards the fixtures themselves: line `line` (1-based) of `text` holds `needle`.
fn assert_fixture_line(text: &str, line: usize, needle: &str) {
    let actual = text.lines().nth(line - 1).unwrap_or_default();
    assert!(
        actual.contains(needle),
        "fixture line {line} is `{actual}`, expected it to contain `{needle}`"
    );
}

/// A valid config whose secrets cannot be read here: `check` and `explain` must not care.
/// Line numbers matter to no assertion; the rule indexes do.
const VALID: &str = r#"identity:
  audiences: ["https://credproxy.test"]
  jwks_url: "http://127.0.0.1:9/certs"
routes:
  stripe:
    upstream: "https://api.stripe.com/base"
    credential:
      secret: "env:CLI_TEST_UNSET_STRIPE_KEY"
      inject:
        header: { name: "Authorization", format: "Bearer {secret}" }
    allow:
      - callers: ["daily@acme.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/v1/charges", "/v1/charges/*"]
      - callers: ["writer@acme.iam.gserviceaccount.com"]
        methods: ["GET", "POST"]
        paths: ["/v1/**"]
      - callers: ["backfill@acme.iam.gserviceaccount.com"]
        methods: ["POST"]
        paths: ["/v1/**"]
        expires: "2020-01-01T00:00:00Z"
  files:
    upstream: "https://files.example.com"
    credential:
      secret: "file:/nonexistent/credproxy-cli-test/key"
      inject:
        query: { name: "key" }
    allow:
      - callers: ["*@acme.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/**"]
"#;

/// Four problems of different passes (unknown key, plaintext upstream, bad secret
/// reference, bad path pattern) in one file.
const MANY_PROBLEMS: &str = r#"identity:
  audiences: ["https://credproxy.test"]
  jwks_url: "http://127.0.0.1:9/certs"
routes:
  stripe:
    upstream: "http://api.stripe.com"
    credential:
      secret: "vault:x"
      inject:
        header: { name: "Authorization", format: "Bearer {secret}" }
    allow:
      - callers: ["daily@acme.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/v1/a*b"]
        colour: blue
"#;

/// One route with a single rule; `{rule_extra}` lines go after `paths` (line 16 onwards),
/// `{secret}` is the credential reference (line 9).
fn one_route(secret: &str, rule_extra: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
identity:
  audiences: ["https://credproxy.test"]
  jwks_url: "http://127.0.0.1:9/certs"
routes:
  stripe:
    upstream: "https://api.stripe.com"
    credential:
      secret: "{secret}"
      inject:
        header: {{ name: "Authorization", format: "Bearer {{secret}}" }}
    allow:
      - callers: ["daily@acme.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/v1/**"]
{rule_extra}"#
    )
}

// ------------------------------------------------------------------------------------------
// check

#[tokio::test]
async fn check_accepts_a_valid_config_without_reading_any_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The expired grant would be a warning; leave it out so the output is exactly "valid".
    let text = VALID.replace("        expires: \"2020-01-01T00:00:00Z\"\n", "");
    let path = write_config(&dir, "config.yaml", &text);
    // CLI_TEST_UNSET_STRIPE_KEY is unset and the file: secret does not exist.
    assert!(!Path::new("/nonexistent/credproxy-cli-test/key").exists());
    let run = credproxy(&["check", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        run.stdout,
        format!("{}: valid (2 route(s))\n", path.display()),
        "{run}"
    );
    assert_eq!(run.stderr, "", "{run}");
}

#[tokio::test]
async fn check_reports_malformed_yaml_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "identity:\n  audiences: [\"a\"]\nroutes:\n  stripe: @oops\n";
    assert_fixture_line(text, 4, "@oops");
    let path = write_config(&dir, "config.yaml", text);
    let run = credproxy(&["check", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr
            .contains("error: (file) (line 4): not valid YAML"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains(&format!("{}: invalid (1 error(s))", path.display())),
        "{run}"
    );
    assert!(!run.stdout.contains("valid"), "{run}");
}

#[tokio::test]
async fn check_reports_every_problem_with_path_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_fixture_line(MANY_PROBLEMS, 6, "upstream:");
    assert_fixture_line(MANY_PROBLEMS, 8, "secret:");
    assert_fixture_line(MANY_PROBLEMS, 14, "paths:");
    assert_fixture_line(MANY_PROBLEMS, 15, "colour:");
    let path = write_config(&dir, "config.yaml", MANY_PROBLEMS);
    let run = credproxy(&["check", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    for (location, about) in [
        ("routes.stripe.allow[0].colour (line 15)", "unknown key"),
        ("routes.stripe.upstream (line 6)", "plaintext"),
        ("routes.stripe.credential.secret (line 8)", "vault:x"),
        ("routes.stripe.allow[0].paths[0] (line 14)", "/v1/a*b"),
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("error: {location}: ")))
            .unwrap_or_else(|| panic!("no problem reported at {location}\n{run}"));
        assert!(line.contains(about), "`{line}` should mention `{about}`");
    }
    assert!(
        run.stderr
            .contains(&format!("{}: invalid (4 error(s))", path.display())),
        "{run}"
    );
}

#[tokio::test]
async fn check_requires_the_identity_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = VALID.replace(
        "identity:\n  audiences: [\"https://credproxy.test\"]\n  jwks_url: \"http://127.0.0.1:9/certs\"\n",
        "",
    );
    assert!(!text.contains("identity"));
    let path = write_config(&dir, "config.yaml", &text);
    let run = credproxy(&["check", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    let problem = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: ") && l.contains("identity"))
        .unwrap_or_else(|| panic!("no problem names `identity`\n{run}"));
    assert!(problem.contains("missing"), "{problem}");
    assert!(
        run.stderr
            .contains(&format!("{}: invalid (1 error(s))", path.display())),
        "{run}"
    );
}

#[tokio::test]
async fn check_rejects_an_expiry_without_a_zone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = one_route(
        "env:CLI_TEST_KEY",
        "        expires: \"2026-12-31T00:00:00\"\n",
    );
    assert_fixture_line(&text, 16, "expires:");
    let path = write_config(&dir, "config.yaml", &text);
    let run = credproxy(&["check", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: routes.stripe.allow[0].expires (line 16): "))
        .unwrap_or_else(|| panic!("no error at routes.stripe.allow[0].expires\n{run}"));
    assert!(line.contains("zone"), "{line}");
}

#[tokio::test]
async fn check_warns_about_a_grant_expiring_within_seven_days_but_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let soon = (chrono::Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let text = one_route(
        "env:CLI_TEST_KEY",
        &format!("        expires: \"{soon}\"\n"),
    );
    assert_fixture_line(&text, 16, "expires:");
    let path = write_config(&dir, "config.yaml", &text);
    let run = credproxy(&["check", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains(
            "warning: routes.stripe.allow[0].expires (line 16): this grant expires within 7 days"
        ),
        "{run}"
    );
    assert!(!run.stderr.contains("error:"), "{run}");
    assert_eq!(
        run.stdout,
        format!("{}: valid (1 route(s), 1 warning(s))\n", path.display()),
        "{run}"
    );
}

#[tokio::test]
async fn check_fails_naming_a_missing_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("does-not-exist.yaml");
    let run = credproxy(&["check", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot read config file {}", path.display())),
        "{run}"
    );
}

// ------------------------------------------------------------------------------------------
// explain

async fn explain(caller: &str, method: &str, url_path: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "config.yaml", VALID);
    credproxy(
        &[
            "explain",
            "--config",
            s(&path),
            "--caller",
            caller,
            method,
            url_path,
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn explain_allows_naming_the_route_upstream_and_rule() {
    let run = explain(
        "daily@acme.iam.gserviceaccount.com",
        "GET",
        "/stripe/v1/charges/ch_1?expand=x",
    )
    .await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("allow\n"), "{run}");
    assert!(
        run.stdout
            .contains("route: stripe -> https://api.stripe.com/base/v1/charges/ch_1\n"),
        "{run}"
    );
    assert!(
        run.stdout.contains("rule: routes.stripe.allow[0]: "),
        "{run}"
    );

    // A caller only the second rule lists: the rule index follows.
    let run = explain(
        "writer@acme.iam.gserviceaccount.com",
        "POST",
        "/stripe/v1/refunds",
    )
    .await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("allow\n"), "{run}");
    assert!(
        run.stdout
            .contains("route: stripe -> https://api.stripe.com/base/v1/refunds\n"),
        "{run}"
    );
    assert!(
        run.stdout.contains("rule: routes.stripe.allow[1]: "),
        "{run}"
    );
}

/// The `reason:` line of a denial, after checking exit code 3 and the `deny` verdict.
fn denial(run: &Run) -> String {
    assert_eq!(run.code, Some(3), "{run}");
    assert!(run.stdout.starts_with("deny\n"), "{run}");
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("reason: "))
        .unwrap_or_else(|| panic!("no reason given\n{run}"))
        .to_string()
}

#[tokio::test]
async fn explain_denies_a_method_no_rule_allows() {
    let reason = denial(
        &explain(
            "daily@acme.iam.gserviceaccount.com",
            "DELETE",
            "/stripe/v1/charges/ch_1",
        )
        .await,
    );
    assert!(reason.contains("403 forbidden"), "{reason}");
    assert!(reason.contains("DELETE /v1/charges/ch_1"), "{reason}");
    assert!(reason.contains("`stripe`"), "{reason}");
}

#[tokio::test]
async fn explain_denies_a_caller_no_rule_lists() {
    let reason = denial(
        &explain(
            "stranger@other.iam.gserviceaccount.com",
            "GET",
            "/stripe/v1/charges",
        )
        .await,
    );
    assert!(reason.contains("403 forbidden"), "{reason}");
    assert!(
        reason.contains("stranger@other.iam.gserviceaccount.com"),
        "{reason}"
    );
}

#[tokio::test]
async fn explain_denies_an_expired_grant_and_says_so() {
    let reason = denial(
        &explain(
            "backfill@acme.iam.gserviceaccount.com",
            "POST",
            "/stripe/v1/charges",
        )
        .await,
    );
    assert!(reason.contains("expired"), "{reason}");
    assert!(reason.contains("routes.stripe.allow[2]"), "{reason}");
    assert!(reason.contains("grant_expired"), "{reason}");
}

#[tokio::test]
async fn explain_denies_an_unknown_route() {
    let reason = denial(
        &explain(
            "daily@acme.iam.gserviceaccount.com",
            "GET",
            "/nope/v1/charges",
        )
        .await,
    );
    assert!(reason.contains("unknown_route"), "{reason}");
    assert!(reason.contains("`nope`"), "{reason}");
}

#[tokio::test]
async fn explain_denies_a_traversal_path_as_a_bad_request() {
    let reason = denial(
        &explain(
            "daily@acme.iam.gserviceaccount.com",
            "GET",
            "/stripe/../admin",
        )
        .await,
    );
    assert!(reason.contains("bad_request"), "{reason}");
}

#[tokio::test]
async fn explain_fails_on_an_invalid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "config.yaml", MANY_PROBLEMS);
    let run = credproxy(
        &[
            "explain",
            "--config",
            s(&path),
            "--caller",
            "daily@acme.iam.gserviceaccount.com",
            "GET",
            "/stripe/v1/charges",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr
            .contains("error: routes.stripe.allow[0].paths[0] (line 14): "),
        "{run}"
    );
    assert!(!run.stdout.contains("allow"), "{run}");
    assert!(!run.stdout.contains("deny"), "{run}");
}

// ------------------------------------------------------------------------------------------
// serve: every case here must exit before serving (a valid config would run forever).

#[tokio::test]
async fn serve_refuses_an_invalid_config_before_listening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "config.yaml", MANY_PROBLEMS);
    let run = credproxy(&["serve", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr
            .contains("error: routes.stripe.upstream (line 6): "),
        "{run}"
    );
    assert!(
        run.stderr
            .contains(&format!("{} is invalid; not starting", path.display())),
        "{run}"
    );
    assert!(!run.stderr.contains("credproxy listening"), "{run}");
}

#[tokio::test]
async fn serve_fails_naming_an_unset_env_secret_and_its_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "config.yaml", &one_route("env:CLI_TEST_KEY", ""));
    // A different variable is set, to show the named one is really looked up.
    let run = credproxy(
        &["serve", "--config", s(&path)],
        &[("CLI_TEST_OTHER_KEY", "x")],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("route `stripe`"), "{run}");
    assert!(
        run.stderr
            .contains("environment variable CLI_TEST_KEY is not set"),
        "{run}"
    );
    assert!(!run.stderr.contains("credproxy listening"), "{run}");
}

#[tokio::test]
async fn serve_refuses_a_serving_thread_count_that_is_not_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "config.yaml", &one_route("env:CLI_TEST_KEY", ""));
    for bad in ["lots", "-1", "1025"] {
        let run = credproxy(
            &["serve", "--config", s(&path)],
            &[("CLI_TEST_KEY", "x"), ("CREDPROXY_WORKER_THREADS", bad)],
        )
        .await;
        assert_eq!(run.code, Some(1), "{run}");
        assert!(
            run.stderr.contains(&format!(
                "CREDPROXY_WORKER_THREADS=\"{bad}\" is not a thread count"
            )),
            "{run}"
        );
        assert!(run.stderr.contains("from 1 to 1024"), "{run}");
        assert!(!run.stderr.contains("credproxy listening"), "{run}");
    }
}

#[tokio::test]
async fn serve_fails_naming_a_missing_secret_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("missing-secret");
    let path = write_config(
        &dir,
        "config.yaml",
        &one_route(&format!("file:{}", secret.display()), ""),
    );
    let run = credproxy(&["serve", "--config", s(&path)], &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("route `stripe`"), "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot read {}", secret.display())),
        "{run}"
    );
    assert!(!run.stderr.contains("credproxy listening"), "{run}");
}

#[tokio::test]
async fn serve_reads_the_config_path_from_credproxy_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "from-env.yaml", MANY_PROBLEMS);
    let run = credproxy(&["serve"], &[("CREDPROXY_CONFIG", s(&path))]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr
            .contains(&format!("{} is invalid; not starting", path.display())),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("error: routes.stripe.credential.secret (line 8): "),
        "{run}"
    );
}

#[tokio::test]
async fn serve_prefers_the_config_flag_over_credproxy_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = write_config(&dir, "flag.yaml", MANY_PROBLEMS);
    let from_env = write_config(&dir, "from-env.yaml", MANY_PROBLEMS);
    let run = credproxy(
        &["serve", "--config", s(&flag)],
        &[("CREDPROXY_CONFIG", s(&from_env))],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr
            .contains(&format!("{} is invalid; not starting", flag.display())),
        "{run}"
    );
    assert!(!run.stderr.contains("from-env.yaml"), "{run}");
}

// ------------------------------------------------------------------------------------------
// usage errors

#[tokio::test]
async fn an_unknown_subcommand_is_a_usage_error() {
    let run = credproxy(&["frobnicate"], &[]).await;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("frobnicate"), "{run}");
}

#[tokio::test]
async fn missing_arguments_are_a_usage_error() {
    let run = credproxy(&[], &[]).await;
    assert_eq!(run.code, Some(2), "{run}");
    let run = credproxy(&["check"], &[]).await;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("--config"), "{run}");
    let run = credproxy(&["explain", "--config", "x.yaml", "GET"], &[]).await;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("--caller"), "{run}");
}

// ------------------------------------------------------------------------------------------
// dev

/// Kills the child when dropped, also when the test fails.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// The token of a banner line `curl -s -H 'Authorization: Bearer TOKEN' URL`, when `url`.
fn curl_token(line: &str, url: &str) -> Option<String> {
    let rest = line
        .trim_start()
        .strip_prefix("curl -s -H 'Authorization: Bearer ")?;
    let (token, tail) = rest.split_once('\'')?;
    (tail.trim() == url).then(|| token.to_string())
}

#[tokio::test]
async fn dev_demo_injects_the_secret_for_the_allowed_token_only() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(["dev", "--port", &port.to_string()])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn credproxy dev");
    let stdout = child.stdout.take().expect("stdout");
    let stderr_pipe = child.stderr.take().expect("stderr");
    let _guard = ChildGuard(child);

    // stderr (logs) is kept for failure messages; stdout lines go to a channel. Both pipes are
    // drained until the child exits, so it never blocks on a full pipe.
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().expect("stderr lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let logs = || stderr.lock().expect("stderr lock").clone();

    let url = format!("http://127.0.0.1:{port}/echo/v1/hello");
    let mut tokens = Vec::new();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokens.len() < 2 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => {
                if let Some(token) = curl_token(&line, &url) {
                    tokens.push(token);
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Ok(None) => panic!("dev exited early\n{seen}\n--- stderr ---\n{}", logs()),
            Err(_) => panic!(
                "no two curl lines within 20 s\n{seen}\n--- stderr ---\n{}",
                logs()
            ),
        }
    }
    assert_ne!(tokens[0], tokens[1], "{seen}");
    // The lines for Python: the allowed caller's token as CREDPROXY_ID_TOKEN, and the client
    // pointed at this port.
    let python = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("credproxy_session(") {
                    break line;
                }
            }
            _ => panic!("no Python lines in the banner\n{seen}"),
        }
    };
    assert!(
        seen.contains(&format!("export CREDPROXY_ID_TOKEN='{}'", tokens[0])),
        "{seen}"
    );
    assert!(
        python.contains(&format!("http://127.0.0.1:{port}")),
        "{python}"
    );

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let ready = format!("http://127.0.0.1:{port}/_credproxy/ready");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client.get(&ready).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dev never became ready\n--- stderr ---\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let allowed = client
        .get(&url)
        .bearer_auth(&tokens[0])
        .send()
        .await
        .expect("allowed request");
    assert_eq!(allowed.status(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&allowed.text().await.expect("body")).expect("echo JSON");
    assert_eq!(body["upstream"], "credproxy dev echo", "{body}");
    assert_eq!(body["path"], "/v1/hello", "{body}");
    assert_eq!(
        body["headers"]["authorization"], "Bearer dev-demo-api-key",
        "{body}"
    );

    let denied = client
        .get(&url)
        .bearer_auth(&tokens[1])
        .send()
        .await
        .expect("denied request");
    assert_eq!(denied.status(), 403);

    let anonymous = client.get(&url).send().await.expect("anonymous request");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn dev_on_a_taken_port_says_so_at_once_and_names_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
            .args(["dev", "--port", &port.to_string()])
            .env_clear()
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("dev exits at once on a taken port")
    .expect("run credproxy dev");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // Nothing printed before the refusal: no banner, no token.
    assert!(stdout.trim().is_empty(), "banner printed first: {stdout}");
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("--port"),
        "{stderr}"
    );
    drop(taken);
}
