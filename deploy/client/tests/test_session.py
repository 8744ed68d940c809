import json
import pickle

import pytest
import requests

from credproxy_client import CredproxyAuth, CredproxyError, CredproxySession, __version__
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


def credproxy_error(status, code, retry_after=None, message="m", request_id="r1"):
    """An answer credproxy gave itself: JSON body and X-Credproxy-Error."""
    headers = {"Content-Type": "application/json", "X-Credproxy-Error": code, "X-Request-Id": request_id}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = json.dumps({"error": code, "message": message, "request_id": request_id}).encode()
    return status, headers, body


def upstream_error(status, body=b"upstream says no", retry_after=None):
    """An upstream's answer passed through: no X-Credproxy-Error, whatever the body says."""
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
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


def test_user_agent_names_the_client_and_its_version(sleeps):
    server = scripted()
    try:
        session_for(server, sleeps).get("/x")
        assert server.requests[0].headers["user-agent"].startswith(f"credproxy-client/{__version__} ")
    finally:
        server.close()


# -- errors ------------------------------------------------------------------------------


def test_credproxy_refusals_raise_with_credproxys_message_and_request_id(sleeps):
    message = "no rule of route `stripe` allows caller composer-env@acme.iam.gserviceaccount.com to GET /v1/charges"
    server = scripted(credproxy_error(403, "forbidden", message=message, request_id="req-42"))
    try:
        with pytest.raises(CredproxyError) as info:
            session_for(server, sleeps).get("/stripe/v1/charges", params={"limit": 1})
        err = info.value
        assert isinstance(err, requests.HTTPError)
        assert (err.status, err.error, err.message, err.request_id, err.retryable) == (403, "forbidden", message, "req-42", False)
        assert err.response is not None and err.response.status_code == 403
        text = str(err)
        assert message in text and "req-42" in text and "GET /stripe/v1/charges" in text
        assert "allow" in text  # the fix: a rule in the route's allow list
        assert len(server.requests) == 1 and sleeps == []
    finally:
        server.close()


@pytest.mark.parametrize("status,code", [(400, "bad_request"), (401, "unauthenticated"), (403, "forbidden"), (404, "unknown_route"), (413, "body_too_large")])
def test_permanent_credproxy_errors_are_never_retried(sleeps, status, code):
    server = scripted(credproxy_error(status, code))
    try:
        with pytest.raises(CredproxyError) as info:
            session_for(server, sleeps).get("/x")
        assert info.value.status == status and not info.value.retryable
        assert len(server.requests) == 1 and sleeps == []
    finally:
        server.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
def test_upstream_errors_pass_through_as_responses(sleeps, status):
    # A body that looks like credproxy's is still the upstream's without the header.
    body = json.dumps({"error": "forbidden", "message": "x", "request_id": "r"}).encode()
    server = scripted(*[upstream_error(status, body)] * 10)
    try:
        resp = session_for(server, sleeps, max_retries=1).get("/x")
        assert resp.status_code == status
        with pytest.raises(requests.HTTPError) as info:
            resp.raise_for_status()
        assert not isinstance(info.value, CredproxyError)
    finally:
        server.close()


def test_raise_credproxy_errors_false_returns_the_response(sleeps):
    server = scripted(credproxy_error(403, "forbidden"))
    try:
        resp = session_for(server, sleeps, raise_credproxy_errors=False).get("/x")
        assert resp.status_code == 403 and resp.headers["X-Credproxy-Error"] == "forbidden"
    finally:
        server.close()


def test_credproxy_error_survives_pickling():
    err = CredproxyError(403, "forbidden", "no rule", "r9", method="GET", url="/s/v1")
    back = pickle.loads(pickle.dumps(err))
    assert (back.status, back.error, back.message, back.request_id, str(back)) == (403, "forbidden", "no rule", "r9", str(err))


def test_hooks_see_retries_and_errors(sleeps):
    server = scripted(credproxy_error(429, "rate_limited", retry_after=1), credproxy_error(403, "forbidden"))
    retries, errors = [], []
    try:
        with pytest.raises(CredproxyError):
            session_for(server, sleeps, on_retry=retries.append, on_credproxy_error=errors.append).get("/x")
        assert retries == ["429"]
        assert [e.error for e in errors] == ["forbidden"]
    finally:
        server.close()


