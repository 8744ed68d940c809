"""The Airflow provider, against the real Airflow installed in this environment
(deploy/verify.sh installs it: `pip install 'deploy/client[airflow]'`)."""

import json

import pytest

try:
    import airflow  # noqa: F401
except ImportError as e:  # run by deploy/verify.sh in its Airflow venv
    raise ImportError("these tests need Airflow: pip install 'deploy/client[airflow]' (deploy/verify.sh does)") from e

from credproxy_client import CredproxyError, CredproxyTokenError
from credproxy_client.airflow import AirflowCredproxySession, CredproxyHook
from credproxy_client.provider import get_provider_info
from test_session import credproxy_error, scripted, upstream_error

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:
    from airflow.exceptions import AirflowFailException

AUDIENCE = "https://credproxy-123456789012.europe-west1.run.app"


def _token():
    import base64
    import time

    payload = base64.urlsafe_b64encode(json.dumps({"exp": int(time.time()) + 3600}).encode()).rstrip(b"=").decode()
    return f"e30.{payload}.sig"


@pytest.fixture
def conn(monkeypatch):
    """Points connection `credproxy_test` at `url`; a local token stands in for Google's."""
    monkeypatch.setenv("CREDPROXY_ID_TOKEN", _token())

    def make(url, **extra):
        monkeypatch.setenv("AIRFLOW_CONN_CREDPROXY_TEST", json.dumps({"conn_type": "credproxy", "host": url, "extra": extra}))
        return CredproxyHook("credproxy_test", max_retries=1, sleep=lambda s: None)

    return make


def test_provider_info_names_the_connection_type_and_the_hook():
    info = get_provider_info()
    assert info["package-name"] == "credproxy-client"
    (ctype,) = info["connection-types"]
    assert ctype["connection-type"] == "credproxy" == CredproxyHook.conn_type
    module, _, name = ctype["hook-class-name"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is CredproxyHook


def test_the_entry_point_is_registered_when_installed():
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("credproxy_client.")]
    assert found, "credproxy-client is not installed here (pip install 'deploy/client[airflow]')"
    assert found[0].load()()["name"] == "credproxy"


def test_get_conn_reads_host_audience_and_impersonate(conn):
    hook = conn("https://credproxy.example/", audience=AUDIENCE)
    session = hook.get_conn()
    assert isinstance(session, AirflowCredproxySession)
    assert session.base_url == "https://credproxy.example"
    assert session.auth.audience == AUDIENCE
    assert hook.get_conn() is session


def test_run_makes_one_call_with_the_task_labels(conn, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "credproxy_reporting")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "charges")
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "1")
    server = scripted()
    try:
        resp = conn(server.url).run("GET", "/stripe/v1/charges", params={"limit": 1})
        assert resp.json() == {"ok": True}
        seen = server.requests[0]
        assert seen.path == "/stripe/v1/charges?limit=1"
        assert seen.headers["x-credproxy-labels"] == "dag_id=credproxy_reporting, task_id=charges, try_number=1"
    finally:
        server.close()


@pytest.mark.parametrize("status,code", [(401, "unauthenticated"), (403, "forbidden"), (404, "unknown_route")])
def test_permanent_credproxy_errors_fail_the_task_without_retries(conn, status, code):
    server = scripted(credproxy_error(status, code, message="credproxy says why", request_id="req-7"))
    try:
        with pytest.raises(AirflowFailException) as info:
            conn(server.url).run("GET", "/stripe/v1/charges")
        err = info.value
        assert isinstance(err, CredproxyError) and err.status == status
        assert "credproxy says why" in str(err) and "req-7" in str(err)
        assert len(server.requests) == 1
    finally:
        server.close()


def test_transient_credproxy_errors_are_left_to_airflows_retries(conn):
    server = scripted(*[credproxy_error(503, "credential_unavailable")] * 5)
    try:
        with pytest.raises(CredproxyError) as info:
            conn(server.url).run("GET", "/stripe/v1/charges")
        assert info.value.retryable and not isinstance(info.value, AirflowFailException)
    finally:
        server.close()


def test_upstream_errors_are_responses(conn):
    server = scripted(upstream_error(404))
    try:
        assert conn(server.url).run("GET", "/stripe/v1/charges/ch_1").status_code == 404
    finally:
        server.close()


def test_refused_impersonation_fails_the_task_without_retries(conn, monkeypatch, signing_key, metadata):
    from fakes import FakeIam

    iam = FakeIam(signing_key, {}, accounts={"dag@acme.iam.gserviceaccount.com"})
    monkeypatch.setenv("CREDPROXY_IAM_CREDENTIALS_ENDPOINT", iam.url)
    monkeypatch.delenv("CREDPROXY_ID_TOKEN")
    try:
        hook = conn("http://127.0.0.1:9", impersonate="dag@acme.iam.gserviceaccount.com")
        with pytest.raises(AirflowFailException) as info:
            hook.run("GET", "/stripe/v1/charges")
        assert isinstance(info.value, CredproxyTokenError)
        assert "roles/iam.serviceAccountTokenCreator" in str(info.value)
    finally:
        iam.close()


def test_a_connection_without_host_says_what_to_set(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CREDPROXY_EMPTY", json.dumps({"conn_type": "credproxy"}))
    with pytest.raises(AirflowFailException, match="credproxy's URL"):
        CredproxyHook("credproxy_empty").get_conn()
