//! Least privilege from evidence: rule attribution and shadow rules in the audit entry, and
//! `credproxy report` fed the server's own stdout (and its Cloud Logging export forms).

use crate::harness::*;

fn sha256_8(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn request_id(response: reqwest::Response) -> String {
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let _ = response.bytes().await;
    id
}

#[tokio::test]
async fn allowed_entries_name_their_rule_and_its_hash_denied_ones_neither() {
    let w = World::start().await;
    let read = request_id(w.app.get_as(READER, "/api/v1/things").await).await;
    let write = request_id(
        w.app
            .request_as(reqwest::Method::POST, WRITER, "/api/v1/things")
            .body("x")
            .send()
            .await
            .expect("request"),
    )
    .await;
    let denied = request_id(w.app.get_as(STRANGER, "/api/v1/things").await).await;

    let e = w.app.audit_for(&read).await;
    assert_eq!(e["rule"], "routes.api.allow[0]");
    assert_eq!(
        e["rule_hash"],
        sha256_8(&format!(
            r#"{{"callers":["{READER}"],"methods":["GET"],"paths":["/v1/**"]}}"#
        ))
        .as_str()
    );
    let e = w.app.audit_for(&write).await;
    assert_eq!(e["rule"], "routes.api.allow[1]");
    assert_eq!(
        e["rule_hash"],
        sha256_8(&format!(
            r#"{{"callers":["{WRITER}"],"methods":["GET","POST","PUT"],"paths":["/v1/**"]}}"#
        ))
        .as_str()
    );
    // The expired grant matched but did not allow: a denial names no rule.
    let e = w.app.audit_for(&denied).await;
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["reason"], "grant_expired");
    let object = e.as_object().expect("object");
    assert!(
        !object.contains_key("rule") && !object.contains_key("rule_hash"),
        "{e}"
    );
    assert!(
        !object.contains_key("shadow"),
        "no shadow_allow on this route: {e}"
    );
}

/// A route `sh` whose `allow` is broad and whose `shadow_allow` is narrow.
const SHADOW_ROUTE: &str = r#"
  sh:
    upstream: "{UPSTREAM}"
    credential:
      secret: "env:API_SECRET"
      inject:
        header: { name: "Authorization", format: "Bearer {secret}" }
    allow:
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: ["GET", "POST"]
        paths: ["/v1/**"]
    shadow_allow:
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/v1/charges"]
      - callers: ["reader@pipelines.iam.gserviceaccount.com"]
        methods: ["DELETE"]
        paths: ["/v1/charges"]
"#;

