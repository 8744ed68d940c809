//! `credproxy dev`: a one-command local demo, fully offline.
//!
//! It makes an ephemeral RSA key and serves its JWKS on loopback, starts a built-in echo
//! upstream that answers with what it received, writes a ready config whose route injects a
//! demo secret from the environment, and prints `curl` lines with valid dev tokens. Dev
//! tokens carry a non-Google issuer and audience and are signed by a key that exists only in
//! this process, so they can never verify in `serve` against Google's JWKS.
//!
//! [`Signer`] is also what the integration tests and benches use to mint tokens.

use std::net::SocketAddr;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use axum::extract::Request;
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use tokio::net::TcpListener;

/// Issuer of dev tokens: never a Google issuer.
pub const DEV_ISSUER: &str = "https://credproxy-dev.invalid";
/// Audience of dev tokens.
pub const DEV_AUDIENCE: &str = "credproxy-dev";
/// The caller the dev config allows.
pub const DEV_CALLER: &str = "pipeline@dev-project.iam.gserviceaccount.com";
/// A caller the dev config does not allow.
pub const DEV_INTRUDER: &str = "intruder@dev-project.iam.gserviceaccount.com";
/// Port of `credproxy dev` without `--port` or `$PORT`: not 8080, which Airflow's webserver
/// (and API server) takes on the same laptop.
pub const DEFAULT_PORT: u16 = 8765;

/// What `dev` says when it cannot listen on `listen`: the cause, and `--port` when taken.
pub fn port_problem(listen: SocketAddr, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "port {port} on 127.0.0.1 is already in use (another credproxy dev, or Airflow's webserver?): choose a free one with `credproxy dev --port {other}`",
            port = listen.port(),
            other = if listen.port() == DEFAULT_PORT {
                8766
            } else {
                DEFAULT_PORT
            },
        )
    } else {
        format!("cannot listen on {listen}: {e}; choose another port with `credproxy dev --port N`")
    }
}

/// Demo secret injected when `CREDPROXY_DEV_SECRET` is unset.
pub const DEV_SECRET: &str = "dev-demo-api-key";

/// An RSA signing key and its `kid`, for minting RS256 tokens.
pub struct Signer {
    kid: String,
    key: RsaKeyPair,
}

impl Signer {
    /// A fresh 2048-bit key with a random `kid`.
    pub fn generate() -> Result<Self, aws_lc_rs::error::Unspecified> {
        Ok(Signer {
            kid: format!("dev-{:016x}", rand::random::<u64>()),
            key: RsaKeyPair::generate(KeySize::Rsa2048)?,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`n`, `e` base64url).
    pub fn jwk(&self) -> serde_json::Value {
        let public = self.key.public_key();
        serde_json::json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// A JWKS document holding this key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk()] })
    }

    /// The DER SubjectPublicKeyInfo of the public key.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Signs `claims` under `header` (RS256 with this key, whatever `header` says).
    pub fn sign_with_header(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        // Signing with a key we just generated only fails on an internal library error.
        if self
            .key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .is_err()
        {
            signature.clear();
        }
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Signs `claims` as an RS256 JWT with this key's `kid`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_with_header(
            &serde_json::json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    /// Google-shaped ID token claims for `email`, valid for an hour from now.
    pub fn claims(email: &str, issuer: &str, audience: &str) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({
            "iss": issuer,
            "aud": audience,
            "azp": "1234567890",
            "sub": "1234567890",
            "email": email,
            "email_verified": true,
            "iat": now,
            "exp": now + 3600,
        })
    }
}

/// Serves `jwks` at `/certs` on an ephemeral loopback port; returns the address.
pub async fn serve_jwks(jwks: serde_json::Value) -> std::io::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move {
                (
                    [(http::header::CACHE_CONTROL, "public, max-age=3600")],
                    axum::Json(jwks),
                )
            }
        }),
    );
    spawn_loopback(app).await
}

/// Serves an echo upstream on an ephemeral loopback port: every request is answered with a
/// JSON description of what arrived (method, path, query, headers, body size).
pub async fn serve_echo() -> std::io::Result<SocketAddr> {
    spawn_loopback(axum::Router::new().fallback(echo)).await
}

async fn echo(request: Request) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let size = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    axum::Json(serde_json::json!({
        "upstream": "credproxy dev echo",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": size,
    }))
    .into_response()
}

async fn spawn_loopback(app: axum::Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "dev helper server stopped");
        }
    });
    Ok(addr)
}

