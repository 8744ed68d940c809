"""A `requests.Session` for credproxy: base URL, ID-token auth, bounded retries."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from typing import Callable, Optional, Tuple, Union

import requests

from .auth import CredproxyAuth

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Error codes of answers credproxy gives before forwarding anything upstream (SPEC,
# status table): retrying these can never repeat a write.
NOT_FORWARDED = frozenset({"rate_limited", "overloaded", "credential_unavailable"})

Timeout = Union[float, Tuple[float, float]]


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _not_forwarded(response: requests.Response) -> bool:
    """Whether credproxy answered itself (so the upstream never saw the request)."""
    if "json" not in response.headers.get("Content-Type", ""):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") in NOT_FORWARDED and "request_id" in body


class CredproxySession(requests.Session):
    """`requests.Session` that resolves paths against credproxy's URL, authenticates with
    the workload's ID token and retries 429 and 503 responses.

    Retries honour `Retry-After` (seconds or HTTP date) and are bounded twice: at most
    `max_retries` of them, and none when the server asks for a wait longer than
    `max_retry_after_seconds` (the response is returned as is). Without `Retry-After`,
    the wait is exponential with jitter from `backoff_seconds`.

    Idempotent methods are retried on any 429/503. POST and PATCH are retried only when
    credproxy answered itself (`rate_limited`, `overloaded`, `credential_unavailable`): an
    upstream's own 503 to a POST may follow a partial write, so it is returned, not
    repeated. Streaming request bodies (files, generators) are never retried.
    """

    def __init__(
        self,
        base_url: str,
        auth: Optional[CredproxyAuth] = None,
        *,
        max_retries: int = 4,
        max_retry_after_seconds: float = 30.0,
        backoff_seconds: float = 0.5,
        timeout: Optional[Timeout] = (10.0, 300.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.auth = auth if auth is not None else CredproxyAuth(self.base_url)
        self.max_retries = max_retries
        self.max_retry_after_seconds = max_retry_after_seconds
        self.backoff_seconds = backoff_seconds
        self.default_timeout = timeout
        self._sleep = sleep

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        if isinstance(url, str) and url.startswith("/"):
            url = self.base_url + url
        if kwargs.get("timeout") is None and self.default_timeout is not None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:  # type: ignore[override]
        replayable = request.body is None or isinstance(request.body, (bytes, str))
        attempt = 0
        while True:
            response = super().send(request, **kwargs)
            if response.status_code not in RETRY_STATUSES or not replayable or attempt >= self.max_retries:
                return response
            method = (request.method or "GET").upper()
            if method not in IDEMPOTENT_METHODS and not _not_forwarded(response):
                return response
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is None:
                wait = self.backoff_seconds * (2**attempt) * (0.5 + random.random())
            if wait > self.max_retry_after_seconds:
                log.warning(
                    "credproxy: %s %s got %s with Retry-After %.0fs, above the %.0fs bound; not retrying",
                    method, request.path_url, response.status_code, wait, self.max_retry_after_seconds,
                )
                return response
            attempt += 1
            log.info(
                "credproxy: %s %s got %s; retry %d/%d in %.1fs",
                method, request.path_url, response.status_code, attempt, self.max_retries, wait,
            )
            response.close()
            self._sleep(wait)
            # The token may have been refreshed meanwhile: re-apply auth before resending.
            if self.auth is not None:
                request = self.auth(request)


def credproxy_session(
    base_url: str,
    audience: Optional[str] = None,
    *,
    impersonate: Optional[str] = None,
    **kwargs,
) -> CredproxySession:
    """A session for credproxy at `base_url`; the token audience defaults to that URL.

    `impersonate`: call as this service account instead of the workload's own identity
    (Composer: the DAG's pipeline service account).
    """
    auth = CredproxyAuth(audience or base_url.rstrip("/"), impersonate=impersonate)
    return CredproxySession(base_url, auth, **kwargs)
