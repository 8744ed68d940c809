"""End to end: credproxy_client -> the real `credproxy serve` -> a local upstream.

The ID token comes from the fake metadata server (GCE_METADATA_HOST), signed by the test's
own key, whose JWKS credproxy fetches from the test. The upstream must receive the
injected credential, and neither the caller's token nor the secret may leak into
credproxy's logs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from credproxy_client import CredproxyError, credproxy_session
from fakes import FakeJwks, Server

REPO = Path(__file__).resolve().parents[3]
AUDIENCE = "https://credproxy-123456789012.europe-west1.run.app"
SECRET = "sk_test_e2e_" + "7f3a9c1d5e8b2f40"


def credproxy_binary() -> Path:
    explicit = os.environ.get("CREDPROXY_BIN")
    if explicit:
        return Path(explicit)
    if shutil.which("cargo") is None:
        pytest.skip("no cargo to build credproxy and CREDPROXY_BIN is unset")
    subprocess.run(
        ["cargo", "build", "--locked", "--quiet", "--bin", "credproxy"],
        cwd=REPO,
        check=True,
        timeout=900,
    )
    return REPO / "target" / "debug" / "credproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    from conftest import PIPELINE_EMAIL, _state

    jwks = FakeJwks(_state["key"])
    upstream = Server(lambda req: (200, {"Content-Type": "application/json"}, b'{"contacts": []}'))
    port = free_port()
    workdir = tmp_path_factory.mktemp("credproxy")
    config = workdir / "config.yaml"
    config.write_text(
        "\n".join(
            [
                f'listen: "127.0.0.1:{port}"',
                "environment: e2e",
                "identity:",
                f'  audiences: ["{AUDIENCE}"]',
                f'  jwks_url: "{jwks.url}"',
                "routes:",
                "  crm:",
                f'    upstream: "{upstream.url}/api"',
                "    credential:",
                '      secret: "env:E2E_UPSTREAM_KEY"',
                "      inject:",
                '        header: { name: "Authorization", format: "Bearer {secret}" }',
                "    allow:",
                f'      - callers: ["{PIPELINE_EMAIL}"]',
                '        methods: ["GET", "POST"]',
                '        paths: ["/v1/contacts", "/v1/contacts/*"]',
                "",
            ]
        )
    )
    binary = credproxy_binary()
    subprocess.run([str(binary), "check", "--config", str(config)], check=True, timeout=60)

    stdout = open(workdir / "stdout.log", "wb")
    stderr = open(workdir / "stderr.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(E2E_UPSTREAM_KEY=SECRET, CREDPROXY_LOG="info", GOOGLE_CLOUD_PROJECT="acme-data-test")
    proc = subprocess.Popen([str(binary), "serve", "--config", str(config)], stdout=stdout, stderr=stderr, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"credproxy exited with {proc.returncode}: {(workdir / 'stderr.log').read_text()}")
        try:
            if requests.get(base + "/_credproxy/ready", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("credproxy did not become ready in 30 s")
        time.sleep(0.1)

    yield {"base": base, "upstream": upstream, "workdir": workdir, "proc": proc}

    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    stdout.close()
    stderr.close()
    upstream.close()
    jwks.close()


def audit_entries(workdir: Path) -> list[dict]:
    entries = []
    for line in (workdir / "stdout.log").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass
    return entries


def wait_for_audit(workdir: Path, request_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for entry in audit_entries(workdir):
            if entry.get("request_id") == request_id:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no audit entry for {request_id}")


def test_upstream_receives_the_injected_credential_not_the_callers_token(stack, metadata):
    session = credproxy_session(stack["base"], audience=AUDIENCE)
    resp = session.get("/crm/v1/contacts", params={"limit": "10"})

    assert resp.status_code == 200, resp.text
    assert resp.json() == {"contacts": []}
    seen = stack["upstream"].requests[-1]
    assert seen.path == "/api/v1/contacts?limit=10"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert "x-serverless-authorization" not in seen.headers
    assert len(metadata.identity_requests) == 1


def test_a_write_the_policy_allows_goes_through(stack, metadata):
    session = credproxy_session(stack["base"], audience=AUDIENCE)
    resp = session.post("/crm/v1/contacts/42", json={"email": "a@example.com"})

    assert resp.status_code == 200, resp.text
    seen = stack["upstream"].requests[-1]
    assert (seen.method, seen.path) == ("POST", "/api/v1/contacts/42")
    assert json.loads(seen.body) == {"email": "a@example.com"}
    assert seen.headers["authorization"] == f"Bearer {SECRET}"


def test_a_path_outside_the_grant_raises_credproxys_403_and_is_not_retried(stack, metadata):
    from conftest import PIPELINE_EMAIL

    before = len(stack["upstream"].requests)
    session = credproxy_session(stack["base"], audience=AUDIENCE)
    with pytest.raises(CredproxyError) as info:
        session.delete("/crm/v1/contacts/42")

    err = info.value
    assert (err.status, err.error, err.retryable) == (403, "forbidden", False)
    # credproxy's own words reach str(): which caller, route, method and path.
    assert PIPELINE_EMAIL in str(err) and "DELETE" in str(err) and err.request_id in str(err)
    assert len(stack["upstream"].requests) == before
    entry = wait_for_audit(stack["workdir"], err.request_id)
    assert entry["decision"] == "deny"


def test_a_token_for_another_audience_is_401(stack, metadata):
    session = credproxy_session(stack["base"], audience="https://someone-else.example")
    with pytest.raises(CredproxyError) as info:
        session.get("/crm/v1/contacts")
    assert info.value.status == 401 and info.value.error == "unauthenticated"
    assert "audience" in info.value.message


def test_upstream_errors_come_back_as_responses(stack, metadata):
    stack["upstream"].handler = lambda req: (404, {"Content-Type": "application/json"}, b'{"message": "no such contact"}')
    try:
        session = credproxy_session(stack["base"], audience=AUDIENCE)
        resp = session.get("/crm/v1/contacts/7")
        assert resp.status_code == 404 and "X-Credproxy-Error" not in resp.headers
    finally:
        stack["upstream"].handler = lambda req: (200, {"Content-Type": "application/json"}, b'{"contacts": []}')


def test_labels_reach_the_audit_entry(stack, metadata, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "daily_sales")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "charges")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2026-12-01T06:00:00+00:00")
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "2")
    session = credproxy_session(stack["base"], audience=AUDIENCE, labels={"team": "finance"})
    resp = session.get("/crm/v1/contacts")
    entry = wait_for_audit(stack["workdir"], resp.headers["X-Request-Id"])
    assert entry["logging.googleapis.com/labels"] == {
        "dag_id": "daily_sales",
        "task_id": "charges",
        "run_id": "scheduled__2026-12-01T06:00:00+00:00",
        "try_number": "2",
        "team": "finance",
    }
    assert entry["httpRequest"]["userAgent"].startswith("credproxy-client/")
    # Labels are for credproxy's audit only.
    assert "x-credproxy-labels" not in stack["upstream"].requests[-1].headers


def test_the_audit_entry_names_the_pipeline_and_never_the_secrets(stack, metadata):
    from conftest import PIPELINE_EMAIL

    session = credproxy_session(stack["base"], audience=AUDIENCE)
    resp = session.get("/crm/v1/contacts")
    token = session.auth.token()
    entry = wait_for_audit(stack["workdir"], resp.headers["X-Request-Id"])

    assert entry["caller"] == PIPELINE_EMAIL
    assert entry["decision"] == "allow"
    assert entry["route"] == "crm"
    assert entry["secret"] == "env:E2E_UPSTREAM_KEY"
    logs = (stack["workdir"] / "stdout.log").read_text() + (stack["workdir"] / "stderr.log").read_text()
    assert SECRET not in logs
    assert token not in logs
    assert token.split(".")[2] not in logs


def test_the_client_meets_credproxy_dev(monkeypatch):
    """`credproxy dev` prints CREDPROXY_ID_TOKEN and a Python line; following them works."""
    import re
    import threading

    port = free_port()
    proc = subprocess.Popen(
        [str(credproxy_binary()), "dev", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", "")},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(l.decode() for l in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        token = None
        while token is None and time.monotonic() < deadline:
            found = [re.search(r"export CREDPROXY_ID_TOKEN='([^']+)'", l) for l in list(lines)]
            token = next((m.group(1) for m in found if m), None)
            time.sleep(0.05)
        assert token, "".join(lines)
        python_line = next(l for l in lines if "credproxy_session(" in l)
        assert f"http://127.0.0.1:{port}" in python_line
        monkeypatch.setenv("CREDPROXY_ID_TOKEN", token)
        base = f"http://127.0.0.1:{port}"
        while requests.get(base + "/_credproxy/ready", timeout=1).status_code != 200:
            time.sleep(0.05)
        body = credproxy_session(base).get("/echo/v1/hello").json()
        assert body["headers"]["authorization"] == "Bearer dev-demo-api-key"
        with pytest.raises(CredproxyError) as info:
            credproxy_session(base).get("/nope/x")
        assert info.value.error == "unknown_route"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
