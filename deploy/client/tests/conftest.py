"""Fixtures: a fake metadata server that google-auth finds through GCE_METADATA_HOST.

google-auth reads GCE_METADATA_HOST when its metadata module is first imported, so the
server starts, and the variables are set, in pytest_configure, before any test module
(or credproxy_client) is imported.
"""

from __future__ import annotations

import os

import pytest

from fakes import FakeMetadataServer, SigningKey

PIPELINE_EMAIL = "reporting-dag@acme-data-test.iam.gserviceaccount.com"

_state: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    key = SigningKey()
    metadata = FakeMetadataServer(key, PIPELINE_EMAIL)
    _state.update(key=key, metadata=metadata)
    os.environ["GCE_METADATA_HOST"] = metadata.host
    os.environ["GCE_METADATA_IP"] = metadata.host
    os.environ["GCE_METADATA_DETECT_RETRIES"] = "1"
    # Only the metadata server may be the token source here.
    os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    # Nor a local token or an enclosing Airflow task's context.
    for name in list(os.environ):
        if name.startswith(("CREDPROXY_ID_TOKEN", "AIRFLOW_CTX_", "CREDPROXY_IAM_")):
            os.environ.pop(name)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(proxy, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"


def pytest_unconfigure(config: pytest.Config) -> None:
    metadata = _state.get("metadata")
    if metadata is not None:
        metadata.close()


@pytest.fixture
def signing_key() -> SigningKey:
    return _state["key"]


@pytest.fixture
def metadata() -> FakeMetadataServer:
    m: FakeMetadataServer = _state["metadata"]
    m.identity_requests.clear()
    m.rejected.clear()
    m.token_lifetime_seconds = 3600
    return m
