//! Config loading and validation: every problem with key path and line.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

const MINIMAL: &str = r#"
identity:
  audiences: ["https://credproxy.example"]
routes:
  stripe:
    upstream: "https://api.stripe.com/base/"
    credential:
      secret: "env:STRIPE_KEY"
      inject:
        header: { name: "Authorization", format: "Bearer {secret}" }
    allow:
      - callers: ["daily@acme.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/v1/charges", "/v1/charges/*"]
"#;

#[test]
fn applies_defaults() {
    let (c, warnings) = parse(MINIMAL, &no_env).expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.listen, "0.0.0.0:8080".parse().expect("addr"));
    assert_eq!(c.identity.jwks_url.as_str(), GOOGLE_JWKS_URL);
    assert_eq!(c.identity.issuers.len(), 2);
    assert_eq!(c.identity.leeway_seconds, 30);
    assert_eq!(c.secrets.cache_ttl, Duration::from_secs(60));
    let r = &c.routes[0];
    assert_eq!(r.upstream.origin, "https://api.stripe.com");
    assert_eq!(r.upstream.base_path, "/base");
    assert_eq!(r.timeout, Duration::from_secs(30));
    assert_eq!(r.idle_timeout, Duration::from_secs(60));
    assert_eq!(r.max_body_bytes, 10 * 1024 * 1024);
}

#[test]
fn env_overrides_port_and_jwks() {
    let env = |k: &str| match k {
        "PORT" => Some("9999".to_string()),
        "CREDPROXY_JWKS_URL" => Some("http://127.0.0.1:1/certs".to_string()),
        "CREDPROXY_SECRET_MANAGER_ENDPOINT" => Some("http://127.0.0.1:2".to_string()),
        _ => None,
    };
    let (c, _) = parse(MINIMAL, &env).expect("valid");
    assert_eq!(c.listen.port(), 9999);
    assert_eq!(c.identity.jwks_url.as_str(), "http://127.0.0.1:1/certs");
    assert_eq!(
        c.secrets.secret_manager_endpoint.as_deref(),
        Some("http://127.0.0.1:2")
    );
}

#[test]
fn reports_every_unknown_key_with_path_and_line() {
    let text = MINIMAL.replace("routes:\n", "routs: 1\nroutes:\n").replace(
        "        methods:",
        "        method: [GET]\n        methods:",
    );
    let err = parse(&text, &no_env).expect_err("invalid");
    let paths: Vec<_> = err.0.iter().map(|p| (p.path.as_str(), p.line)).collect();
    assert!(paths.contains(&("routs", Some(4))), "{paths:?}");
    assert!(
        paths.contains(&("routes.stripe.allow[0].method", Some(14))),
        "{paths:?}"
    );
}

#[test]
fn reports_every_semantic_problem_at_once() {
    let text = MINIMAL
        .replace("https://api.stripe.com/base/", "http://api.stripe.com")
        .replace("env:STRIPE_KEY", "vault:stripe")
        .replace("\"/v1/charges\", ", "\"v1/charges\", \"/v1/a*b\", ");
    let err = parse(&text, &no_env).expect_err("invalid");
    let paths: Vec<_> = err.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes.stripe.upstream",
            "routes.stripe.credential.secret",
            "routes.stripe.allow[0].paths[0]",
            "routes.stripe.allow[0].paths[1]",
        ]
    );
    assert_eq!(err.0[0].line, Some(6));
    assert!(err.0[0].message.contains("plaintext"), "{}", err.0[0]);
}

#[test]
fn empty_sections_mean_defaults() {
    let text = format!("server:\nsecrets:\nmetrics:\ndecoys:\n{MINIMAL}");
    let (c, _) = parse(&text, &no_env).expect("valid");
    assert_eq!(c.server.max_in_flight, 1000);
}

#[test]
fn type_errors_name_the_key() {
    let text = MINIMAL.replace("routes:\n", "server: { max_in_flight: lots }\nroutes:\n");
    let err = parse(&text, &no_env).expect_err("invalid");
    assert_eq!(err.0[0].path, "server.max_in_flight");
    assert_eq!(err.0[0].line, Some(4));
}

#[test]
fn malformed_yaml_gives_a_line() {
    let err = parse("identity: [\n  audiences: x\n", &no_env).expect_err("invalid");
    assert!(err.0[0].line.is_some());
    assert!(err.0[0].message.contains("not valid YAML"));
}

