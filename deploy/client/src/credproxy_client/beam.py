"""Beam helper: `CredproxyDoFn` (extra `credproxy-client[beam]`).

    class ListCustomers(CredproxyDoFn):
        def process(self, _):
            yield from self.session.get("/stripe/v1/customers").json()["data"]

    p | beam.ParDo(ListCustomers(url, job="crm-sync", step="ListCustomers"))

One session (one token cache, one connection pool) per worker process, shared by every
instance of the DoFn in it through `apache_beam.utils.shared.Shared`, and closed when the
last of them is torn down. Beam metrics in namespace `credproxy`: `retries` (each retry
the session makes), `denials` (credproxy's 401/403), `errors` (every answer credproxy gave
itself). Calls carry the caller labels `job` and `step` when given.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from .errors import CredproxyError
from .session import CredproxySession, credproxy_session

NAMESPACE = "credproxy"
# Process-wide: `Shared` is a key into a per-process map, so one handle made at import on
# each worker shares one session among every CredproxyDoFn (of any class) in the process.
_SHARED = shared.Shared()


class _Held:
    """The process's session and how many DoFn instances hold it (weak-referenceable,
    as `Shared` requires)."""

    def __init__(self, session: CredproxySession) -> None:
        self.session = session
        self.holders = 0
        self.lock = threading.Lock()


def _count_retry(reason: str) -> None:
    Metrics.counter(NAMESPACE, "retries").inc()


def _count_error(err: CredproxyError) -> None:
    Metrics.counter(NAMESPACE, "errors").inc()
    if err.status in (401, 403):
        Metrics.counter(NAMESPACE, "denials").inc()


class CredproxyDoFn(beam.DoFn):
    """A DoFn with `self.session`, a `CredproxySession` shared per worker process.

    Args: `credproxy_url`; `audience` (default: the URL); `impersonate`; `job`, `step`
    (caller labels; `step` defaults to the class name); `labels` (more caller labels);
    other keyword arguments go to `CredproxySession`.
    """

    def __init__(
        self,
        credproxy_url: str,
        *,
        audience: Optional[str] = None,
        impersonate: Optional[str] = None,
        job: Optional[str] = None,
        step: Optional[str] = None,
        labels: Optional[Dict[str, object]] = None,
        **session_kwargs: Any,
    ) -> None:
        super().__init__()
        self.credproxy_url = credproxy_url
        self.audience = audience
        self.impersonate = impersonate
        self.session_labels = {**(labels or {}), "job": job, "step": step or type(self).__name__}
        self.session_kwargs = session_kwargs
        self._held: Optional[_Held] = None
        self.session: Optional[CredproxySession] = None

    def _make(self) -> _Held:
        return _Held(
            credproxy_session(
                self.credproxy_url,
                self.audience,
                impersonate=self.impersonate,
                airflow_context=False,
                on_retry=_count_retry,
                on_credproxy_error=_count_error,
                **self.session_kwargs,
            )
        )

    def setup(self) -> None:
        held = _SHARED.acquire(self._make, tag=self._tag())
        with held.lock:
            held.holders += 1
        self._held = held
        # A per-instance view: the shared pool and token cache, this DoFn's labels.
        self.session = _LabelledSession(held.session, self.session_labels)

    def _tag(self) -> str:
        return f"{self.credproxy_url}|{self.audience}|{self.impersonate}"

    def teardown(self) -> None:
        held, self._held, self.session = self._held, None, None
        if held is None:
            return
        with held.lock:
            held.holders -= 1
            last = held.holders == 0
        if last:
            held.session.close()


class _LabelledSession:
    """The shared session with this DoFn's labels on each call."""

    def __init__(self, session: CredproxySession, labels: Dict[str, object]) -> None:
        self._session = session
        self._labels = {k: v for k, v in labels.items() if v}
        from . import labels as _labels

        self._header = _labels.header_value(self._labels)

    def request(self, method: str, url: str, **kwargs: Any):
        if self._header:
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("X-Credproxy-Labels", self._header)
            kwargs["headers"] = headers
        return self._session.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any):
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any):
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any):
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any):
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any):
        return self.request("DELETE", url, **kwargs)

    def head(self, url: str, **kwargs: Any):
        return self.request("HEAD", url, **kwargs)

    @property
    def shared(self) -> CredproxySession:
        return self._session