# -- retries -----------------------------------------------------------------------------


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
        with pytest.raises(CredproxyError) as info:
            session_for(server, sleeps, max_retry_after_seconds=30).get("/x")
        assert info.value.retryable
        assert len(server.requests) == 1
        assert sleeps == []
    finally:
        server.close()


def test_gives_up_after_max_retries(sleeps):
    server = scripted(*[credproxy_error(503, "overloaded", retry_after=1)] * 10)
    try:
        with pytest.raises(CredproxyError) as info:
            session_for(server, sleeps, max_retries=3).get("/x")
        assert info.value.error == "overloaded" and info.value.retryable
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


@pytest.mark.parametrize("reply", [credproxy_error(502, "upstream_unreachable"), credproxy_error(504, "upstream_timeout"), upstream_error(502), upstream_error(504)])
def test_retries_gateway_errors_of_idempotent_methods_with_backoff(sleeps, reply):
    server = scripted(reply, reply)
    try:
        resp = session_for(server, sleeps, backoff_seconds=1.0).get("/x")
        assert resp.status_code == 200
        assert len(server.requests) == 3
        assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.5
    finally:
        server.close()


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_never_repeats_a_write_after_a_gateway_error(sleeps, method):
    server = scripted(credproxy_error(502, "upstream_unreachable"))
    try:
        with pytest.raises(CredproxyError) as info:
            session_for(server, sleeps).request(method, "/x", json={"a": 1})
        assert info.value.retryable
        assert len(server.requests) == 1 and sleeps == []
    finally:
        server.close()


def test_retries_connection_errors_of_idempotent_methods(sleeps):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Up(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"up")

        def log_message(self, *a):
            pass

    # Nobody listens on the port at first; the server appears during the first backoff
    # (a Cloud Run instance starting).
    port = free_port()
    started = []

    def sleep(seconds):
        sleeps.append(seconds)
        if not started:
            httpd = ThreadingHTTPServer(("127.0.0.1", port), Up)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            started.append(httpd)

    auth = CredproxyAuth(AUDIENCE, fetcher=lambda aud: _token())
    try:
        session = CredproxySession(f"http://127.0.0.1:{port}", auth, sleep=sleep, backoff_seconds=0.1)
        assert session.get("/x").text == "up"
        assert len(sleeps) == 1
        # A POST is not repeated: the request may have been sent.
        with pytest.raises(requests.ConnectionError):
            CredproxySession(f"http://127.0.0.1:{free_port()}", auth, sleep=sleeps.append).post("/x", json={})
        assert len(sleeps) == 1
    finally:
        for httpd in started:
            httpd.shutdown()
            httpd.server_close()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retries_a_post_that_credproxy_refused_before_forwarding(sleeps):
    server = scripted(credproxy_error(503, "overloaded", retry_after=1))
    try:
        resp = session_for(server, sleeps).post("/hubspot/crm/v3/objects/contacts", json={"a": 1})
        assert resp.status_code == 200
        assert [r.body for r in server.requests] == [b'{"a": 1}', b'{"a": 1}']
    finally:
        server.close()


def test_does_not_repeat_a_post_the_upstream_answered_503(sleeps):
    # Even with a body shaped like credproxy's: only X-Credproxy-Error says credproxy answered.
    body = json.dumps({"error": "overloaded", "message": "m", "request_id": "r"}).encode()
    server = scripted(upstream_error(503, body, retry_after=1))
    try:
        resp = session_for(server, sleeps).post("/hubspot/crm/v3/objects/contacts", json={"a": 1})
        assert resp.status_code == 503
        assert len(server.requests) == 1
    finally:
        server.close()


def test_never_retries_a_streaming_body(sleeps):
    server = scripted(credproxy_error(503, "overloaded", retry_after=1))
    try:
        with pytest.raises(CredproxyError):
            session_for(server, sleeps).put("/x", data=iter([b"chunk"]))
        assert len(server.requests) == 1
    finally:
        server.close()


@pytest.mark.parametrize(
    "value,expected",
    [("0", 0.0), ("7", 7.0), (" 12 ", 12.0), (None, None), ("soon", None), ("-3", None)],
)
def test_parses_retry_after(value, expected):
    assert retry_after_seconds(value) == expected
