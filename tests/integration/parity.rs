//! `explain` decides exactly as `serve` does: one config, the same caller, client address
//! and method, the same verdict and the same reason. A CI gate built on `explain` is then
//! never more permissive than production.

use crate::harness::*;

const OLD_ETL: &str = "old-etl@pipelines.iam.gserviceaccount.com";

fn extra_routes() -> String {
    format!(
        r#"  ranged:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    source_ranges: ["127.0.0.0/8"]
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
  elsewhere:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    source_ranges: ["10.8.0.0/24"]
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
  honey:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
"#
    )
}

fn decoys() -> String {
    format!("decoys:\n  routes: [\"honey\"]\n  callers: [\"{OLD_ETL}\"]\n")
}

/// `credproxy explain` on `config`: (exit code, stdout).
async fn explain(config: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).expect("write config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .arg("explain")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_clear()
        .output()
        .await
        .expect("run explain");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn explain_and_serve_agree_on_decoys_source_ranges_grants_and_methods() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let config = format!(
        "{}{}",
        decoys(),
        default_config(&jwks, &upstream, &extra_routes())
    );
    let app = TestApp::spawn(&config, &keys).await;
    // The test client connects from 127.0.0.1; explain is told so with --client-ip.
    let cases: [(&str, &str, &str, Option<&str>); 8] = [
        ("GET", READER, "/api/v1/items", None),
        ("get", READER, "/api/v1/items", None),
        ("GET", STRANGER, "/api/v1/items", Some("grant_expired")),
        ("GET", READER, "/honey/x", Some("decoy")),
        ("GET", OLD_ETL, "/api/public/x", Some("decoy")),
        ("GET", READER, "/ranged/x", None),
        ("GET", READER, "/elsewhere/x", Some("source_not_allowed")),
        ("GET", READER, "/hon%65y/x", Some("decoy")),
    ];
    for (method, caller, path, reason) in cases {
        let r = app
            .request_as(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                caller,
                path,
            )
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let id = r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        let entry = app.audit_for(&id).await;
        let (code, stdout) = explain(
            &config,
            &["--caller", caller, "--client-ip", "127.0.0.1", method, path],
        )
        .await;
        let case = format!("{method} {path} as {caller}: serve {status}, explain:\n{stdout}");
        match (method, reason) {
            ("get", _) => {
                // Methods are exact: no rule names `get`.
                assert_eq!(status, 403, "{case}");
                assert_eq!(code, Some(3), "{case}");
            }
            (_, None) => {
                assert_eq!(status, 200, "{case}");
                assert_eq!(code, Some(0), "{case}");
                assert!(stdout.starts_with("allow\n"), "{case}");
            }
            (_, Some(reason)) => {
                assert_eq!(status, 403, "{case}");
                assert_eq!(entry["reason"], reason, "{case}");
                assert_eq!(code, Some(3), "{case}");
                let line = stdout
                    .lines()
                    .find(|l| l.starts_with("reason: "))
                    .unwrap_or_default();
                assert!(line.contains(reason), "{case}");
                assert!(line.contains("403 forbidden"), "{case}");
            }
        }
    }
    app.assert_nothing_leaked();
}

#[tokio::test]
async fn explain_without_a_client_address_denies_a_route_with_source_ranges() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let config = default_config(&jwks, &upstream, &extra_routes());
    let (code, stdout) = explain(&config, &["--caller", READER, "GET", "/ranged/x"]).await;
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("source_not_allowed"), "{stdout}");
    assert!(stdout.contains("--client-ip"), "{stdout}");
    let (code, stdout) = explain(
        &config,
        &[
            "--caller",
            READER,
            "--client-ip",
            "10.9.9.9",
            "GET",
            "/ranged/x",
        ],
    )
    .await;
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("client address 10.9.9.9"), "{stdout}");
}

#[tokio::test]
async fn explain_judges_grants_at_the_given_time() {
    let keys = Keys::new();
    let jwks = FakeJwks::start(keys.signer.jwks()).await;
    let upstream = FakeUpstream::start().await;
    let config = default_config(&jwks, &upstream, "");
    // The stranger's grant expired at 2020-01-01: allowed before, refused after.
    let args = |at: &'static str| ["--caller", STRANGER, "--at", at, "GET", "/api/v1/items"];
    let (code, stdout) = explain(&config, &args("2019-12-31T23:59:59Z")).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("routes.api.allow[3]"), "{stdout}");
    let (code, stdout) = explain(&config, &args("2020-01-01T00:00:01Z")).await;
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("grant_expired"), "{stdout}");
    let (code, _) = explain(&config, &args("yesterday")).await;
    assert_eq!(code, Some(2), "a bad --at is a usage error");
}
