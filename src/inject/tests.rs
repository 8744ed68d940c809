//! The prepare step shared by every kind: UTF-8, JSON field, the injected forms.

use super::*;
use crate::secrets::reference::SecretRef;

fn spec(secret: &str, field: Option<&str>, inject: Injection) -> CredentialSpec {
    CredentialSpec {
        secret: SecretRef::parse(secret).expect("ref"),
        field: field.map(str::to_string),
        inject,
    }
}

fn bearer() -> Injection {
    Injection::Header {
        name: HeaderName::from_static("authorization"),
        format: "Bearer {secret}".to_string(),
    }
}

#[test]
fn prepares_header_basic_and_query() {
    let r = prepare(&spec("env:K", None, bearer()), b"s3cr3t").expect("ok");
    let Prepared::Header { value, .. } = &r.injection else {
        panic!("header")
    };
    assert_eq!(value.as_bytes(), b"Bearer s3cr3t");
    assert!(value.is_sensitive());

    let basic = Injection::Basic {
        username: "api".to_string(),
    };
    let r = prepare(&spec("env:K", None, basic), b"pw").expect("ok");
    let Prepared::Header { value, .. } = &r.injection else {
        panic!("header")
    };
    assert_eq!(value.as_bytes(), b"Basic YXBpOnB3");

    let query = Injection::Query {
        name: "api key".to_string(),
    };
    let r = prepare(&spec("env:K", None, query), b"a&b=c").expect("ok");
    let Prepared::Query { pair, .. } = &r.injection else {
        panic!("query")
    };
    assert_eq!(pair.expose_secret(), "api%20key=a%26b%3Dc");
}

#[test]
fn extracts_a_json_field() {
    let s = spec("env:K", Some("token"), bearer());
    let r = prepare(&s, br#"{"token":"t0k","other":1}"#).expect("ok");
    assert!(format!("{r:?}").contains("[redacted]"));
    let err = prepare(&s, br#"{"other":"x"}"#).expect_err("missing");
    assert!(matches!(err, InjectError::MissingField { .. }));
    let err = prepare(&s, b"not json").expect_err("not json");
    assert!(!err.to_string().contains("not json"));
}

#[test]
fn errors_never_contain_the_value() {
    let s = spec("env:K", None, bearer());
    let err = prepare(&s, b"line1\nline2-SECRETVALUE").expect_err("newline");
    assert!(matches!(err, InjectError::NotHeaderSafe { .. }));
    assert!(!err.to_string().contains("SECRETVALUE"));
    assert!(!format!("{err:?}").contains("SECRETVALUE"));
    let err = prepare(&s, &[0xff, 0xfe]).expect_err("utf8");
    assert!(matches!(err, InjectError::NotUtf8 { .. }));
    let err = prepare(&s, b"").expect_err("empty");
    assert!(matches!(err, InjectError::Empty { .. }));
}
