"""Airflow provider: `CredproxyHook` and the `credproxy` connection type (extra
`credproxy-client[airflow]`; Airflow 2.10+ and 3.x).

Connection `credproxy` (default id `credproxy_default`): host = credproxy's URL
(`https://credproxy-123456789012.europe-west1.run.app`); extras `audience` (default: the
URL) and `impersonate` (a service account to call as; Composer tasks otherwise run as the
environment's service account). For example:

    AIRFLOW_CONN_CREDPROXY_DEFAULT='{"conn_type": "credproxy",
        "host": "https://credproxy-123456789012.europe-west1.run.app",
        "extra": {"impersonate": "reporting-dag@acme-data-prod.iam.gserviceaccount.com"}}'

    from credproxy_client.airflow import CredproxyHook

    hook = CredproxyHook()                      # credproxy_conn_id="credproxy_default"
    page = hook.run("GET", "/stripe/v1/charges", params={"limit": 100}).json()
    session = hook.get_conn()                   # the ready CredproxySession

Permanent refusals (credproxy's 400/401/403/404/413, IAM refusing impersonation) raise
errors that are also `AirflowFailException`: the task fails at once instead of burning
its retries. Transient ones (429/502/503/504 after the session's own retries) raise plain
`CredproxyError`, which Airflow retries as usual. Every call carries the task's dag_id,
task_id, run_id and try_number as caller labels (credproxy's audit entry).
"""

from __future__ import annotations

from typing import Any, Dict, Optional
from urllib.parse import urlsplit

import requests

try:  # Airflow 3
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 2.10, 2.11
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

try:  # Airflow 3.1+
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

from .errors import CredproxyError, CredproxyTokenError
from .session import CredproxySession, credproxy_session


class CredproxyFailure(CredproxyError, AirflowFailException):
    """A permanent credproxy refusal: a `CredproxyError` that Airflow does not retry."""


class CredproxyTokenFailure(CredproxyTokenError, AirflowFailException):
    """A permanent token failure (IAM refused impersonation, API disabled): not retried."""


def _fail_fast(err: Exception) -> Exception:
    if isinstance(err, CredproxyError) and not err.retryable and not isinstance(err, AirflowFailException):
        failure = CredproxyFailure(
            err.status, err.error, err.message, err.request_id, method=err.method, url=err.url, response=err.response
        )
        return failure
    if isinstance(err, CredproxyTokenError) and not err.retryable and not isinstance(err, AirflowFailException):
        return CredproxyTokenFailure(str(err))
    return err


class AirflowCredproxySession(CredproxySession):
    """A `CredproxySession` whose permanent errors fail the task without retries."""

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:  # type: ignore[override]
        try:
            return super().send(request, **kwargs)
        except (CredproxyError, CredproxyTokenError) as err:
            failure = _fail_fast(err)
            if failure is err:
                raise
            raise failure from err

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        # The token is fetched while the request is prepared, before send().
        try:
            return super().request(method, url, *args, **kwargs)
        except CredproxyTokenError as err:
            failure = _fail_fast(err)
            if failure is err:
                raise
            raise failure from err


class CredproxyHook(BaseHook):
    """Calls credproxy as the task's identity; see the module docs."""

    conn_name_attr = "credproxy_conn_id"
    default_conn_name = "credproxy_default"
    conn_type = "credproxy"
    hook_name = "credproxy"

    def __init__(self, credproxy_conn_id: str = default_conn_name, *, labels: Optional[Dict[str, object]] = None, **session_kwargs: Any) -> None:
        super().__init__()
        self.credproxy_conn_id = credproxy_conn_id
        self.labels = labels
        self.session_kwargs = session_kwargs
        self._session: Optional[CredproxySession] = None

    @classmethod
    def get_ui_field_behaviour(cls) -> Dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "password", "port"],
            "relabeling": {"host": "credproxy URL"},
            "placeholders": {
                "host": "https://credproxy-123456789012.europe-west1.run.app",
                "extra": '{"audience": "(default: the URL)", "impersonate": "pipeline@PROJECT.iam.gserviceaccount.com"}',
            },
        }

    def _settings(self) -> Dict[str, Optional[str]]:
        conn = self.get_connection(self.credproxy_conn_id)
        host = (conn.host or "").strip()
        if not host:
            raise AirflowFailException(
                f"connection {self.credproxy_conn_id!r} has no host: set it to credproxy's URL "
                "(e.g. https://credproxy-123456789012.europe-west1.run.app)"
            )
        if "://" not in host:
            scheme = conn.schema or "https"
            host = f"{scheme}://{host}"
        if conn.port and not urlsplit(host).port:
            host = f"{host.rstrip('/')}:{conn.port}"
        extra = conn.extra_dejson or {}
        return {
            "url": host.rstrip("/"),
            "audience": extra.get("audience") or None,
            "impersonate": extra.get("impersonate") or None,
        }

    def get_conn(self) -> CredproxySession:
        """The ready session (token source, retries, labels), made once per hook."""
        if self._session is None:
            s = self._settings()
            self._session = credproxy_session(
                s["url"],
                s["audience"],
                impersonate=s["impersonate"],
                labels=self.labels,
                session_class=AirflowCredproxySession,
                **self.session_kwargs,
            )
        return self._session

    def run(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One call: `method` on `path` (`/ROUTE/...`), `kwargs` as for `requests`."""
        return self.get_conn().request(method, path, **kwargs)

    def test_connection(self):
        """The UI's Test button: can the token be minted and credproxy be reached?"""
        try:
            session = self.get_conn()
            session.auth.token()
            resp = requests.get(f"{session.base_url}/_credproxy/health", timeout=10)
            return resp.ok, f"credproxy answered {resp.status_code}; token minted for {session.auth.audience}"
        except Exception as e:  # the UI shows the message
            return False, str(e)
