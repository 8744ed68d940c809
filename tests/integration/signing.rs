//! Request-signing credentials through the proxy: the upstream can verify what it received.

use base64::Engine as _;

use crate::harness::*;

const HMAC_KEY: &str = "whsec_SECRET_hmac_key_1234";
const AWS: &str =
    r#"{"access_key_id":"AKIDEXAMPLE","secret_access_key":"SECRET/aws/wJalrXUtnFEMI/K7MDENG"}"#;

fn routes() -> String {
    format!(
        r#"  hooks:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:HMAC_SECRET", inject: {{ hmac: {{ preset: github_sha256 }} }} }}
    max_body_bytes: 4096
    allow:
      - callers: ["{WRITER}"]
        methods: ["POST"]
        paths: ["/**"]
  signed:
    upstream: "{{UPSTREAM}}"
    credential:
      secret: "env:HMAC_SECRET"
      inject:
        hmac: {{ header: "X-Signature", algorithm: sha256, encoding: base64, timestamp_header: "X-Timestamp", signed: [method, path, query, timestamp, body] }}
    allow:
      - callers: ["{WRITER}"]
        methods: ["POST"]
        paths: ["/**"]
  aws:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:AWS_SECRET", inject: {{ aws_sigv4: {{ service: "execute-api", region: "eu-west-1" }} }} }}
    allow:
      - callers: ["{WRITER}"]
        methods: ["GET", "POST"]
        paths: ["/**"]
"#
    )
}

async fn world() -> World {
    let mut env = default_env();
    env.push(("HMAC_SECRET".to_string(), HMAC_KEY.to_string()));
    env.push(("AWS_SECRET".to_string(), AWS.to_string()));
    let mut w = World::custom(&routes(), |config| config, &env).await;
    w.app
        .forbidden
        .push("SECRET/aws/wJalrXUtnFEMI/K7MDENG".to_string());
    w
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&key, data).as_ref().to_vec()
}

#[tokio::test]
async fn a_github_style_webhook_signature_covers_the_body() {
    let w = world().await;
    let body = r#"{"action":"opened","number":1}"#;
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/hooks/deliver")
        .header("X-Hub-Signature-256", "sha256=caller-forged")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen = w.upstream.last();
    let expected: String = hmac_sha256(HMAC_KEY.as_bytes(), body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        seen.headers["x-hub-signature-256"],
        format!("sha256={expected}")
    );
    assert_eq!(
        seen.headers.get_all("x-hub-signature-256").iter().count(),
        1
    );
    assert_eq!(seen.body.as_ref(), body.as_bytes());
}

#[tokio::test]
async fn a_generic_hmac_signs_method_path_query_timestamp_and_body() {
    let w = world().await;
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/signed/v1/orders?b=2&a=1")
        .body("payload")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen = w.upstream.last();
    let ts = seen.headers["x-timestamp"]
        .to_str()
        .expect("ascii")
        .to_string();
    let canonical = format!("POST\n/v1/orders\nb=2&a=1\n{ts}\npayload");
    let expected = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(HMAC_KEY.as_bytes(), canonical.as_bytes()));
    assert_eq!(seen.headers["x-signature"], expected.as_str());
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts.parse::<i64>().expect("number")).abs() < 30);
}

#[tokio::test]
async fn a_body_signing_route_refuses_bodies_over_its_limit() {
    let w = world().await;
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/hooks/deliver")
        .body(vec![b'a'; 5000])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    assert_eq!(w.upstream.started(), 0);
}

#[tokio::test]
async fn aws_sigv4_signs_what_the_upstream_receives() {
    let w = world().await;
    let r = w
        .app
        .request_as(reqwest::Method::POST, WRITER, "/aws/prod/items?limit=5")
        .header("content-type", "application/json")
        .header("x-amz-date", "19700101T000000Z")
        .body(r#"{"id":1}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen = w.upstream.last();
    let auth = seen.headers["authorization"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && auth.contains("/eu-west-1/execute-api/aws4_request"),
        "{auth}"
    );
    let amz_date = seen.headers["x-amz-date"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_ne!(
        amz_date, "19700101T000000Z",
        "the caller's x-amz-date was replaced"
    );
    // Verify as the upstream would: re-sign what arrived, at the signed time.
    let time = chrono::NaiveDateTime::parse_from_str(&amz_date, "%Y%m%dT%H%M%SZ")
        .expect("date")
        .and_utc();
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(time.timestamp() as u64);
    let url = reqwest::Url::parse(&format!(
        "http://{}{}?{}",
        w.upstream.addr,
        seen.path,
        seen.query.clone().unwrap_or_default()
    ))
    .expect("url");
    let mut headers = seen.headers.clone();
    for h in [
        "authorization",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
    ] {
        headers.remove(h);
    }
    let spec =
        credproxy::inject::aws_sigv4::AwsSigV4Spec::new("execute-api", "eu-west-1").expect("spec");
    let creds =
        credproxy::inject::aws_sigv4::AwsCredentials::from_json(AWS.as_bytes()).expect("creds");
    let request = credproxy::inject::aws_sigv4::SigV4Request {
        method: "POST",
        url: &url,
        headers: &headers,
        payload: credproxy::inject::aws_sigv4::SigV4Payload::Bytes(&seen.body),
    };
    let expected =
        credproxy::inject::aws_sigv4::sigv4_sign(&spec, &creds, &request, time).expect("sign");
    let expected_auth = expected
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.to_str().expect("ascii").to_string())
        .expect("authorization");
    assert_eq!(auth, expected_auth);
}
