//! Caller authentication, tested as attacks: every rejected token gets 401 with
//! `WWW-Authenticate: Bearer`, never reaches the upstream, and never appears in a log.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::harness::*;

async fn assert_rejected(w: &World, token: &str, what: &str) -> serde_json::Value {
    let before = w.upstream.started();
    let r = w
        .app
        .client
        .get(w.app.url("/api/v1/items"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401, "{what}");
    assert_eq!(r.headers()["www-authenticate"], "Bearer", "{what}");
    let body = error_body(r).await;
    assert_eq!(body["error"], "unauthenticated", "{what}");
    assert!(
        !body.to_string().contains(token),
        "{what}: the error body echoes the token"
    );
    assert_eq!(
        w.upstream.started(),
        before,
        "{what}: the upstream was contacted"
    );
    body
}

#[tokio::test]
async fn accepts_a_valid_google_id_token() {
    let w = World::start().await;
    let r = w.app.get_as(READER, "/api/v1/items").await;
    assert_eq!(r.status(), 200);
    assert_eq!(w.upstream.last().path, "/base/v1/items");
}

#[tokio::test]
async fn rejects_missing_and_non_bearer_credentials() {
    let w = World::start().await;
    let r = w.app.get("/api/v1/items").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = w
        .app
        .client
        .get(w.app.url("/api/v1/items"))
        .basic_auth("user", Some("password"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(w.upstream.started(), 0);
}

#[tokio::test]
async fn rejects_malformed_tokens() {
    let w = World::start().await;
    for token in ["not-a-jwt", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.e30"] {
        assert_rejected(&w, token, token).await;
    }
}

#[tokio::test]
async fn rejects_a_forged_signature() {
    let w = World::start().await;
    // Same claims and kid, signed by another key.
    let other = Keys::new();
    let forged = other.sign_with_header(
        &json!({"alg": "RS256", "kid": w.keys.signer.kid()}),
        &w.keys.claims(READER),
    );
    assert_rejected(&w, &forged, "forged signature").await;
    // A valid token whose payload was swapped for another caller's.
    let good = w.keys.token(READER);
    let evil = w.keys.token(WRITER);
    let parts: Vec<&str> = good.split('.').collect();
    let evil_payload = evil.split('.').nth(1).expect("payload");
    let tampered = w
        .keys
        .remember(format!("{}.{}.{}", parts[0], evil_payload, parts[2]));
    assert_rejected(&w, &tampered, "tampered payload").await;
}

#[tokio::test]
async fn rejects_expired_tokens_beyond_the_leeway() {
    let w = World::start().await;
    let now = chrono::Utc::now().timestamp();
    let mut claims = w.keys.claims(READER);
    claims["iat"] = json!(now - 7200);
    claims["exp"] = json!(now - 120);
    let body = assert_rejected(&w, &w.keys.sign(&claims), "expired").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired")
    );
    // Within the 30 s leeway still passes.
    claims["exp"] = json!(now - 5);
    let token = w.keys.sign(&claims);
    let r = w
        .app
        .client
        .get(w.app.url("/api/v1/items"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn rejects_wrong_audience_and_wrong_issuer() {
    let w = World::start().await;
    let mut claims = w.keys.claims(READER);
    claims["aud"] = json!("https://some-other-service.run.app");
    assert_rejected(&w, &w.keys.sign(&claims), "wrong audience").await;
    let mut claims = w.keys.claims(READER);
    claims["iss"] = json!("https://evil.example");
    assert_rejected(&w, &w.keys.sign(&claims), "wrong issuer").await;
    let mut claims = w.keys.claims(READER);
    claims["iss"] = json!(credproxy::dev::DEV_ISSUER);
    assert_rejected(&w, &w.keys.sign(&claims), "dev issuer").await;
}

#[tokio::test]
async fn rejects_alg_none() {
    let w = World::start().await;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(w.keys.claims(READER).to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let token = w.keys.remember(token);
        assert_rejected(&w, &token, "alg none").await;
    }
}

#[tokio::test]
async fn rejects_hs256_signed_with_the_rsa_public_key() {
    let w = World::start().await;
    let header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "HS256", "typ": "JWT", "kid": w.keys.signer.kid()}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(w.keys.claims(READER).to_string());
    let input = format!("{header}.{payload}");
    // The classic confusion: HMAC keyed with the public key (DER and JWK JSON forms).
    for key in [
        w.keys.signer.public_key_der(),
        w.keys.signer.jwk().to_string().into_bytes(),
    ] {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        let token = w
            .keys
            .remember(format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())));
        let body = assert_rejected(&w, &token, "HS256 confusion").await;
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("RS256")
        );
    }
}

#[tokio::test]
async fn ignores_key_locations_in_the_token_header() {
    let w = World::start().await;
    // Signed by an attacker key that the header points at (jwk / jku / x5u).
    let attacker = Keys::new();
    let token = attacker.sign_with_header(
        &json!({
            "alg": "RS256",
            "kid": "attacker",
            "jwk": attacker.signer.jwk(),
            "jku": format!("{}", w.jwks.url()),
            "x5u": "https://evil.example/cert.pem",
        }),
        &w.keys.claims(READER),
    );
    w.keys.remember(token.clone());
    assert_rejected(&w, &token, "embedded jwk").await;
}

#[tokio::test]
async fn rejects_missing_email_and_unverified_email() {
    let w = World::start().await;
    let mut claims = w.keys.claims(READER);
    claims.as_object_mut().expect("object").remove("email");
    let body = assert_rejected(&w, &w.keys.sign(&claims), "no email").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("includeEmail")
    );
    let mut claims = w.keys.claims(READER);
    claims["email_verified"] = json!(false);
    assert_rejected(&w, &w.keys.sign(&claims), "unverified").await;
}