#[test]
fn missing_identity_is_an_error() {
    let err = parse("routes: {}\n", &no_env).expect_err("invalid");
    assert!(err.0[0].message.contains("identity"), "{}", err.0[0]);
}

#[test]
fn requires_exactly_one_injection() {
    let text = MINIMAL.replace(
        "header: { name: \"Authorization\", format: \"Bearer {secret}\" }",
        "header: { name: \"Authorization\" }\n        query: { name: key }",
    );
    let err = parse(&text, &no_env).expect_err("invalid");
    assert_eq!(err.0[0].path, "routes.stripe.credential.inject");
}

/// MINIMAL with its `header:` injection (line 10) replaced by `block`.
fn with_inject(block: &str) -> String {
    MINIMAL.replace(
        "        header: { name: \"Authorization\", format: \"Bearer {secret}\" }\n",
        block,
    )
}

fn paths_and_lines(err: &Problems) -> Vec<(&str, Option<usize>)> {
    err.0.iter().map(|p| (p.path.as_str(), p.line)).collect()
}

#[test]
fn reports_every_hmac_problem_with_key_and_line() {
    let text = with_inject(concat!(
        "        hmac:\n",
        "          header: \"X-Signature\"\n",
        "          algoritm: sha256\n",
        "          encoding: base32\n",
        "          signed: [body, headers]\n",
    ));
    let err = parse(&text, &no_env).expect_err("invalid");
    let hmac = "routes.stripe.credential.inject.hmac";
    assert_eq!(
        paths_and_lines(&err),
        [
            (format!("{hmac}.algoritm").as_str(), Some(12)),
            (format!("{hmac}.algorithm").as_str(), Some(10)),
            (format!("{hmac}.encoding").as_str(), Some(13)),
            (format!("{hmac}.signed[1]").as_str(), Some(14)),
        ]
    );
    assert!(err.0[0].message.contains("unknown key"), "{}", err.0[0]);
    assert!(
        err.0[1].message.contains("`algorithm` is required"),
        "{}",
        err.0[1]
    );
    assert!(
        err.0[3].message.contains("unknown part `headers`"),
        "{}",
        err.0[3]
    );
}

#[test]
fn a_mistyped_hmac_value_is_named_by_key_and_line() {
    let text = with_inject(concat!(
        "        hmac:\n",
        "          header: \"X-Signature\"\n",
        "          algorithm: sha256\n",
        "          encoding: hex\n",
        "          signed: 3\n",
    ));
    let err = parse(&text, &no_env).expect_err("invalid");
    assert_eq!(
        paths_and_lines(&err),
        [("routes.stripe.credential.inject.hmac.signed", Some(14))]
    );
    assert!(
        err.0[0].message.contains("expected a sequence"),
        "{}",
        err.0[0]
    );
    let err = parse(&with_inject("        hmac: sha256\n"), &no_env).expect_err("invalid");
    assert_eq!(err.0[0].path, "routes.stripe.credential.inject.hmac");
    assert!(
        err.0[0].message.contains("expected a mapping"),
        "{}",
        err.0[0]
    );
}

#[test]
fn signing_and_oauth2_problems_are_named_by_key() {
    let inject = "routes.stripe.credential.inject";
    for (block, paths) in [
        (
            "        aws_sigv4: { service: S3 }\n",
            vec![
                format!("{inject}.aws_sigv4.service"),
                format!("{inject}.aws_sigv4.region"),
            ],
        ),
        (
            "        oauth2_client_credentials: { token_url: \"https://a.example/t\", scopes: [a, \"b c\"], audiences: x }\n",
            vec![
                format!("{inject}.oauth2_client_credentials.audiences"),
                format!("{inject}.oauth2_client_credentials.scopes[1]"),
            ],
        ),
    ] {
        let err = parse(&with_inject(block), &no_env).expect_err(block);
        let got: Vec<_> = err.0.iter().map(|p| p.path.clone()).collect();
        assert_eq!(got, paths, "{block}");
        assert!(err.0.iter().all(|p| p.line == Some(10)), "{err}");
    }
}

#[test]
fn rejects_setting_authorization_through_request_headers() {
    let text = MINIMAL.replace(
        "    allow:",
        "    request_headers: { set: { authorization: x } }\n    allow:",
    );
    let err = parse(&text, &no_env).expect_err("invalid");
    assert_eq!(
        err.0[0].path,
        "routes.stripe.request_headers.set.authorization"
    );
}

