"""The Beam helper on the real DirectRunner (deploy/verify.sh installs Beam:
`pip install 'deploy/client[beam]'`)."""

import json


try:
    import apache_beam as beam
except ImportError as e:
    raise ImportError("these tests need Apache Beam: pip install 'deploy/client[beam]' (deploy/verify.sh does)") from e

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from credproxy_client import CredproxyError, CredproxySession
from credproxy_client.beam import CredproxyDoFn
from test_session import credproxy_error

SESSIONS: list = []
CLOSED: list = []


class Fetch(CredproxyDoFn):
    def process(self, path):
        SESSIONS.append(id(self.session.shared))
        try:
            yield path, self.session.get(path).status_code
        except CredproxyError as e:
            yield path, e.error


class Again(Fetch):
    pass


def test_one_session_per_process_metrics_labels_and_teardown(monkeypatch):
    from fakes import Server

    def handle(req):
        if req.path == "/stripe/v1/busy" and not any(r.path == "/stripe/v1/busy" for r in server.requests[:-1]):
            return credproxy_error(429, "rate_limited", retry_after=0)
        if req.path.startswith("/stripe/v1/secret"):
            return credproxy_error(403, "forbidden")
        return 200, {"Content-Type": "application/json"}, b"{}"

    server = Server(handle)
    import base64
    import time

    payload = base64.urlsafe_b64encode(json.dumps({"exp": int(time.time()) + 3600}).encode()).rstrip(b"=").decode()
    monkeypatch.setenv("CREDPROXY_ID_TOKEN", f"e30.{payload}.sig")
    original_close = CredproxySession.close
    monkeypatch.setattr(CredproxySession, "close", lambda self: (CLOSED.append(id(self)), original_close(self)))
    SESSIONS.clear()
    CLOSED.clear()
    try:
        paths = ["/stripe/v1/a", "/stripe/v1/busy", "/stripe/v1/secret"]
        p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
        out = (
            p
            | beam.Create(paths)
            | "One" >> beam.ParDo(Fetch(server.url, job="crm-sync", step="One", backoff_seconds=0.01))
            | beam.Keys()
            | "Two" >> beam.ParDo(Again(server.url, job="crm-sync"))
        )
        assert_that(
            out,
            equal_to([("/stripe/v1/a", 200), ("/stripe/v1/busy", 200), ("/stripe/v1/secret", "forbidden")]),
        )
        result = p.run()
        result.wait_until_finish()

        counters: dict = {}
        for c in result.metrics().query(MetricsFilter().with_namespace("credproxy"))["counters"]:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed  # per step
        assert counters.get("retries") == 1, counters
        assert counters.get("denials") == 2, counters  # /secret, once per ParDo
        assert counters.get("errors") == 2, counters
        # Both DoFns, every bundle: one session in this process, closed once at the end.
        assert len(set(SESSIONS)) == 1, SESSIONS
        assert CLOSED == [SESSIONS[0]]
        labels = {r.headers.get("x-credproxy-labels") for r in server.requests}
        assert labels == {"job=crm-sync, step=One", "job=crm-sync, step=Again"}
    finally:
        server.close()


def test_the_dofn_pickles_without_its_session():
    from apache_beam.internal import pickler

    fn = Fetch("https://credproxy.example", job="j")
    back = pickler.loads(pickler.dumps(fn))
    assert back.session is None and back.credproxy_url == "https://credproxy.example"