#[tokio::test]
async fn rejects_tokens_issued_in_the_future_and_not_yet_valid() {
    let w = World::start().await;
    let now = chrono::Utc::now().timestamp();
    let mut claims = w.keys.claims(READER);
    claims["iat"] = json!(now + 600);
    claims["exp"] = json!(now + 4200);
    assert_rejected(&w, &w.keys.sign(&claims), "iat in the future").await;
    let mut claims = w.keys.claims(READER);
    claims["nbf"] = json!(now + 600);
    assert_rejected(&w, &w.keys.sign(&claims), "nbf in the future").await;
    let mut claims = w.keys.claims(READER);
    claims.as_object_mut().expect("object").remove("iat");
    assert_rejected(&w, &w.keys.sign(&claims), "no iat").await;
}

#[tokio::test]
async fn a_signature_removed_token_gets_a_message_naming_x_serverless_authorization() {
    let w = World::start().await;
    let token = w.keys.token(READER);
    let (head, _) = token.rsplit_once('.').expect("jwt");
    let stripped = format!("{head}.SIGNATURE_REMOVED_BY_GOOGLE");
    let body = assert_rejected(&w, &stripped, "signature removed").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("X-Serverless-Authorization"),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_kid_refetches_the_jwks_at_most_once_per_interval() {
    let w = World::start().await;
    let initial = w.jwks.fetch_count();
    // A storm of forged kids causes one refetch, not one per request.
    for i in 0..20 {
        let token = w.keys.sign_with_header(
            &json!({"alg": "RS256", "kid": format!("forged-{i}")}),
            &w.keys.claims(READER),
        );
        assert_rejected(&w, &token, "unknown kid").await;
    }
    assert_eq!(
        w.jwks.fetch_count(),
        initial + 1,
        "one refetch for 20 unknown kids"
    );
}

#[tokio::test]
async fn a_rotated_google_key_is_picked_up_on_first_sight() {
    let w = World::start().await;
    // Google publishes a new key; a caller already uses it.
    let rotated = Keys::new();
    let mut jwks = w.keys.signer.jwks();
    jwks["keys"]
        .as_array_mut()
        .expect("keys")
        .push(rotated.signer.jwk());
    w.jwks.set(jwks);
    let token = rotated.token(READER);
    w.keys.remember(token.clone());
    let r = w
        .app
        .client
        .get(w.app.url("/api/v1/items"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_token_in_the_query_string_is_never_accepted() {
    let w = World::start().await;
    let token = w.keys.token(READER);
    for q in ["access_token", "token", "id_token"] {
        let r = w.app.get(&format!("/api/v1/items?{q}={token}")).await;
        assert_eq!(r.status(), 401, "{q}");
    }
}

#[tokio::test]
async fn unauthenticated_callers_learn_nothing_about_routes() {
    let w = World::start().await;
    for path in ["/api/v1/items", "/no-such-route/x", "/api/../etc/passwd"] {
        let r = w.app.get(path).await;
        assert_eq!(r.status(), 401, "{path}");
    }
}