#[tokio::test]
async fn shadow_rules_are_judged_for_every_request_and_never_change_the_response() {
    let w = World::custom(
        SHADOW_ROUTE,
        |c| {
            c.replace(
                "routes:\n",
                &format!("metrics: {{ enabled: true, callers: [\"{WRITER}\"] }}\nroutes:\n"),
            )
        },
        &default_env(),
    )
    .await;
    let app = &w.app;
    let send = |method: reqwest::Method, path: &'static str| async move {
        let r = app
            .request_as(method, READER, path)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, request_id(r).await)
    };
    // Allowed, and the shadow rules agree.
    let (status, both) = send(reqwest::Method::GET, "/sh/v1/charges").await;
    assert_eq!(status, 200);
    // Allowed today, the shadow rules would deny: still served.
    let (status, would_deny) = send(reqwest::Method::POST, "/sh/v1/refunds").await;
    assert_eq!(status, 200);
    // Denied today, a shadow rule would allow: still refused.
    let (status, would_allow) = send(reqwest::Method::DELETE, "/sh/v1/charges").await;
    assert_eq!(status, 403);
    // Denied by both.
    let (status, neither) = send(reqwest::Method::PUT, "/sh/v2/x").await;
    assert_eq!(status, 403);
    // Unauthenticated: never judged, so no shadow decision.
    let r = app.get("/sh/v1/charges").await;
    assert_eq!(r.status(), 401);
    let unauthenticated = request_id(r).await;

    let shadow = |e: &serde_json::Value| e["shadow"].clone();
    let e = app.audit_for(&both).await;
    assert_eq!(
        shadow(&e),
        serde_json::json!({"decision": "allow", "rule": "routes.sh.shadow_allow[0]"})
    );
    assert_eq!(e["rule"], "routes.sh.allow[0]");
    let e = app.audit_for(&would_deny).await;
    assert_eq!(
        shadow(&e),
        serde_json::json!({"decision": "deny", "rule": null})
    );
    assert_eq!(
        (e["decision"].as_str(), e["rule"].as_str()),
        (Some("allow"), Some("routes.sh.allow[0]"))
    );
    let e = app.audit_for(&would_allow).await;
    assert_eq!(
        shadow(&e),
        serde_json::json!({"decision": "allow", "rule": "routes.sh.shadow_allow[1]"})
    );
    assert_eq!(e["decision"], "deny");
    assert!(e.get("rule").is_none(), "{e}");
    let e = app.audit_for(&neither).await;
    assert_eq!(
        shadow(&e),
        serde_json::json!({"decision": "deny", "rule": null})
    );
    let e = app.audit_for(&unauthenticated).await;
    assert!(e.get("shadow").is_none(), "{e}");
    // Routes without shadow_allow carry no shadow field.
    let other = request_id(app.get_as(READER, "/api/v1/x").await).await;
    assert!(app.audit_for(&other).await.get("shadow").is_none());

    let metrics = app
        .get_as(WRITER, "/_credproxy/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    for (enforced, shadow) in [
        ("allow", "allow"),
        ("allow", "deny"),
        ("deny", "allow"),
        ("deny", "deny"),
    ] {
        let line = format!(
            "credproxy_shadow_decisions_total{{route=\"sh\",enforced=\"{enforced}\",shadow=\"{shadow}\"}} 1\n"
        );
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
    assert!(
        !metrics.contains("credproxy_shadow_decisions_total{route=\"api\""),
        "{metrics}"
    );
}

// ------------------------------------------------------------------------------------------
// credproxy report, fed the server's own stdout

/// Never granted anything that is used.
const NOBODY: &str = "nobody@pipelines.iam.gserviceaccount.com";
/// A decoy caller.
const OLD_ETL: &str = "old-etl@pipelines.iam.gserviceaccount.com";

/// A deployment with deliberately broad rules on route `stripe`:
/// - allow[0]: WRITER may GET /v1/balance until `expires` (3 days from now);
/// - allow[1]: READER and WRITER may GET and POST anything under /v1/;
/// - allow[2]: NOBODY may GET anything under /v1/ (and never does);
///
/// then `shadow` (a `shadow_allow:` block, or empty) and `extra` top-level keys.
fn broad_config(jwks: &FakeJwks, upstream: &FakeUpstream, expires: &str, shadow: &str) -> String {
    let shadow = shadow
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>();
    format!(
        r#"listen: "127.0.0.1:0"
environment: test
decoys:
  callers: ["{OLD_ETL}"]
identity:
  audiences: ["{AUDIENCE}"]
  jwks_url: "{jwks}"
routes:
  stripe:
    upstream: "{upstream}"
    credential:
      secret: "env:API_SECRET"
      inject:
        header: {{ name: "Authorization", format: "Bearer {{secret}}" }}
    allow:
      - callers: ["{WRITER}"]
        methods: ["GET"]
        paths: ["/v1/balance"]
        expires: "{expires}"
      - callers: ["{READER}", "{WRITER}"]
        methods: ["GET", "POST"]
        paths: ["/v1/**"]
      - callers: ["{NOBODY}"]
        methods: ["GET"]
        paths: ["/v1/**"]
{shadow}"#,
        jwks = jwks.url(),
        upstream = upstream.url(),
    )
}

/// The current shadow rules of the broad deployment: READER on charges only.
const FIRST_SHADOW: &str = r#"shadow_allow:
  - callers: ["reader@pipelines.iam.gserviceaccount.com"]
    methods: ["GET"]
    paths: ["/v1/charges", "/v1/charges/*"]
"#;

