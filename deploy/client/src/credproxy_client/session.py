"""A `requests.Session` for credproxy: base URL, ID-token auth, bounded retries, errors in
credproxy's words, and the caller labels that tie audit entries to a task."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from typing import Callable, Dict, Mapping, Optional, Tuple, Type, Union

import requests

from . import labels as _labels
from ._version import __version__
from .auth import CredproxyAuth
from .errors import CredproxyError

log = logging.getLogger(__name__)

#: Retried with Retry-After (or backoff): credproxy's or the upstream's "later, please".
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: Retried with backoff, idempotent methods only: a gateway error may follow a partial write.
GATEWAY_STATUSES = frozenset({502, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Error codes of answers credproxy gives before forwarding anything upstream (SPEC,
# status table): retrying these can never repeat a write.
NOT_FORWARDED = frozenset({"rate_limited", "overloaded", "credential_unavailable", "rate_limiter_unavailable"})
#: Sent as User-Agent (credproxy's audit entry records it).
USER_AGENT = f"credproxy-client/{__version__} python-requests/{requests.__version__}"

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


def credproxy_code(response: requests.Response) -> Optional[str]:
    """credproxy's error code when credproxy answered itself, else None (an upstream
    response passed through: credproxy removes any upstream header of that name)."""
    return response.headers.get("X-Credproxy-Error")


class CredproxySession(requests.Session):
    """`requests.Session` that resolves paths against credproxy's URL, authenticates with
    the workload's ID token, retries what may succeed later, and raises `CredproxyError`
    for answers credproxy gave itself.

    Errors: a response carrying `X-Credproxy-Error` (credproxy refused or failed: 401,
    403, 404, ...) raises `CredproxyError`, whose `str()` is credproxy's message with the
    request_id and the fix. Upstream responses, errors included, are returned as they are
    (call `raise_for_status()`). `raise_credproxy_errors=False` returns them too.

    Retries (at most `max_retries`; never for 400, 401, 403, 404 or 413):
    - 429 and 503 honour `Retry-After` (seconds or HTTP date), and are not retried when it
      asks for more than `max_retry_after_seconds`; without it, exponential backoff with
      jitter from `backoff_seconds`. Idempotent methods always; POST and PATCH only when
      credproxy answered itself before forwarding (`rate_limited`, `overloaded`,
      `credential_unavailable`, `rate_limiter_unavailable`).
    - 502 and 504, and connection errors (a Cloud Run cold start), with backoff, for
      idempotent methods only.
    Streaming request bodies (files, generators) are never retried.

    Correlation: `User-Agent: credproxy-client/VERSION`, and `X-Credproxy-Labels` with
    `labels` plus, inside an Airflow task, its dag_id, task_id, run_id and try_number.

    Hooks: `on_retry(reason)` before each retry (reason: the status, or `connection`),
    `on_credproxy_error(err)` before a `CredproxyError` is raised (Beam counts these).
    """

    error_class: Type[CredproxyError] = CredproxyError

    def __init__(
        self,
        base_url: str,
        auth: Optional[CredproxyAuth] = None,
        *,
        max_retries: int = 4,
        max_retry_after_seconds: float = 30.0,
        backoff_seconds: float = 0.5,
        timeout: Optional[Timeout] = (10.0, 300.0),
        labels: Optional[Mapping[str, object]] = None,
        airflow_context: bool = True,
        raise_credproxy_errors: bool = True,
        on_retry: Optional[Callable[[str], None]] = None,
        on_credproxy_error: Optional[Callable[[CredproxyError], None]] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.auth = auth if auth is not None else CredproxyAuth(self.base_url)
        self.max_retries = max_retries
        self.max_retry_after_seconds = max_retry_after_seconds
        self.backoff_seconds = backoff_seconds
        self.default_timeout = timeout
        self.labels: Dict[str, object] = dict(labels or {})
        self.airflow_context = airflow_context
        self.raise_credproxy_errors = raise_credproxy_errors
        self.on_retry = on_retry
        self.on_credproxy_error = on_credproxy_error
        self.headers["User-Agent"] = USER_AGENT
        self._sleep = sleep

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        if isinstance(url, str) and url.startswith("/"):
            url = self.base_url + url
        if kwargs.get("timeout") is None and self.default_timeout is not None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)

    def current_labels(self) -> Dict[str, str]:
        """The labels sent with the next request (the Airflow task's, then `labels`)."""
        found: Dict[str, object] = _labels.airflow_labels() if self.airflow_context else {}
        found.update(self.labels)
        return _labels.sanitise(found)

    def _backoff(self, attempt: int) -> float:
        return self.backoff_seconds * (2**attempt) * (0.5 + random.random())

    def _retry_wait(self, response: requests.Response, method: str, attempt: int) -> Optional[float]:
        """Seconds to wait before retrying `response`, or None to keep it."""
        status = response.status_code
        idempotent = method in IDEMPOTENT_METHODS
        if status in RETRY_AFTER_STATUSES:
            if not idempotent and credproxy_code(response) not in NOT_FORWARDED:
                return None
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is None:
                return self._backoff(attempt)
            if wait > self.max_retry_after_seconds:
                log.warning(
                    "credproxy: %s %s got %s with Retry-After %.0fs, above the %.0fs bound; not retrying",
                    method, response.request.path_url if response.request else "", status, wait, self.max_retry_after_seconds,
                )
                return None
            return wait
        if status in GATEWAY_STATUSES and idempotent:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            return min(wait, self.max_retry_after_seconds) if wait is not None else self._backoff(attempt)
        return None

    def _retrying(self, request: requests.PreparedRequest, reason: str, attempt: int, wait: float) -> requests.PreparedRequest:
        log.info(
            "credproxy: %s %s got %s; retry %d/%d in %.1fs",
            request.method, request.path_url, reason, attempt, self.max_retries, wait,
        )
        if self.on_retry is not None:
            self.on_retry(reason)
        self._sleep(wait)
        # The token may have been refreshed meanwhile: re-apply auth before resending.
        if self.auth is not None:
            request = self.auth(request)
        return request

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:  # type: ignore[override]
        replayable = request.body is None or isinstance(request.body, (bytes, str))
        method = (request.method or "GET").upper()
        if _labels.HEADER not in request.headers:
            value = _labels.header_value(self.current_labels())
            if value:
                request.headers[_labels.HEADER] = value
        attempt = 0
        while True:
            try:
                response = super().send(request, **kwargs)
            except requests.ConnectionError:
                # Refused or reset connections (a Cloud Run instance starting): the request
                # may have been sent, so only idempotent ones are repeated.
                if not replayable or method not in IDEMPOTENT_METHODS or attempt >= self.max_retries:
                    raise
                wait = self._backoff(attempt)
                attempt += 1
                request = self._retrying(request, "connection", attempt, wait)
                continue
            if replayable and attempt < self.max_retries:
                wait = self._retry_wait(response, method, attempt)
                if wait is not None:
                    attempt += 1
                    response.close()
                    request = self._retrying(request, str(response.status_code), attempt, wait)
                    continue
            if credproxy_code(response) is not None and self.raise_credproxy_errors:
                err = self.error_class.from_response(response)
                log.error("%s", err)
                if self.on_credproxy_error is not None:
                    self.on_credproxy_error(err)
                raise err
            return response


def credproxy_session(
    base_url: str,
    audience: Optional[str] = None,
    *,
    impersonate: Optional[str] = None,
    session_class: Type[CredproxySession] = CredproxySession,
    **kwargs,
) -> CredproxySession:
    """A session for credproxy at `base_url`; the token audience defaults to that URL.

    `impersonate`: call as this service account instead of the workload's own identity
    (Composer: the DAG's pipeline service account). Other arguments go to
    `CredproxySession` (`labels`, `max_retries`, `timeout`, ...).
    """
    auth = CredproxyAuth(audience or base_url.rstrip("/"), impersonate=impersonate)
    return session_class(base_url, auth, **kwargs)
