//! HMAC signing against vendor vectors and RFC 4231; config errors.

use super::*;
use serde_json::json;
use std::time::{Duration, UNIX_EPOCH};

fn header<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.to_str().unwrap())
}

// ---------------------------------------------------------------- HMAC: vendor vectors

// Slack's documented example, "Verifying requests from Slack":
// https://api.slack.com/authentication/verifying-requests-from-slack
// (now https://docs.slack.dev/authentication/verifying-requests-from-slack).
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TIMESTAMP: u64 = 1531420618;
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

fn slack_parts() -> RequestParts<'static> {
    RequestParts {
        method: "POST",
        path: "/api/commands",
        query: None,
        timestamp: SLACK_TIMESTAMP,
        body: SLACK_BODY.as_bytes(),
    }
}

#[test]
fn slack_v0_matches_slacks_published_example() {
    let spec = HmacSpec::slack_v0();
    let parts = slack_parts();
    let canonical = spec.canonical(&parts);
    assert_eq!(
        canonical,
        format!("v0:{SLACK_TIMESTAMP}:{SLACK_BODY}").into_bytes()
    );
    let out = spec.sign(SLACK_SECRET.as_bytes(), &parts).unwrap();
    assert_eq!(out.signature.0, "x-slack-signature");
    assert_eq!(out.signature.1, SLACK_SIGNATURE);
    assert!(out.signature.1.is_sensitive());
    let (name, value) = out.timestamp.clone().unwrap();
    assert_eq!(name, "x-slack-request-timestamp");
    assert_eq!(value, "1531420618");
    assert_eq!(out.into_vec().len(), 2);
}

#[test]
fn slack_v0_preset_from_config_is_the_same_scheme() {
    let spec = HmacSpec::from_raw(&json!({ "preset": "slack_v0" })).unwrap();
    assert_eq!(spec, HmacSpec::slack_v0());
    assert!(spec.signs_body());
    // Spelled out with the generic fields, the scheme is the same too.
    let spelled = HmacSpec::from_raw(&json!({
        "header": "X-Slack-Signature",
        "algorithm": "sha256",
        "encoding": "hex",
        "timestamp_header": "X-Slack-Request-Timestamp",
        "signed": ["timestamp", "body"],
        "prefix": "v0:",
        "separator": ":",
        "format": "v0={signature}",
    }))
    .unwrap();
    assert_eq!(spelled, HmacSpec::slack_v0());
}

// GitHub's documented test values, "Validating webhook deliveries" > "Testing the webhook
// payload validation":
// https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
#[test]
fn github_sha256_matches_githubs_published_example() {
    let spec = HmacSpec::from_raw(&json!({ "preset": "github_sha256" })).unwrap();
    assert_eq!(spec, HmacSpec::github_sha256());
    let parts = RequestParts {
        method: "POST",
        path: "/hook",
        query: Some("a=1"),
        timestamp: 1,
        body: b"Hello, World!",
    };
    let out = spec
        .sign(b"It's a Secret to Everybody", &parts)
        .unwrap()
        .into_vec();
    assert_eq!(
        out,
        vec![(
            HeaderName::from_static("x-hub-signature-256"),
            HeaderValue::from_static(
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
            )
        )]
    );
}

// ------------------------------------------------------ HMAC: the generic scheme

fn generic(signed: Value, algorithm: &str, encoding: &str) -> HmacSpec {
    HmacSpec::from_raw(&json!({
        "header": "X-Signature",
        "algorithm": algorithm,
        "encoding": encoding,
        "signed": signed,
    }))
    .unwrap()
}

// RFC 4231 test case 2 (key "Jefe"), https://www.rfc-editor.org/rfc/rfc4231#section-4.3:
// pins the algorithm and encoding switches to the primitive's published outputs.
#[test]
fn algorithms_and_encodings_match_rfc_4231() {
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: None,
        timestamp: 0,
        body: b"what do ya want for nothing?",
    };
    let cases = [
        (
            "sha256",
            "hex",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            "sha512",
            "hex",
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        ),
        // The same SHA-256 digest in base64.
        (
            "sha256",
            "base64",
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=",
        ),
    ];
    for (algorithm, encoding, expected) in cases {
        let spec = generic(json!(["body"]), algorithm, encoding);
        let out = spec.sign(b"Jefe", &parts).unwrap();
        assert_eq!(out.signature.0, "x-signature");
        assert_eq!(out.signature.1, expected, "{algorithm}/{encoding}");
        assert!(out.timestamp.is_none());
    }
}