#[test]
fn plaintext_allowed_only_for_loopback() {
    for (url, ok) in [
        ("http://127.0.0.1:9000", true),
        ("http://localhost:9000", true),
        ("http://[::1]:9000", true),
        ("http://10.0.0.1", false),
        ("http://example.com", false),
        ("ftp://example.com", false),
        ("https://user:pw@example.com", false),
        ("https://example.com/?q=1", false),
    ] {
        let text = MINIMAL.replace("https://api.stripe.com/base/", url);
        assert_eq!(parse(&text, &no_env).is_ok(), ok, "{url}");
    }
}

#[test]
fn upstream_tls_needs_an_https_upstream() {
    let tls = "    upstream_tls:\n      client_certificate: \"env:C\"\n      client_key: \"env:K\"\n    allow:";
    let text = MINIMAL.replace("    allow:", tls);
    assert!(parse(&text, &no_env).is_ok());
    let text = text.replace("https://api.stripe.com/base/", "http://127.0.0.1:9000");
    let err = parse(&text, &no_env).expect_err("invalid");
    assert_eq!(err.0[0].path, "routes.stripe.upstream_tls");
    assert!(
        err.0[0].message.contains("https://"),
        "{}",
        err.0[0].message
    );
}

#[test]
fn warns_about_grants_expiring_soon_and_rejects_zoneless_times() {
    let soon = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let text = MINIMAL.replace(
        "        paths:",
        &format!("        expires: \"{soon}\"\n        paths:"),
    );
    let (_, warnings) = parse(&text, &no_env).expect("valid");
    assert_eq!(warnings[0].path, "routes.stripe.allow[0].expires");
    let text = MINIMAL.replace(
        "        paths:",
        "        expires: \"2026-12-31T00:00:00\"\n        paths:",
    );
    let err = parse(&text, &no_env).expect_err("invalid");
    assert_eq!(err.0[0].path, "routes.stripe.allow[0].expires");
}

#[test]
fn rejects_nonsensical_limits_with_their_key() {
    for (limit, path) in [
        (
            "rate_limit: { per_second: 1, burst: 0 }",
            "routes.stripe.rate_limit",
        ),
        (
            "route_rate_limit: { per_second: -1, burst: 5 }",
            "routes.stripe.route_rate_limit",
        ),
        (
            "source_ranges: [\"10.0.0.0/33\"]",
            "routes.stripe.source_ranges[0]",
        ),
        ("max_body_bytes: -5", "routes.stripe.max_body_bytes"),
        ("timeout_seconds: 0", "routes.stripe.timeout_seconds"),
    ] {
        let text = MINIMAL.replace("    allow:", &format!("    {limit}\n    allow:"));
        let err = parse(&text, &no_env).expect_err(limit);
        assert_eq!(err.0[0].path, path, "{limit}");
    }
}

#[test]
fn rejects_bad_route_names() {
    for name in ["_credproxy", ".hidden", "a/b"] {
        let text = MINIMAL.replace("  stripe:", &format!("  \"{name}\":"));
        assert!(parse(&text, &no_env).is_err(), "{name}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// YAML-ish documents built from the schema's own keys, YAML syntax and junk, so the
    /// generator reaches deep into the parser and the validator.
    fn yamlish() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("identity"),
            Just("audiences"),
            Just("routes"),
            Just("upstream"),
            Just("credential"),
            Just("secret"),
            Just("inject"),
            Just("header"),
            Just("name"),
            Just("format"),
            Just("allow"),
            Just("callers"),
            Just("methods"),
            Just("paths"),
            Just("expires"),
            Just("server"),
            Just("max_in_flight"),
            Just("source_ranges"),
            Just("events"),
            Just("decoys"),
            Just("metrics"),
            Just("hmac"),
            Just("aws_sigv4"),
            Just("query"),
            Just("basic"),
            Just("field"),
            Just("timeout_seconds"),
            Just("x"),
        ];
        let value = prop_oneof![
            Just("\"https://api.example.com\"".to_string()),
            Just("\"env:K\"".to_string()),
            Just("\"projects/p/secrets/s/versions/latest\"".to_string()),
            Just("[GET, POST]".to_string()),
            Just("[\"/v1/**\", \"/a/*\"]".to_string()),
            Just("{}".to_string()),
            Just("[]".to_string()),
            Just("null".to_string()),
            Just("-1".to_string()),
            Just("99999999999999999999".to_string()),
            Just("&a x".to_string()),
            Just("*a".to_string()),
            Just("!!binary x".to_string()),
            "[ -~]{0,12}",
        ];
        let line = (0usize..4, key, prop::option::of(value)).prop_map(|(indent, k, v)| match v {
            Some(v) => format!("{}{k}: {v}", "  ".repeat(indent)),
            None => format!("{}{k}:", "  ".repeat(indent)),
        });
        prop_oneof![
            prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n")),
            "\\PC{0,200}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn parsing_never_panics_and_every_error_has_a_message(text in yamlish()) {
            if let Err(problems) = parse(&text, &|_| None) {
                prop_assert!(!problems.0.is_empty());
                for p in &problems.0 {
                    prop_assert!(!p.message.is_empty());
                }
            }
        }
    }
}

