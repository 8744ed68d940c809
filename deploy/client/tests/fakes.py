"""Local stand-ins for Google: an RSA signing key, a JWKS endpoint, a GCE metadata server,
and a recording HTTP server (upstream API or scripted credproxy). All on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unverified_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class SigningKey:
    """An RS256 key pair, like one of Google's, that only this test run knows."""

    def __init__(self) -> None:
        self.kid = uuid.uuid4().hex
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        numbers = self._key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": b64url(n), "e": b64url(e)}

    def sign(self, claims: dict) -> str:
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


class Recorded:
    def __init__(self, method: str, path: str, headers: dict, body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def query(self) -> dict:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}


Reply = tuple  # (status, headers dict, body bytes)


class Server:
    """A threaded HTTP server calling `handler(Recorded) -> (status, headers, body)` and
    recording every request."""

    def __init__(self, handler: Callable[[Recorded], Reply]) -> None:
        self.handler = handler
        self.requests: list[Recorded] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                outer.requests.append(rec)
                status, headers, payload = outer.handler(rec)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FakeMetadataServer:
    """The GCE metadata server's identity endpoint, as google-auth calls it.

    `GET /` answers with `Metadata-Flavor: Google` (google-auth's ping); `GET
    /computeMetadata/v1/instance/service-accounts/default/identity?audience=A&format=full`
    with the `Metadata-Flavor: Google` request header answers an ID token for A, signed by
    `key`, after google-auth has read the account's details
    (`.../service-accounts/default/?recursive=true`). Requests without that header get
    403, as from the real server.
    """

    def __init__(self, key: SigningKey, email: str) -> None:
        self.key = key
        self.email = email
        self.token_lifetime_seconds = 3600
        self.identity_requests: list[Recorded] = []
        self.rejected: list[Recorded] = []
        self.server = Server(self._handle)
        self.host = f"127.0.0.1:{self.server.port}"

    def mint(self, audience: str, lifetime: Optional[int] = None) -> str:
        now = int(time.time())
        return self.key.sign(
            {
                "iss": "https://accounts.google.com",
                "aud": audience,
                "azp": "1234567890",
                "sub": "1234567890",
                "email": self.email,
                "email_verified": True,
                "iat": now,
                "exp": now + (lifetime if lifetime is not None else self.token_lifetime_seconds),
            }
        )

    def _handle(self, req: Recorded) -> Reply:
        flavor = {"Metadata-Flavor": "Google", "Content-Type": "application/text"}
        if req.headers.get("metadata-flavor") != "Google":
            self.rejected.append(req)
            return 403, flavor, b"Missing required header: Metadata-Flavor"
        path = urlsplit(req.path).path
        if path == "/":
            return 200, flavor, b"computeMetadata/\n"
        if path in ("/computeMetadata/v1/instance/service-accounts/default/", "/computeMetadata/v1/instance/service-accounts/default"):
            # google-auth reads the account's details (recursive=true) before asking for a token.
            info = {"aliases": ["default"], "email": self.email, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
            return 200, {**flavor, "Content-Type": "application/json"}, json.dumps(info).encode()
        if path == "/computeMetadata/v1/instance/service-accounts/default/token":
            # An access token (for the IAM Credentials API); FakeIam reads the email back.
            body = {"access_token": access_token_for(self.email), "expires_in": 3599, "token_type": "Bearer"}
            return 200, {**flavor, "Content-Type": "application/json"}, json.dumps(body).encode()
        if path == "/computeMetadata/v1/instance/service-accounts/default/identity":
            query = req.query
            if "audience" not in query:
                return 400, flavor, b"non-empty audience parameter required"
            if query.get("format") != "full":
                return 400, flavor, b"this fake serves format=full only"
            self.identity_requests.append(req)
            return 200, flavor, self.mint(query["audience"]).encode("ascii")
        return 404, flavor, b"not found"

    def close(self) -> None:
        self.server.close()


def access_token_for(email: str) -> str:
    return "ya29.fake." + b64url(email.encode())


def email_of_access_token(token: str) -> Optional[str]:
    if not token.startswith("ya29.fake."):
        return None
    rest = token[len("ya29.fake.") :]
    return base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4)).decode()


class FakeIam:
    """The IAM Credentials API's `generateIdToken`, as Google answers it.

    `POST /v1/projects/-/serviceAccounts/TARGET:generateIdToken` with
    `Authorization: Bearer <access token of SOURCE>` and `{"audience", "includeEmail"}`:
    an ID token of TARGET signed by `key` when `grants` lets SOURCE impersonate TARGET;
    else 403 PERMISSION_DENIED (iam.serviceAccounts.getOpenIdToken), 404 for an unknown
    TARGET, and 403 SERVICE_DISABLED when `enabled` is false.
    """

    def __init__(self, key: SigningKey, grants: dict, accounts: Optional[set] = None) -> None:
        self.key = key
        self.grants = grants  # source email -> set of target emails
        self.accounts = accounts if accounts is not None else {t for ts in grants.values() for t in ts}
        self.enabled = True
        self.calls: list[Recorded] = []
        self.server = Server(self._handle)
        self.url = self.server.url

    @staticmethod
    def _error(status: int, code: str, message: str, details=()) -> Reply:
        body = {"error": {"code": status, "message": message, "status": code, "details": list(details)}}
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def _handle(self, req: Recorded) -> Reply:
        self.calls.append(req)
        path = urlsplit(req.path).path
        prefix, suffix = "/v1/projects/-/serviceAccounts/", ":generateIdToken"
        if req.method != "POST" or not path.startswith(prefix) or not path.endswith(suffix):
            return self._error(404, "NOT_FOUND", "not found")
        target = path[len(prefix) : -len(suffix)]
        source = email_of_access_token((req.headers.get("authorization") or "").removeprefix("Bearer "))
        if source is None:
            return self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if not self.enabled:
            return self._error(
                403,
                "PERMISSION_DENIED",
                "IAM Service Account Credentials API has not been used in project 123456789012 before or it is disabled.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED", "domain": "googleapis.com"}],
            )
        if target not in self.accounts:
            return self._error(404, "NOT_FOUND", f"Service account projects/-/serviceAccounts/{target} not found.")
        if target not in self.grants.get(source, set()):
            return self._error(
                403,
                "PERMISSION_DENIED",
                "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED", "domain": "iam.googleapis.com"}],
            )
        body = json.loads(req.body or b"{}")
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": body.get("audience"),
            "azp": "1234567890",
            "sub": "1234567890",
            "iat": now,
            "exp": now + 3600,
        }
        if body.get("includeEmail"):
            claims.update(email=target, email_verified=True)
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": self.key.sign(claims)}).encode()

    def close(self) -> None:
        self.server.close()


class FakeJwks:
    """https://www.googleapis.com/oauth2/v3/certs for the test's key."""

    def __init__(self, key: SigningKey) -> None:
        body = json.dumps({"keys": [key.jwk()]}).encode()
        self.server = Server(lambda req: (200, {"Content-Type": "application/json", "Cache-Control": "public, max-age=3600"}, body))
        self.url = f"{self.server.url}/oauth2/v3/certs"

    def close(self) -> None:
        self.server.close()
