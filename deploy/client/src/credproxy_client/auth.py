"""`requests` authentication with a Google ID token for credproxy."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from typing import Callable, Optional

import requests

from .errors import CredproxyTokenError

TokenFetcher = Callable[[str], str]

#: Seconds before expiry at which a cached token is replaced (Google ID tokens live 1 h).
DEFAULT_REFRESH_MARGIN_SECONDS = 300

#: Local runs: a ready ID token (e.g. the one `credproxy dev` prints) ...
TOKEN_ENV = "CREDPROXY_ID_TOKEN"
#: ... or a file holding one (re-read whenever the cached token is due for refresh).
TOKEN_FILE_ENV = "CREDPROXY_ID_TOKEN_FILE"
#: Base URL of the IAM Credentials API (tests point it at a fake).
IAM_ENDPOINT_ENV = "CREDPROXY_IAM_CREDENTIALS_ENDPOINT"
DEFAULT_IAM_ENDPOINT = "https://iamcredentials.googleapis.com"

_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def _expiry(token: str) -> float:
    """The token's `exp` claim. The token is not verified here: credproxy does that."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return float(json.loads(base64.urlsafe_b64decode(payload))["exp"])
    except (IndexError, KeyError, ValueError, TypeError) as e:
        raise ValueError("the ID token has no readable exp claim") from e


def metadata_fetcher(audience: str) -> str:
    """ID token for `audience` from google-auth's default sources.

    A service-account key file (GOOGLE_APPLICATION_CREDENTIALS), else the metadata server
    (GCE_METADATA_HOST overrides its host). User credentials from
    `gcloud auth application-default login` cannot mint ID tokens this way: on a laptop,
    run `credproxy dev` and set CREDPROXY_ID_TOKEN, or impersonate a service account.
    """
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.id_token

    try:
        return google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise CredproxyTokenError(
            f"no Google credentials can mint an ID token for {audience}: {e}. On Composer, "
            "Dataflow and Cloud Run the metadata server provides one; on a laptop, run "
            f"`credproxy dev` and export {TOKEN_ENV} (or {TOKEN_FILE_ENV}) as it prints"
        ) from e