#[test]
fn a_signing_route_may_not_hold_more_than_the_body_budget() {
    let signing = MINIMAL.replace(
        "        header: { name: \"Authorization\", format: \"Bearer {secret}\" }",
        "        hmac: { preset: github_sha256 }",
    );
    let over = signing.replace("    allow:", "    max_body_bytes: 134217729\n    allow:");
    let err = parse(&over, &no_env).expect_err("over the budget");
    assert_eq!(err.0[0].path, "routes.stripe.max_body_bytes");
    assert!(err.0[0].message.contains("128 MiB"), "{}", err.0[0]);
    let at = signing.replace("    allow:", "    max_body_bytes: 134217728\n    allow:");
    assert!(parse(&at, &no_env).is_ok());
    // A streaming route may take larger bodies: they are never held.
    let streaming = MINIMAL.replace("    allow:", "    max_body_bytes: 1073741824\n    allow:");
    assert!(parse(&streaming, &no_env).is_ok());
}

#[test]
fn server_limits_for_bodies_and_callers_have_defaults_and_are_checked() {
    let (c, _) = parse(MINIMAL, &no_env).expect("valid");
    assert_eq!(c.server.body_idle_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_in_flight_per_caller, 100);
    let text = format!(
        "server:\n  body_idle_timeout_seconds: 0\n  max_in_flight_per_caller: 0\n{MINIMAL}"
    );
    let err = parse(&text, &no_env).expect_err("invalid");
    let paths: Vec<_> = err.0.iter().map(|p| p.path.as_str()).collect();
    assert!(
        paths.contains(&"server.body_idle_timeout_seconds"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"server.max_in_flight_per_caller"),
        "{paths:?}"
    );
}

#[test]
fn shadow_allow_is_validated_like_allow_with_key_paths_and_lines() {
    let text = format!(
        "{MINIMAL}    shadow_allow:\n      - callers: [\"nobody\"]\n        methods: [\"FETCH\"]\n        paths: [\"/v1/a*\"]\n        colour: red\n      - callers: [\"daily@acme.iam.gserviceaccount.com\"]\n        methods: [GET]\n        paths: [\"/v1/charges\"]\n        expires: tomorrow\n"
    );
    let err = parse(&text, &no_env).expect_err("invalid");
    let found: Vec<_> = err.0.iter().map(|p| (p.path.as_str(), p.line)).collect();
    for want in [
        ("routes.stripe.shadow_allow[0].colour", Some(19)),
        ("routes.stripe.shadow_allow[0].callers[0]", Some(16)),
        ("routes.stripe.shadow_allow[0].methods[0]", Some(17)),
        ("routes.stripe.shadow_allow[0].paths[0]", Some(18)),
        ("routes.stripe.shadow_allow[1].expires", Some(23)),
    ] {
        assert!(found.contains(&want), "{want:?} not in {found:?}");
    }

    let text = format!(
        "{MINIMAL}    shadow_allow:\n      - callers: [\"daily@acme.iam.gserviceaccount.com\"]\n        methods: [GET]\n        paths: [\"/v1/charges\"]\n"
    );
    let (c, _) = parse(&text, &no_env).expect("valid");
    let shadow = c.routes[0].shadow_allow.as_deref().expect("shadow rules");
    assert_eq!(&*shadow[0].id.key, "routes.stripe.shadow_allow[0]");
    assert_eq!(&*c.routes[0].allow[0].id.key, "routes.stripe.allow[0]");
    assert!(
        parse(MINIMAL, &no_env).expect("valid").0.routes[0]
            .shadow_allow
            .is_none()
    );
}
