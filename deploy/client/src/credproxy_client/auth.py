"""`requests` authentication with a Google ID token for credproxy."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Callable, Optional

import requests

TokenFetcher = Callable[[str], str]

#: Seconds before expiry at which a cached token is replaced (Google ID tokens live 1 h).
DEFAULT_REFRESH_MARGIN_SECONDS = 300


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
    `gcloud auth application-default login` cannot mint ID tokens this way.
    """
    import google.auth.transport.requests
    import google.oauth2.id_token

    return google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)


def impersonation_fetcher(service_account: str) -> TokenFetcher:
    """ID tokens of `service_account`, minted through IAM Credentials with the caller's ADC.

    For Composer, whose tasks otherwise run as the environment's shared identity: the
    environment's service account needs roles/iam.serviceAccountTokenCreator on
    `service_account` (the pipeline_identity module's token_creators). `include_email`
    is set, since credproxy identifies callers by the `email` claim.
    """

    def fetch(audience: str) -> str:
        import google.auth
        import google.auth.transport.requests
        from google.auth import impersonated_credentials

        source, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        target = impersonated_credentials.Credentials(
            source_credentials=source,
            target_principal=service_account,
            target_scopes=["https://www.googleapis.com/auth/cloud-platform"],
        )
        creds = impersonated_credentials.IDTokenCredentials(
            target, target_audience=audience, include_email=True
        )
        creds.refresh(google.auth.transport.requests.Request())
        return creds.token

    return fetch


class CredproxyAuth(requests.auth.AuthBase):
    """Adds the workload's ID token for `audience` to every request.

    The token is fetched on first use and cached until `refresh_margin_seconds` before
    its expiry, then fetched again; concurrent requests (Beam DoFn threads, a shared
    session) share one fetch.

    Args:
        audience: credproxy's URL (or a custom audience in its `identity.audiences`).
        impersonate: a service account email to mint tokens as, instead of the
            workload's own identity (see `impersonation_fetcher`).
        refresh_margin_seconds: how long before expiry a token is replaced.
        fetcher: `audience -> token`; defaults to google-auth's `fetch_id_token`.
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
        self._fetch = fetcher or (impersonation_fetcher(impersonate) if impersonate else metadata_fetcher)
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
