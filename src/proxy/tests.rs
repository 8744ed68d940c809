//! Header hygiene, query cleaning, URL building and body limits.

use super::rewrite::*;
use super::*;
use crate::config::RouteSpec;
use crate::config::Upstream;
use crate::credential::Resolved;
use crate::inject::{CredentialSpec, Injection};
use crate::secrets::reference::SecretRef;
use http::HeaderName;
use http::{HeaderValue, header};
use std::time::Duration;

fn route(inject: Injection) -> (RouteSpec, Resolved) {
    route_with_secret(inject, b"s3cr3t")
}

fn route_with_secret(inject: Injection, secret: &[u8]) -> (RouteSpec, Resolved) {
    let credential = CredentialSpec {
        secret: SecretRef::Env("K".to_string()),
        field: None,
        inject,
    };
    let resolved =
        crate::credential::Resolved::prepare(&credential, secret, None).expect("prepare");
    let spec = RouteSpec {
        name: "r".to_string(),
        upstream: Upstream {
            origin: "https://api.example.com".to_string(),
            base_path: "/base".to_string(),
            scheme: http::uri::Scheme::HTTPS,
            authority: http::uri::Authority::from_static("api.example.com"),
        },
        credential,
        allow: vec![],
        shadow_allow: None,
        request_headers_set: vec![(
            HeaderName::from_static("x-api-version"),
            HeaderValue::from_static("2024"),
        )],
        request_headers_remove: vec![HeaderName::from_static("x-debug")],
        response_headers_remove: vec![],
        timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        max_body_bytes: 100,
        scrub_responses: true,
        source_ranges: None,
        upstream_tls: None,
        rate_limit: None,
        route_rate_limit: None,
    };
    (spec, resolved)
}

fn header_inject(name: &'static str) -> Injection {
    Injection::Header {
        name: HeaderName::from_static(name),
        format: "Key {secret}".to_string(),
    }
}

#[test]
fn drops_caller_credentials_hop_by_hop_and_connection_named_headers() {
    let (spec, resolved) = route(header_inject("x-api-key"));
    let mut caller = HeaderMap::new();
    for (k, v) in [
        ("authorization", "Bearer caller-token"),
        ("x-serverless-authorization", "Bearer caller-token"),
        ("cookie", "session=1"),
        ("proxy-authorization", "Basic x"),
        ("connection", "close, X-Secret-Hop"),
        ("x-secret-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("upgrade", "websocket"),
        ("x-http-method-override", "DELETE"),
        ("x-forwarded-for", "1.2.3.4"),
        ("forwarded", "for=1.2.3.4"),
        ("x-debug", "1"),
        ("X-API-KEY", "caller-chosen"),
        ("x-api-version", "1999"),
        ("accept", "application/json"),
    ] {
        caller.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_static(v),
        );
    }
    let out = upstream_headers(&caller, &spec, &resolved, &HeaderValue::from_static("id1"));
    let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(
        out["accept-encoding"], "identity",
        "scrubbing routes ask for identity"
    );
    assert_eq!(out["accept"], "application/json");
    assert_eq!(out["x-api-version"], "2024");
    assert_eq!(out["x-request-id"], "id1");
    assert_eq!(out.get_all("x-api-key").iter().count(), 1);
    assert_eq!(out["x-api-key"], "Key s3cr3t");
}

#[test]
fn removes_caller_query_parameters_named_like_the_injected_one() {
    let (spec, resolved) = route(Injection::Query {
        name: "api_key".to_string(),
    });
    for (q, want) in [
        ("a=1&api_key=mine&b=2", Some("a=1&b=2")),
        ("api%5Fkey=mine", None),
        ("API_KEY=other-case&x", Some("x")),
        ("api_key", None),
        ("a=1", Some("a=1")),
        ("a=1;api_key=mine&b", Some("a=1&b")),
        ("api_key%5B%5D=x&api_key[0]=y&c", Some("c")),
        ("_method=DELETE&a=1", Some("a=1")),
    ] {
        assert_eq!(caller_query(Some(q), &resolved).as_deref(), want, "{q}");
    }
    let url = upstream_url(&spec, "/v1/x", Some("a=1"), &resolved).expect("url");
    assert_eq!(
        url.to_string(),
        "https://api.example.com/base/v1/x?a=1&api_key=s3cr3t"
    );
    let url = upstream_url(&spec, "/v1/x", None, &resolved).expect("url");
    assert_eq!(
        url.to_string(),
        "https://api.example.com/base/v1/x?api_key=s3cr3t"
    );
}

#[test]
fn the_upstream_host_never_changes() {
    let (spec, resolved) = route(header_inject("x-api-key"));
    for path in ["/@evil.example/x", "/x", "/.evil.example", "/:8443/x"] {
        let url = upstream_url(&spec, path, None, &resolved).expect("url");
        assert_eq!(url.host(), Some("api.example.com"), "{path}");
        assert_eq!(url.port_u16(), None, "{path}");
        assert_eq!(url.path(), format!("/base{path}"));
    }
    let url = upstream_url(&spec, "/x", Some("u=http://evil.example/"), &resolved).expect("url");
    assert_eq!(url.host(), Some("api.example.com"));
    // Something that is no path at all never becomes a URL.
    assert!(upstream_url(&spec, "x y", None, &resolved).is_err());
}

#[test]
fn aws_sigv4_sends_exactly_the_target_it_signed() {
    let spec =
        crate::inject::aws_sigv4::AwsSigV4Spec::new("execute-api", "eu-west-1").expect("spec");
    let (route, resolved) = route_with_secret(
        Injection::AwsSigV4(spec),
        br#"{"access_key_id":"AKIDEXAMPLE","secret_access_key":"wJalrXUtnFEMI"}"#,
    );
    // Characters the raw URI keeps but the signed URL form encodes.
    let uri = upstream_url(&route, "/a{b\"c}/x", Some("q='x'"), &resolved).expect("uri");
    assert_eq!(uri.path(), "/base/a{b\"c}/x");
    let mut out = Outgoing {
        method: Method::GET,
        uri,
        headers: HeaderMap::new(),
        caller_sent_length: false,
        body: OutBody::Full(Bytes::new()),
        fault: Default::default(),
    };
    sign(&route, &resolved, &mut out).expect("sign");
    assert!(out.headers.contains_key(header::AUTHORIZATION));
    assert_eq!(out.uri.path(), "/base/a%7Bb%22c%7D/x");
    assert_eq!(out.uri.query(), Some("q=%27x%27"));
    assert_eq!(out.uri.host(), Some("api.example.com"));
}

#[tokio::test]
async fn a_whole_answer_is_one_frame_of_its_exact_length() {
    use http_body_util::BodyExt as _;
    let mut whole = whole(bytes::Bytes::from_static(b"{\"ok\":true}"));
    assert_eq!(http_body::Body::size_hint(&whole).exact(), Some(11));
    assert!(!http_body::Body::is_end_stream(&whole));
    let frame = whole.frame().await.expect("a frame").expect("data");
    assert_eq!(
        frame.into_data().ok().as_deref(),
        Some(&b"{\"ok\":true}"[..])
    );
    assert!(http_body::Body::is_end_stream(&whole));
    assert_eq!(http_body::Body::size_hint(&whole).exact(), Some(0));
    assert!(whole.frame().await.is_none(), "nothing after the one frame");

    let streamed = streamed(axum::body::Body::from("streamed"));
    let collected = streamed.collect().await.expect("collects").to_bytes();
    assert_eq!(&collected[..], b"streamed");
}