// Expected values below were computed independently with
// `printf '...' | openssl dgst -sha256 -hmac test-key` (and -sha512 -binary | base64).
#[test]
fn canonical_string_is_the_listed_parts_joined_by_newlines_in_order() {
    let spec = HmacSpec::from_raw(&json!({
        "header": "X-Signature",
        "algorithm": "sha256",
        "encoding": "hex",
        "timestamp_header": "X-Timestamp",
        "signed": ["method", "path", "query", "timestamp", "body"],
    }))
    .unwrap();
    let parts = RequestParts {
        method: "POST",
        path: "/v1/charges",
        query: Some("amount=5&currency=eur"),
        timestamp: 1_700_000_000,
        body: br#"{"x":1}"#,
    };
    assert_eq!(
        spec.canonical(&parts),
        b"POST\n/v1/charges\namount=5&currency=eur\n1700000000\n{\"x\":1}".to_vec()
    );
    let out = spec.sign(b"test-key", &parts).unwrap().into_vec();
    assert_eq!(
        header(&out, "x-signature"),
        Some("7e7c9c190a80f53d7791710cec9a4f8d0eace44809e481687af3d71bb113f6df")
    );
    assert_eq!(header(&out, "x-timestamp"), Some("1700000000"));

    // Listed order is canonical order; an absent query is an empty part.
    let spec = HmacSpec::from_raw(&json!({
        "header": "X-Signature",
        "algorithm": "sha512",
        "encoding": "base64",
        "timestamp_header": "X-Timestamp",
        "signed": ["method", "path", "query", "timestamp"],
    }))
    .unwrap();
    let parts = RequestParts {
        method: "GET",
        query: None,
        body: b"ignored",
        ..parts
    };
    assert_eq!(
        spec.canonical(&parts),
        b"GET\n/v1/charges\n\n1700000000".to_vec()
    );
    assert!(!spec.signs_body());
    let out = spec.sign(b"test-key", &parts).unwrap();
    assert_eq!(
        out.signature.1,
        "4vBEkec9s2AA9h+VP4rRLvwuTb5BfaXf996JD4geTdKFUJu/Q+aCDr5i/U6AllPdE2sekhu6vDbyFvDJCLwjgA=="
    );

    let reordered = generic(json!(["body", "method"]), "sha256", "hex");
    assert_eq!(reordered.canonical(&parts), b"ignored\nGET".to_vec());
}

#[test]
fn format_separator_and_timestamp_placeholder() {
    // A Stripe-style header: `t={timestamp},v1={signature}` over `{timestamp}.{body}`.
    let spec = HmacSpec::from_raw(&json!({
        "header": "X-Webhook-Signature",
        "algorithm": "sha256",
        "encoding": "hex",
        "signed": ["timestamp", "body"],
        "separator": ".",
        "format": "t={timestamp},v1={signature}",
    }))
    .unwrap();
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: None,
        timestamp: 1_700_000_000,
        body: br#"{"x":1}"#,
    };
    assert_eq!(spec.canonical(&parts), br#"1700000000.{"x":1}"#.to_vec());
    let out = spec.sign(b"test-key", &parts).unwrap();
    assert_eq!(
        out.signature.1,
        "t=1700000000,v1=4f9845a3f85267f8a3dd80953ed2983d355374420e415529a94ad4331b220607"
    );
    assert!(out.timestamp.is_none());
}

#[test]
fn the_key_changes_the_signature_and_is_nowhere_in_the_output() {
    let spec = HmacSpec::github_sha256();
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: None,
        timestamp: 0,
        body: b"payload",
    };
    let a = spec.sign(b"key-one-SENTINEL", &parts).unwrap();
    let b = spec.sign(b"key-two-SENTINEL", &parts).unwrap();
    assert_ne!(a.signature.1, b.signature.1);
    let printed = format!("{spec:?} {a:?} {parts:?}");
    assert!(!printed.contains("SENTINEL"));
    // RequestParts' Debug shows the body's length, not the body.
    assert!(!format!("{parts:?}").contains("payload"));
    assert!(format!("{parts:?}").contains("body_len: 7"));
}