/// The dev config, as YAML, for a JWKS and echo upstream at the given addresses.
pub fn config_yaml(listen: SocketAddr, jwks: SocketAddr, echo: SocketAddr) -> String {
    format!(
        r#"# credproxy dev: generated, offline demo config
listen: "{listen}"
environment: dev
identity:
  audiences: ["{DEV_AUDIENCE}"]
  issuers: ["{DEV_ISSUER}"]
  jwks_url: "http://{jwks}/certs"
routes:
  echo:
    upstream: "http://{echo}"
    credential:
      secret: "env:CREDPROXY_DEV_SECRET"
      inject:
        header: {{ name: "Authorization", format: "Bearer {{secret}}" }}
    # The echo exists to show the injected value arriving upstream; a real route keeps
    # scrubbing on, so an upstream that echoes never hands the credential back.
    scrub_responses: false
    allow:
      - callers: ["{DEV_CALLER}"]
        methods: ["GET", "POST"]
        paths: ["/**"]
"#
    )
}

/// Everything `credproxy dev` prints before it serves.
pub struct DevSession {
    /// The generated config text.
    pub config: String,
    /// Token of the allowed caller.
    pub token: String,
    /// Token of a caller no rule allows.
    pub intruder_token: String,
}

/// Starts the JWKS and echo helpers and mints the demo tokens.
pub async fn prepare(listen: SocketAddr) -> Result<DevSession, String> {
    let signer =
        Arc::new(Signer::generate().map_err(|_| "cannot generate an RSA key".to_string())?);
    let jwks = serve_jwks(signer.jwks())
        .await
        .map_err(|e| format!("cannot start the dev JWKS server: {e}"))?;
    let echo = serve_echo()
        .await
        .map_err(|e| format!("cannot start the dev echo upstream: {e}"))?;
    Ok(DevSession {
        config: config_yaml(listen, jwks, echo),
        token: signer.sign(&Signer::claims(DEV_CALLER, DEV_ISSUER, DEV_AUDIENCE)),
        intruder_token: signer.sign(&Signer::claims(DEV_INTRUDER, DEV_ISSUER, DEV_AUDIENCE)),
    })
}

/// The banner with ready-to-paste curl lines.
pub fn banner(listen: SocketAddr, session: &DevSession) -> String {
    format!(
        "credproxy dev: offline demo on http://{listen}\n\
         \n\
         Route `echo` forwards to a built-in echo upstream and injects the demo secret as\n\
         `Authorization: Bearer ...` (set CREDPROXY_DEV_SECRET to choose it). Dev tokens are\n\
         signed by a key that exists only in this process; they never verify against Google.\n\
         \n\
         Allowed ({DEV_CALLER}): the echo shows the injected credential arriving upstream:\n\
         \n  curl -s -H 'Authorization: Bearer {token}' http://{listen}/echo/v1/hello\n\
         \n\
         Denied ({DEV_INTRUDER}): 403 forbidden:\n\
         \n  curl -s -H 'Authorization: Bearer {intruder}' http://{listen}/echo/v1/hello\n\
         \n\
         No token: 401 unauthenticated:\n\
         \n  curl -s -i http://{listen}/echo/v1/hello\n\
         \n\
         From Python, with credproxy-client: CREDPROXY_ID_TOKEN stands in for the Google ID\n\
         token (valid for an hour; restart dev for a new one):\n\
         \n  export CREDPROXY_ID_TOKEN='{token}'\n\
         \n  python3 -c 'from credproxy_client import credproxy_session; print(credproxy_session(\"http://{listen}\").get(\"/echo/v1/hello\").json())'\n\
         \n\
         Config in use:\n\n{config}\n\
         Press Ctrl-C to stop.\n",
        token = session.token,
        intruder = session.intruder_token,
        config = session.config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_tokens_never_claim_a_google_issuer() {
        assert!(!crate::config::GOOGLE_ISSUERS.contains(&DEV_ISSUER));
        let claims = Signer::claims(DEV_CALLER, DEV_ISSUER, DEV_AUDIENCE);
        assert_eq!(claims["iss"], DEV_ISSUER);
    }

    #[test]
    fn the_dev_config_is_valid() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let text = config_yaml(a, a, a);
        let env = |k: &str| (k == "CREDPROXY_DEV_SECRET").then(|| "x".to_string());
        crate::config::parse(&text, &env).expect("valid dev config");
    }
}
