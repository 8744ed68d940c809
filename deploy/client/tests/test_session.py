import json

import pytest

from credproxy_client import CredproxyAuth, CredproxySession
from credproxy_client.session import retry_after_seconds

AUDIENCE = "https://credproxy.example"


def scripted(*replies):
    """A server answering with `replies` in order, then 200."""
    from fakes import Server

    queue = list(replies)

    def handle(req):
        if queue:
            return queue.pop(0)
        return 200, {"Content-Type": "application/json"}, b'{"ok": true}'

    return Server(handle)


def credproxy_error(status, code, retry_after=None):
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = json.dumps({"error": code, "message": "m", "request_id": "r1"}).encode()
    return status, headers, body


@pytest.fixture
def sleeps():
    return []


def session_for(server, sleeps, **kw):
    auth = CredproxyAuth(AUDIENCE, fetcher=lambda aud: _token())
    return CredproxySession(server.url, auth, sleep=sleeps.append, **kw)


def _token():
    import base64
    import time

    payload = base64.urlsafe_b64encode(json.dumps({"exp": int(time.time()) + 3600}).encode()).rstrip(b"=").decode()
    return f"e30.{payload}.sig"


def test_resolves_paths_against_the_base_url(sleeps):
    server = scripted()
    try:
        resp = session_for(server, sleeps).get("/stripe/v1/charges", params={"limit": 3})
        assert resp.status_code == 200
        assert server.requests[0].path == "/stripe/v1/charges?limit=3"
    finally:
        server.close()


def test_retries_429_after_the_retry_after_seconds(sleeps):
    server = scripted(credproxy_error(429, "rate_limited", retry_after=2))
    try:
        resp = session_for(server, sleeps).get("/stripe/v1/charges")
        assert resp.status_code == 200
        assert len(server.requests) == 2
        assert sleeps == [2.0]
    finally:
        server.close()


def test_retries_503_with_an_http_date_retry_after(sleeps):
    from email.utils import formatdate
    import time

    server = scripted((503, {"Retry-After": formatdate(time.time() + 5, usegmt=True)}, b"busy"))
    try:
        resp = session_for(server, sleeps).get("/x")
        assert resp.status_code == 200
        assert len(sleeps) == 1 and 3.0 <= sleeps[0] <= 5.0
    finally:
        server.close()


def test_does_not_wait_longer_than_the_bound(sleeps):
    server = scripted(credproxy_error(503, "overloaded", retry_after=3600))
    try:
        resp = session_for(server, sleeps, max_retry_after_seconds=30).get("/x")
        assert resp.status_code == 503
        assert len(server.requests) == 1
        assert sleeps == []
    finally:
        server.close()


def test_gives_up_after_max_retries(sleeps):
    server = scripted(*[credproxy_error(503, "overloaded", retry_after=1)] * 10)
    try:
        resp = session_for(server, sleeps, max_retries=3).get("/x")
        assert resp.status_code == 503
        assert len(server.requests) == 4
        assert sleeps == [1.0, 1.0, 1.0]
    finally:
        server.close()


def test_backs_off_exponentially_without_retry_after(sleeps):
    server = scripted((503, {}, b""), (503, {}, b""))
    try:
        session_for(server, sleeps, backoff_seconds=1.0).get("/x")
        assert len(sleeps) == 2
        assert 0.5 <= sleeps[0] <= 1.5 and 1.0 <= sleeps[1] <= 3.0
    finally:
        server.close()


def test_retries_a_post_that_credproxy_refused_before_forwarding(sleeps):
    server = scripted(credproxy_error(503, "overloaded", retry_after=1))
    try:
        resp = session_for(server, sleeps).post("/hubspot/crm/v3/objects/contacts", json={"a": 1})
        assert resp.status_code == 200
        assert [r.body for r in server.requests] == [b'{"a": 1}', b'{"a": 1}']
    finally:
        server.close()


def test_does_not_repeat_a_post_the_upstream_answered_503(sleeps):
    server = scripted((503, {"Retry-After": "1", "Content-Type": "text/html"}, b"upstream down"))
    try:
        resp = session_for(server, sleeps).post("/hubspot/crm/v3/objects/contacts", json={"a": 1})
        assert resp.status_code == 503
        assert len(server.requests) == 1
    finally:
        server.close()


def test_never_retries_a_streaming_body(sleeps):
    server = scripted(credproxy_error(503, "overloaded", retry_after=1))
    try:
        resp = session_for(server, sleeps).put("/x", data=iter([b"chunk"]))
        assert resp.status_code == 503
        assert len(server.requests) == 1
    finally:
        server.close()


def test_does_not_retry_other_statuses(sleeps):
    server = scripted(credproxy_error(403, "forbidden"))
    try:
        assert session_for(server, sleeps).get("/x").status_code == 403
        assert len(server.requests) == 1
    finally:
        server.close()


@pytest.mark.parametrize(
    "value,expected",
    [("0", 0.0), ("7", 7.0), (" 12 ", 12.0), (None, None), ("soon", None), ("-3", None)],
)
def test_parses_retry_after(value, expected):
    assert retry_after_seconds(value) == expected