#[test]
fn hmac_config_errors_name_the_problem() {
    let base = json!({
        "header": "X-Signature", "algorithm": "sha256", "encoding": "hex", "signed": ["body"],
    });
    let with = |patch: Value| {
        let mut v = base.clone();
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        HmacSpec::from_raw(&v).unwrap_err()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            HmacSpec::from_raw(&json!("sha256")).unwrap_err(),
            "must be a mapping",
        ),
        (
            with(json!({"algoritm": "sha256"})),
            "unknown field `algoritm`",
        ),
        (with(json!({"header": null})), "`header` is required"),
        (
            with(json!({"header": "bad header"})),
            "not a valid HTTP header name",
        ),
        (
            with(json!({"header": "Content-Length"})),
            "cannot carry a signature",
        ),
        (with(json!({"header": 5})), "`header` must be a string"),
        (with(json!({"algorithm": null})), "`algorithm` is required"),
        (with(json!({"algorithm": "md5"})), "use sha256 or sha512"),
        (with(json!({"encoding": "base32"})), "use hex or base64"),
        (with(json!({"signed": null})), "`signed` is required"),
        (with(json!({"signed": []})), "at least one part"),
        (with(json!({"signed": "body"})), "must be a list"),
        (
            with(json!({"signed": ["body", "headers"]})),
            "unknown part `headers`",
        ),
        (
            with(json!({"signed": ["body", 1]})),
            "entries must be strings",
        ),
        (with(json!({"signed": ["body", "body"]})), "listed twice"),
        (
            with(json!({"signed": ["timestamp", "body"]})),
            "the upstream would never see it",
        ),
        (
            with(json!({"timestamp_header": "X-Timestamp"})),
            "`timestamp` is not in `signed`",
        ),
        (
            with(json!({"timestamp_header": "x-signature", "signed": ["timestamp"]})),
            "must differ",
        ),
        (
            with(json!({"format": "v1=sig"})),
            "`{signature}` exactly once",
        ),
        (
            with(json!({"format": "{signature},{signature}"})),
            "`{signature}` exactly once",
        ),
        (
            with(json!({"format": "{signature} {nonce}"})),
            "only use the placeholders",
        ),
        (
            with(json!({"format": "t={timestamp},{signature}"})),
            "`format` uses `{timestamp}`",
        ),
        (
            with(json!({"format": "v1={signature}\n"})),
            "printable ASCII",
        ),
        (
            with(json!({"separator": 1})),
            "`separator` must be a string",
        ),
        (
            HmacSpec::from_raw(&json!({"preset": "slack_v0", "header": "X-Sig"})).unwrap_err(),
            "`preset` stands alone: remove `header`",
        ),
        (
            HmacSpec::from_raw(&json!({"preset": "stripe"})).unwrap_err(),
            "unknown preset `stripe`",
        ),
        (
            HmacSpec::from_raw(&json!({"preset": true})).unwrap_err(),
            "`preset` must be a string",
        ),
    ];
    for (message, expected) in cases {
        assert!(
            message.contains(expected),
            "{message:?} should contain {expected:?}"
        );
    }
}

fn problem_keys(raw: Value) -> Vec<String> {
    let raw: RawHmac = serde_json::from_value(raw).expect("typed");
    let problems = HmacSpec::validate(raw).expect_err("invalid");
    problems.into_iter().map(|p| p.key).collect()
}

#[test]
fn validation_reports_every_problem_at_its_key() {
    assert_eq!(
        problem_keys(json!({
            "algorithm": "md5", "encoding": "base32", "timestamp_header": "Content-Length",
            "signed": ["body", "headers", "body"], "format": "{nonce}",
        })),
        [
            "header",
            "algorithm",
            "encoding",
            "timestamp_header",
            "signed[1]",
            "signed[2]",
            "format",
            "format",
        ]
    );
    assert_eq!(
        problem_keys(json!({})),
        ["header", "algorithm", "encoding", "signed"]
    );
    // Cross-field rules land on the key to change: the signed timestamp nobody would see,
    // the timestamp header whose value the signature would not cover.
    let base = json!({"header": "X-Signature", "algorithm": "sha256", "encoding": "hex"});
    let with = |signed: Value, extra: Value| {
        let mut raw = base.clone();
        raw["signed"] = signed;
        for (k, v) in extra.as_object().unwrap() {
            raw[k] = v.clone();
        }
        problem_keys(raw)
    };
    assert_eq!(with(json!(["body", "timestamp"]), json!({})), ["signed[1]"]);
    assert_eq!(
        with(json!(["body"]), json!({"timestamp_header": "X-Timestamp"})),
        ["timestamp_header"]
    );
    // An unknown part says nothing about the timestamp: no echo on `timestamp_header`.
    assert_eq!(
        with(
            json!(["timstamp"]),
            json!({"timestamp_header": "X-Timestamp"})
        ),
        ["signed[0]"]
    );
    assert_eq!(
        problem_keys(json!({"preset": "stripe", "header": "X-Sig", "signed": ["body"]})),
        ["header", "signed", "preset"]
    );
    // The convenience wrapper reports them all too, in one message.
    let message = HmacSpec::from_raw(&json!({"algoritm": "sha256", "encoding": "base32"}))
        .expect_err("invalid");
    for expected in [
        "unknown field `algoritm` in `hmac`",
        "`header` is required",
        "`algorithm` is required",
        "use hex or base64",
        "`signed` is required",
    ] {
        assert!(
            message.contains(expected),
            "{message:?} should contain {expected:?}"
        );
    }
}

#[test]
fn the_key_list_in_messages_is_the_typed_struct() {
    let every_key: serde_json::Map<String, Value> = HMAC_KEYS
        .iter()
        .map(|k| (k.to_string(), Value::Null))
        .collect();
    let read = crate::raw::deserialize::<RawHmac>(Value::Object(every_key));
    assert!(read.unknown.is_empty(), "{:?}", read.unknown);
    assert!(read.value.is_ok());
}

#[test]
fn unix_seconds_truncates_and_clamps() {
    assert_eq!(
        unix_seconds(UNIX_EPOCH + Duration::from_millis(1_531_420_618_999)),
        1_531_420_618
    );
    assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
}