def env_fetcher() -> Optional[TokenFetcher]:
    """A fetcher reading CREDPROXY_ID_TOKEN, else the file CREDPROXY_ID_TOKEN_FILE names;
    None when neither is set. An expired token is an error naming where to get a new one."""
    if not os.environ.get(TOKEN_ENV) and not os.environ.get(TOKEN_FILE_ENV):
        return None

    def fetch(audience: str) -> str:
        source = TOKEN_ENV
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            path = os.environ.get(TOKEN_FILE_ENV, "")
            source = f"{TOKEN_FILE_ENV} ({path})"
            try:
                with open(path, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError as e:
                raise CredproxyTokenError(f"cannot read the ID token from {source}: {e}") from e
        try:
            exp = _expiry(token)
        except ValueError as e:
            raise CredproxyTokenError(f"{source} holds no ID token (no readable exp claim)") from e
        if exp <= time.time():
            raise CredproxyTokenError(
                f"the ID token in {source} expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(exp))}: "
                "restart `credproxy dev` (or mint a new one) and export the token it prints"
            )
        return token

    return fetch


def _source_email(source) -> str:
    email = getattr(source, "service_account_email", None)
    if email and email != "default":
        return email
    return "the workload's own service account (Composer: the environment's service account)"


def impersonation_fetcher(service_account: str, *, endpoint: Optional[str] = None) -> TokenFetcher:
    """ID tokens of `service_account`, minted through the IAM Credentials API
    (`generateIdToken`, with `includeEmail`: credproxy identifies callers by `email`) with
    the caller's Application Default Credentials.

    For Composer, whose tasks otherwise run as the environment's shared identity: the
    environment's service account needs roles/iam.serviceAccountTokenCreator on
    `service_account` (Terraform: the pipeline_identity module's `token_creators` input),
    and the project needs the IAM Credentials API (iamcredentials.googleapis.com) enabled.
    Refusals raise `CredproxyTokenError` saying which of these is missing.
    """

    def fetch(audience: str) -> str:
        import google.auth
        import google.auth.transport.requests

        base = (endpoint or os.environ.get(IAM_ENDPOINT_ENV) or DEFAULT_IAM_ENDPOINT).rstrip("/")
        try:
            source, _ = google.auth.default(scopes=[_CLOUD_PLATFORM])
            source.refresh(google.auth.transport.requests.Request())
        except Exception as e:  # google-auth raises several types; all mean the same here
            raise CredproxyTokenError(
                f"cannot get the workload's own credentials to impersonate {service_account}: {e}",
                retryable=True,
            ) from e
        who = _source_email(source)
        url = f"{base}/v1/projects/-/serviceAccounts/{service_account}:generateIdToken"
        try:
            resp = requests.post(
                url,
                json={"audience": audience, "includeEmail": True},
                headers={"Authorization": f"Bearer {source.token}"},
                timeout=(10, 30),
            )
        except requests.RequestException as e:
            raise CredproxyTokenError(
                f"cannot reach the IAM Credentials API ({base}) to impersonate {service_account}: {e}",
                retryable=True,
            ) from e
        if resp.status_code == 200:
            try:
                return resp.json()["token"]
            except (ValueError, KeyError) as e:
                raise CredproxyTokenError(f"the IAM Credentials API answered without a token for {service_account}") from e
        raise _impersonation_error(resp, who, service_account)

    return fetch


def _impersonation_error(resp: requests.Response, who: str, target: str) -> CredproxyTokenError:
    try:
        err = resp.json().get("error", {})
    except ValueError:
        err = {}
    status, message = err.get("status", ""), err.get("message", resp.text[:300])
    reasons = {d.get("reason") for d in err.get("details", []) if isinstance(d, dict)}
    if "SERVICE_DISABLED" in reasons or "has not been used" in message or "is disabled" in message:
        return CredproxyTokenError(
            f"the IAM Credentials API is not enabled in the project of {who}, so it cannot "
            f"impersonate {target}: enable it (`gcloud services enable iamcredentials.googleapis.com`, "
            f"or google_project_service in Terraform). Google said: {message}"
        )
    if resp.status_code == 403 or status == "PERMISSION_DENIED":
        return CredproxyTokenError(
            f"{who} may not impersonate {target}: grant it roles/iam.serviceAccountTokenCreator "
            f"on {target} (Terraform: add it to the pipeline_identity module's `token_creators` input). "
            f"Google said: {message}"
        )
    if resp.status_code == 404 or status == "NOT_FOUND":
        return CredproxyTokenError(
            f"cannot impersonate {target}: no such service account (check the `impersonate` "
            f"setting). Google said: {message}"
        )
    return CredproxyTokenError(
        f"the IAM Credentials API refused to mint an ID token of {target} for {who} "
        f"({resp.status_code} {status}): {message}",
        retryable=resp.status_code >= 500 or resp.status_code == 429,
    )


class CredproxyAuth(requests.auth.AuthBase):
    """Adds the workload's ID token for `audience` to every request.

    The token is fetched on first use and cached until `refresh_margin_seconds` before
    its expiry, then fetched again; concurrent requests (Beam DoFn threads, a shared
    session) share one fetch.

    Token sources, first found: `fetcher`; CREDPROXY_ID_TOKEN or CREDPROXY_ID_TOKEN_FILE
    (local runs against `credproxy dev`); impersonation of `impersonate` through IAM
    Credentials; google-auth's default (the metadata server, or a key file).

    Args:
        audience: credproxy's URL (or a custom audience in its `identity.audiences`).
        impersonate: a service account email to mint tokens as, instead of the
            workload's own identity (see `impersonation_fetcher`).
        refresh_margin_seconds: how long before expiry a token is replaced.
        fetcher: `audience -> token`; overrides every other source.
        clock: seconds since the epoch (tests).
    """

    def __init__(
        self,
        audience: str,
        *,
        impersonate: Optional[str] = None,
        refresh_margin_seconds: float = DEFAULT_REFRESH_MARGIN_SECONDS,
        fetcher: Optional[TokenFetcher] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience:
            raise ValueError("audience is required: credproxy's URL")
        if fetcher is not None and impersonate is not None:
            raise ValueError("give fetcher or impersonate, not both")
        self.audience = audience
        self.refresh_margin_seconds = refresh_margin_seconds
        self._fetch = (
            fetcher
            or env_fetcher()
            or (impersonation_fetcher(impersonate) if impersonate else metadata_fetcher)
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._expires_at = 0.0

    def token(self) -> str:
        """A token valid for at least `refresh_margin_seconds` more (fetched if needed)."""
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self.refresh_margin_seconds:
                token = self._fetch(self.audience)
                self._expires_at = _expiry(token)
                self._token = token
            return self._token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.token()
        # Cloud Run's invoker check reads X-Serverless-Authorization (and strips the
        # signature of the token it checked); credproxy verifies Authorization.
        request.headers["Authorization"] = f"Bearer {token}"
        request.headers["X-Serverless-Authorization"] = f"Bearer {token}"
        return request

    def __repr__(self) -> str:  # never show the token
        return f"CredproxyAuth(audience={self.audience!r})"