struct Deployment {
    _keys: Keys,
    _jwks: FakeJwks,
    _upstream: FakeUpstream,
    app: TestApp,
    config: String,
    dir: tempfile::TempDir,
}

impl Deployment {
    async fn start(shadow: &str) -> Deployment {
        let keys = Keys::new();
        let jwks = FakeJwks::start(keys.signer.jwks()).await;
        let upstream = FakeUpstream::start().await;
        let expires = (chrono::Utc::now() + chrono::Duration::days(3))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let config = broad_config(&jwks, &upstream, &expires, shadow);
        let app = TestApp::spawn(&config, &keys).await;
        Deployment {
            _keys: keys,
            _jwks: jwks,
            _upstream: upstream,
            app,
            config,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    async fn send(&self, method: reqwest::Method, caller: &str, path: &str) -> u16 {
        let r = self
            .app
            .request_as(method, caller, path)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        status
    }

    /// The traffic the pipelines really send: 19 requests.
    async fn usual_traffic(&self) {
        use reqwest::Method as M;
        for _ in 0..2 {
            assert_eq!(self.send(M::GET, READER, "/stripe/v1/charges").await, 200);
        }
        for i in 0..12 {
            let path = format!("/stripe/v1/charges/ch_{i}");
            assert_eq!(self.send(M::GET, READER, &path).await, 200);
        }
        assert_eq!(
            self.send(M::GET, READER, "/stripe/v1/customers/cu_1").await,
            200
        );
        assert_eq!(self.send(M::GET, WRITER, "/stripe/v1/balance").await, 200);
        for _ in 0..2 {
            assert_eq!(self.send(M::GET, STRANGER, "/stripe/v1/charges").await, 403);
        }
        assert_eq!(self.send(M::GET, OLD_ETL, "/stripe/v1/charges").await, 403);
    }

    /// The audit lines written so far, once there are `n`.
    async fn audit_text(&self, n: usize) -> String {
        self.app.wait_audit(n).await;
        let text = self.app.stdout.text();
        assert_eq!(text.lines().count(), n, "{text}");
        text
    }

    fn file(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    fn config_file(&self, config: &str) -> std::path::PathBuf {
        self.file("config.yaml", config.as_bytes())
    }
}

/// Runs `credproxy report` with `args` (and `stdin`); returns exit code, stdout, stderr.
fn report(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .arg("report")
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn credproxy report");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report_json(config: &std::path::Path, audit: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--config",
        config.to_str().expect("utf-8"),
        "--audit",
        audit,
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = report(&args, None);
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("report JSON ({e}):\n{stdout}"))
}

/// A finding as (code, rule, caller, count), for exact comparison.
type Found = (String, Option<String>, Option<String>, Option<u64>);

/// Findings as (code, rule, caller, count) for exact comparison.
fn findings(report: &serde_json::Value) -> Vec<Found> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["code"].as_str().expect("code").to_string(),
                f["rule"].as_str().map(str::to_string),
                f["caller"].as_str().map(str::to_string),
                f["count"].as_u64(),
            )
        })
        .collect()
}

fn rule<'a>(report: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["rule"] == key)
        .unwrap_or_else(|| panic!("no rule {key} in {report}"))
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

#[tokio::test]
async fn report_on_own_audit_lines_finds_each_code_with_exact_counts() {
    let d = Deployment::start(FIRST_SHADOW).await;
    d.usual_traffic().await;
    let mut audit = d.audit_text(19).await;
    // Garbage and objects that are not audit entries are counted, never fatal.
    audit.push_str("this is not JSON\n{\"message\":\"credproxy listening\",\"severity\":\"INFO\"}\n{\"truncated\": \n");
    let audit_path = d.file("audit.jsonl", audit.as_bytes());
    let config = d.config_file(&d.config);
    let r = report_json(&config, audit_path.to_str().expect("utf-8"), &[]);

    assert_eq!(r["entries"], 19);
    assert_eq!(r["input"]["entries"], 19);
    assert_eq!(r["unreadable"], 2);
    assert_eq!(r["not_audit"], 1);
    assert_eq!(r["unattributed"], 0);
    assert!(
        r["span"]["from"]
            .as_str()
            .is_some_and(|t| t <= r["span"]["to"].as_str().expect("to"))
    );

    let a0 = "routes.stripe.allow[0]";
    let a1 = "routes.stripe.allow[1]";
    let a2 = "routes.stripe.allow[2]";
    assert_eq!(
        findings(&r),
        vec![
            ("unused_rule".to_string(), s(a2), None, Some(0)),
            ("unused_caller".to_string(), s(a1), s(WRITER), Some(0)),
            ("unused_method".to_string(), s(a1), None, Some(0)),
            ("broad_path".to_string(), s(a1), None, Some(15)),
            ("denied_caller".to_string(), None, s(STRANGER), Some(2)),
            ("decoy_hit".to_string(), None, s(OLD_ETL), Some(1)),
            ("expiring_grant".to_string(), s(a0), None, Some(1)),
            ("shadow_would_deny".to_string(), s(a0), None, Some(1)),
            ("shadow_would_deny".to_string(), s(a1), None, Some(1)),
        ],
        "{:#}",
        r["findings"]
    );
    let broad = &r["findings"][3];
    assert!(
        broad["message"]
            .as_str()
            .is_some_and(|m| m.contains("/v1/charges, /v1/charges/*, /v1/customers/cu_1")),
        "{broad}"
    );
    assert_eq!(
        r["findings"][1]["message"],
        format!("{WRITER} never used {a1}")
    );
    assert!(
        r["findings"][2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("POST"))
    );
    let shadow_miss = &r["findings"][8];
    assert_eq!(
        shadow_miss["samples"],
        serde_json::json!(["GET /v1/customers/cu_1"])
    );

    let used = rule(&r, a1);
    assert_eq!(used["requests"], 15);
    assert_eq!(used["callers_used"], serde_json::json!([READER]));
    assert_eq!(used["callers_unused"], serde_json::json!([WRITER]));
    assert_eq!(used["methods_used"], serde_json::json!(["GET"]));
    assert_eq!(used["methods_unused"], serde_json::json!(["POST"]));
    assert_eq!(used["paths_sample"].as_array().map(Vec::len), Some(14));
    assert!(used["last_used"].is_string());
    assert_eq!(used["rule_hash"].as_str().map(str::len), Some(8));
    let unused = rule(&r, a2);
    assert_eq!(unused["requests"], 0);
    assert!(unused["last_used"].is_null());
    assert_eq!(unused["callers_unused"], serde_json::json!([NOBODY]));
    assert_eq!(
        r["shadow"],
        serde_json::json!([{
            "route": "stripe", "allowed_shadow_allowed": 14, "allowed_shadow_denied": 2,
            "denied_shadow_allowed": 0, "denied_shadow_denied": 3,
            "rules": [{"rule": "routes.stripe.shadow_allow[0]", "rule_hash": rule_hash_of_first_shadow(), "would_allow": 14}]
        }])
    );

    // The proposal keeps what was used and narrows the rest.
    let proposal = r["proposal"]["routes"]["stripe"]
        .as_str()
        .expect("proposal");
    assert!(
        proposal.contains(&format!("  - callers: [\"{READER}\"]\n    methods: [\"GET\"]\n    paths: [\"/v1/charges\", \"/v1/charges/*\", \"/v1/customers/cu_1\"]\n")),
        "{proposal}"
    );
    assert!(!proposal.contains(NOBODY), "{proposal}");
    assert!(r["proposal"]["terraform"].is_null());

    // A config rendered by the Terraform module gets the proposal in its variable's shape
    // too (so policy and IAM stay one source); --terraform asks for it on any config.
    let rendered = d.file(
        "rendered.yaml",
        format!("# Rendered by Terraform (terraform/modules/credproxy_config). Do not edit: change the Terraform variables.\n{}", d.config).as_bytes(),
    );
    for (config, extra) in [(&rendered, &[][..]), (&config, &["--terraform"][..])] {
        let r = report_json(config, audit_path.to_str().expect("utf-8"), extra);
        let tf = r["proposal"]["terraform"]
            .as_str()
            .expect("terraform proposal");
        assert!(
            tf.contains(&format!("shadow_grants = [\n  {{\n    caller  = \"{WRITER}\"\n    route   = \"stripe\"\n    methods = [\"GET\"]\n    paths   = [\"/v1/balance\"]\n    expires = \"")),
            "{tf}"
        );
        assert!(
            tf.contains(&format!("    caller  = \"{READER}\"\n    route   = \"stripe\"\n    methods = [\"GET\"]\n    paths   = [\"/v1/charges\", \"/v1/charges/*\", \"/v1/customers/cu_1\"]\n  }},\n]\n")),
            "{tf}"
        );
    }

    // The text form says the same for people.
    let (code, text, _) = report(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--audit",
            audit_path.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(
        text.contains("unused_rule: routes.stripe.allow[2] allowed no request"),
        "{text}"
    );
    assert!(text.contains("shadow_allow:\n"), "{text}");
}

fn rule_hash_of_first_shadow() -> String {
    sha256_8(&format!(
        r#"{{"callers":["{READER}"],"methods":["GET"],"paths":["/v1/charges","/v1/charges/*"]}}"#
    ))
}

#[tokio::test]
async fn the_proposal_in_shadow_allow_would_deny_nothing_the_pipelines_do_and_what_they_do_not() {
    // 1. Broad rules, real traffic, a report.
    let d = Deployment::start("").await;
    d.usual_traffic().await;
    let audit = d.audit_text(19).await;
    let audit_path = d.file("audit.jsonl", audit.as_bytes());
    let config = d.config_file(&d.config);
    let r = report_json(&config, audit_path.to_str().expect("utf-8"), &[]);
    let proposal = r["proposal"]["routes"]["stripe"]
        .as_str()
        .expect("proposal")
        .to_string();
    assert!(
        r["shadow"].as_array().is_some_and(Vec::is_empty),
        "{}",
        r["shadow"]
    );

    // 2. The proposal pasted under shadow_allow: check accepts it, serve judges it.
    let second = Deployment::start(&proposal).await;
    let config2 = second.config_file(&second.config);
    let (code, out, err) = {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
            .args(["check", "--config", config2.to_str().expect("utf-8")])
            .env_clear()
            .output()
            .expect("check");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{out}{err}\n{}", second.config);
    second.usual_traffic().await;
    let audit2 = second.audit_text(19).await;
    let path2 = second.file("audit.jsonl", audit2.as_bytes());
    let r2 = report_json(&config2, path2.to_str().expect("utf-8"), &[]);
    let misses: Vec<_> = findings(&r2)
        .into_iter()
        .filter(|f| f.0 == "shadow_would_deny")
        .collect();
    assert!(
        misses.is_empty(),
        "the traffic that produced the proposal is all allowed: {misses:?}"
    );
    assert_eq!(r2["shadow"][0]["allowed_shadow_allowed"], 16);
    assert_eq!(r2["shadow"][0]["allowed_shadow_denied"], 0);

    // 3. Traffic the proposal does not allow (a method and a path nobody used) would be denied.
    use reqwest::Method as M;
    assert_eq!(
        second.send(M::POST, READER, "/stripe/v1/charges").await,
        200
    );
    assert_eq!(second.send(M::GET, READER, "/stripe/v1/payouts").await, 200);
    let audit3 = second.audit_text(21).await;
    let path3 = second.file("audit3.jsonl", audit3.as_bytes());
    let r3 = report_json(&config2, path3.to_str().expect("utf-8"), &[]);
    let misses: Vec<_> = findings(&r3)
        .into_iter()
        .filter(|f| f.0 == "shadow_would_deny")
        .collect();
    assert_eq!(
        misses,
        vec![(
            "shadow_would_deny".to_string(),
            s("routes.stripe.allow[1]"),
            None,
            Some(2)
        )]
    );
    let samples = &r3["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == "shadow_would_deny")
        .expect("miss")["samples"];
    assert_eq!(
        samples,
        &serde_json::json!(["GET /v1/payouts", "POST /v1/charges"])
    );
}

/// The LogEntry Cloud Logging makes of one structured stdout line: the payload in
/// `jsonPayload`, with `httpRequest`, `severity`, `time` (as `timestamp`), the labels and the
/// trace lifted out of it.
fn log_entry(line: &str, n: usize) -> serde_json::Value {
    let mut payload: serde_json::Value = serde_json::from_str(line).expect("audit line");
    let obj = payload.as_object_mut().expect("object");
    let mut entry = serde_json::json!({
        "insertId": format!("{n:016x}"),
        "logName": "projects/acme/logs/run.googleapis.com%2Fstdout",
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": "credproxy", "location": "europe-west1"}},
        "receiveTimestamp": "2026-12-01T00:00:00.123456789Z",
    });
    for (from, to) in [
        ("httpRequest", "httpRequest"),
        ("severity", "severity"),
        ("time", "timestamp"),
        ("logging.googleapis.com/labels", "labels"),
        ("logging.googleapis.com/trace", "trace"),
        ("logging.googleapis.com/spanId", "spanId"),
        ("logging.googleapis.com/trace_sampled", "traceSampled"),
    ] {
        if let Some(v) = obj.remove(from) {
            entry[to] = v;
        }
    }
    entry["jsonPayload"] = payload;
    entry
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test]
async fn report_reads_cloud_logging_exports_gzip_and_stdin_alike() {
    let d = Deployment::start(FIRST_SHADOW).await;
    d.usual_traffic().await;
    let own = d.audit_text(19).await;
    let config = d.config_file(&d.config);
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let baseline = report_json(&config, &path(&d.file("own.jsonl", own.as_bytes())), &[]);
    assert_eq!(baseline["entries"], 19);

    let entries: Vec<serde_json::Value> = own
        .lines()
        .enumerate()
        .map(|(i, l)| log_entry(l, i))
        .collect();
    assert!(entries[0]["jsonPayload"].get("time").is_none() && entries[0]["timestamp"].is_string());
    // `gcloud logging read --format=json`: an indented array, newest first.
    let mut newest_first = entries.clone();
    newest_first.reverse();
    let array = serde_json::to_string_pretty(&newest_first).expect("json");
    let lines: String = entries.iter().map(|e| format!("{e}\n")).collect();

    let same = |r: &serde_json::Value, what: &str| {
        assert_eq!(r["entries"], 19, "{what}");
        assert_eq!(r["unreadable"], 0, "{what}");
        assert_eq!(r["findings"], baseline["findings"], "{what}");
        assert_eq!(r["rules"], baseline["rules"], "{what}");
        assert_eq!(r["span"]["from"], baseline["span"]["from"], "{what}");
        assert_eq!(r["span"]["to"], baseline["span"]["to"], "{what}");
    };
    same(
        &report_json(
            &config,
            &path(&d.file("export.json", array.as_bytes())),
            &[],
        ),
        "array",
    );
    same(
        &report_json(
            &config,
            &path(&d.file("export.jsonl", lines.as_bytes())),
            &[],
        ),
        "LogEntry lines",
    );
    same(
        &report_json(
            &config,
            &path(&d.file("export.json.gz", &gzip(array.as_bytes()))),
            &[],
        ),
        "gzip array",
    );
    same(
        &report_json(
            &config,
            &path(&d.file("own.jsonl.gz", &gzip(own.as_bytes()))),
            &[],
        ),
        "gzip own",
    );

    // stdin, gzip-compressed LogEntry lines.
    let (code, stdout, stderr) = report(
        &[
            "--config",
            &path(&config),
            "--audit",
            "-",
            "--format",
            "json",
        ],
        Some(&gzip(lines.as_bytes())),
    );
    assert_eq!(code, 0, "{stderr}");
    same(&serde_json::from_str(&stdout).expect("json"), "stdin");

    // A broken array: what came before it counts, the rest is one unreadable.
    let cut = &array[..array.len() / 2];
    let r = report_json(&config, &path(&d.file("cut.json", cut.as_bytes())), &[]);
    assert_eq!(r["unreadable"], 1);
    assert!(
        r["entries"].as_u64().is_some_and(|n| n > 0 && n < 19),
        "{}",
        r["entries"]
    );
}

#[tokio::test]
async fn report_window_ends_at_the_newest_entry_and_exit_codes_follow_the_spec() {
    let d = Deployment::start("").await;
    d.usual_traffic().await;
    let own = d.audit_text(19).await;
    let config = d.config_file(&d.config);
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();

    // The first five entries (2 GET /v1/charges and 3 charge ids) are 40 days old.
    let old = chrono::Utc::now() - chrono::Duration::days(40);
    let old_text = old.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let shifted: String = own
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut e: serde_json::Value = serde_json::from_str(l).expect("json");
            if i < 5 {
                e["time"] = old_text.clone().into();
            }
            format!("{e}\n")
        })
        .collect();
    let audit = path(&d.file("shifted.jsonl", shifted.as_bytes()));
    let r = report_json(&config, &audit, &[]);
    assert_eq!(
        (r["entries"].as_u64(), r["input"]["entries"].as_u64()),
        (Some(14), Some(19))
    );
    assert_eq!(r["input"]["outside_window"], 5);
    assert_eq!(r["input"]["span"]["from"], old_text.as_str());
    assert!(r["span"]["from"].as_str() > Some(old_text.as_str()));
    assert_eq!(r["window"]["to"], r["span"]["to"]);
    assert_eq!(rule(&r, "routes.stripe.allow[1]")["requests"], 10);
    let r = report_json(&config, &audit, &["--since", "all"]);
    assert_eq!(r["entries"], 19);
    assert_eq!(rule(&r, "routes.stripe.allow[1]")["requests"], 15);
    let r = report_json(&config, &audit, &["--since", "41d"]);
    assert_eq!(r["entries"], 19);
    let since = (chrono::Utc::now() - chrono::Duration::days(39)).to_rfc3339();
    assert_eq!(
        report_json(&config, &audit, &["--since", &since])["entries"],
        14
    );

    // --fail-on-unused: 4 on unused_rule / unused_caller, with the report still written.
    let (code, stdout, _) = report(
        &[
            "--config",
            &path(&config),
            "--audit",
            &audit,
            "--fail-on-unused",
        ],
        None,
    );
    assert_eq!(code, 4);
    assert!(stdout.contains("unused_rule"), "{stdout}");
    // Every rule and caller used (methods and paths too broad): 0.
    let used_only = d.config.replace(
        &format!("      - callers: [\"{READER}\", \"{WRITER}\"]"),
        &format!("      - callers: [\"{READER}\"]"),
    );
    let used_only = used_only[..used_only
        .find(&format!("      - callers: [\"{NOBODY}\"]"))
        .expect("rule 2")]
        .to_string();
    let used_config = d.file("used.yaml", used_only.as_bytes());
    let (code, stdout, stderr) = report(
        &[
            "--config",
            &path(&used_config),
            "--audit",
            &audit,
            "--fail-on-unused",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert!(findings(&r).iter().any(|f| f.0 == "broad_path"));
    assert!(
        !findings(&r)
            .iter()
            .any(|f| f.0 == "unused_rule" || f.0 == "unused_caller")
    );

    // 1: a bad config, an unreadable input, no audit entry at all.
    let bad = d.file(
        "bad.yaml",
        d.config
            .replace("methods: [\"GET\"]", "methods: [\"FETCH\"]")
            .as_bytes(),
    );
    let (code, _, stderr) = report(&["--config", &path(&bad), "--audit", &audit], None);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("routes.stripe.allow[0].methods[0]"),
        "{stderr}"
    );
    let (code, _, stderr) = report(
        &[
            "--config",
            &path(&config),
            "--audit",
            "/nonexistent/audit.jsonl",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read"), "{stderr}");
    let garbage = path(&d.file("garbage.txt", b"hello\n{\"message\":\"x\"}\n[1,2\n"));
    let (code, _, stderr) = report(&["--config", &path(&config), "--audit", &garbage], None);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no readable audit entry (2 unreadable, 1 other JSON objects)"),
        "{stderr}"
    );
    // A bad window is a usage error.
    let (code, _, stderr) = report(
        &[
            "--config",
            &path(&config),
            "--audit",
            &audit,
            "--since",
            "soon",
        ],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
}

// ------------------------------------------------------------------------------------------
// The HTML page, in a real browser

/// Runs headless Chromium (Debian's `chromium`) on `args`, with a fresh profile; returns
/// its stdout. Panics naming the install command when it is missing.
fn chromium(args: &[&str]) -> String {
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "the HTML report test needs Chromium: apt-get install -y --no-install-recommends chromium (.ci/run installs it when missing)"
            )
        });
    let profile = tempfile::tempdir().expect("profile dir");
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A caller email and a path that would run script if the page did not escape them.
const EVIL_CALLER: &str =
    "<script>document.body.setAttribute('data-pwned','caller')</script>@evil.example";
const EVIL_PATH: &str = "/stripe/v1/%3Cimg%20src%3Dx%20onerror%3D%22document.body.setAttribute(%27data-pwned%27,%27path%27)%22%3E";

#[tokio::test]
async fn html_report_renders_the_matrix_and_findings_in_chromium_and_escapes_what_callers_send() {
    let d = Deployment::start(FIRST_SHADOW).await;
    d.usual_traffic().await;
    use reqwest::Method as M;
    assert_eq!(d.send(M::GET, READER, EVIL_PATH).await, 200);
    assert_eq!(d.send(M::GET, EVIL_CALLER, "/stripe/v1/charges").await, 403);
    let audit = d.audit_text(21).await;
    let audit_path = d.file("audit.jsonl", audit.as_bytes());
    let config = d.config_file(&d.config);
    let page = d.dir.path().join("report.html");
    let (code, stdout, stderr) = report(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--audit",
            audit_path.to_str().expect("utf-8"),
            "--format",
            "html",
            "--out",
            page.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty(), "--out writes the file only: {stdout}");
    let html = std::fs::read_to_string(&page).expect("page");
    // Self-contained: no script, no external asset.
    for needle in ["<script", "<link", "<img", "url(", "http://", "https://"] {
        assert!(!html.contains(needle), "the page has {needle}");
    }

    let url = format!("file://{}", page.display());
    let dom = chromium(&["--dump-dom", &url]);
    assert!(dom.contains("<table id=\"matrix\">"), "{dom}");
    assert!(dom.contains("<th scope=\"col\">stripe</th>"), "{dom}");
    let cell = |caller: &str, items: &str| {
        format!("<td data-caller=\"{caller}\" data-route=\"stripe\"><ul>{items}</ul></td>")
    };
    for (caller, items) in [
        (
            READER,
            "<li class=\"used\">GET used</li><li class=\"unused\">POST unused</li>",
        ),
        (
            WRITER,
            "<li class=\"used\">GET used</li><li class=\"unused\">POST unused</li>",
        ),
        (NOBODY, "<li class=\"unused\">GET unused</li>"),
    ] {
        let want = cell(caller, items);
        assert!(dom.contains(&want), "no cell {want} in\n{dom}");
    }
    for code in [
        "unused_rule",
        "unused_caller",
        "unused_method",
        "broad_path",
        "denied_caller",
        "decoy_hit",
        "expiring_grant",
        "shadow_would_deny",
    ] {
        assert!(
            dom.contains(&format!(
                "<tr class=\"finding\" data-code=\"{code}\"><td class=\"code\">{code}</td>"
            )),
            "no {code} finding in the page"
        );
    }
    assert!(
        dom.contains("<code>GET /v1/charges</code>"),
        "decoy evidence: {dom}"
    );
    // The attacks stayed text: no element was made of them and no script ran.
    assert!(!dom.contains("<img") && !dom.contains("<script"), "{dom}");
    assert!(!dom.contains("<body data-pwned"), "script ran: {dom}");
    assert!(dom.contains("&lt;img src=x onerror="), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.body.setAttribute"),
        "{dom}"
    );

    // A screenshot for people (kept under the target directory, never committed).
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("credproxy-report.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1400,2000",
        "--hide-scrollbars",
        &url,
    ]);
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("report screenshot: {}", shot.display());
}
