import time

import pytest
import requests

from credproxy_client import CredproxyAuth
from fakes import Server, unverified_claims

AUDIENCE = "https://credproxy-123456789012.europe-west1.run.app"


@pytest.fixture
def echo():
    server = Server(lambda req: (200, {"Content-Type": "text/plain"}, b"ok"))
    yield server
    server.close()


def test_sends_the_metadata_token_in_both_authorization_headers(metadata, echo):
    session = requests.Session()
    session.auth = CredproxyAuth(AUDIENCE)

    assert session.get(echo.url + "/stripe/v1/charges").status_code == 200

    seen = echo.requests[0].headers
    assert seen["authorization"].startswith("Bearer ")
    assert seen["x-serverless-authorization"] == seen["authorization"]
    claims = unverified_claims(seen["authorization"][len("Bearer "):])
    assert claims["aud"] == AUDIENCE
    assert claims["email"] == metadata.email


def test_asks_the_metadata_server_as_google_auth_does(metadata, echo):
    session = requests.Session()
    session.auth = CredproxyAuth(AUDIENCE)
    session.get(echo.url + "/x")

    (req,) = metadata.identity_requests
    assert req.headers["metadata-flavor"] == "Google"
    assert req.query == {"audience": AUDIENCE, "format": "full"}
    assert metadata.rejected == []


def test_fake_metadata_server_refuses_requests_without_the_flavor_header(metadata):
    resp = requests.get(
        f"http://{metadata.host}/computeMetadata/v1/instance/service-accounts/default/identity",
        params={"audience": AUDIENCE, "format": "full"},
    )
    assert resp.status_code == 403
    assert resp.headers["Metadata-Flavor"] == "Google"


def test_reuses_a_token_until_the_refresh_margin(metadata, echo):
    session = requests.Session()
    session.auth = CredproxyAuth(AUDIENCE)
    for _ in range(3):
        session.get(echo.url + "/x")

    assert len(metadata.identity_requests) == 1
    tokens = {r.headers["authorization"] for r in echo.requests}
    assert len(tokens) == 1


def test_refreshes_the_token_before_it_expires(metadata, echo):
    now = [time.time()]
    auth = CredproxyAuth(AUDIENCE, refresh_margin_seconds=300, clock=lambda: now[0])
    session = requests.Session()
    session.auth = auth

    session.get(echo.url + "/x")
    first_exp = unverified_claims(echo.requests[0].headers["authorization"][7:])["exp"]

    now[0] = first_exp - 301  # still outside the margin: cached
    session.get(echo.url + "/x")
    assert len(metadata.identity_requests) == 1

    now[0] = first_exp - 299  # inside the margin: fetched again, before expiry
    session.get(echo.url + "/x")
    assert len(metadata.identity_requests) == 2


def test_short_lived_tokens_are_fetched_again_each_time_they_fall_inside_the_margin(metadata, echo):
    metadata.token_lifetime_seconds = 200  # already inside a 300 s margin
    session = requests.Session()
    session.auth = CredproxyAuth(AUDIENCE, refresh_margin_seconds=300)
    session.get(echo.url + "/x")
    session.get(echo.url + "/x")
    assert len(metadata.identity_requests) == 2


def test_rejects_a_token_without_exp():
    auth = CredproxyAuth(AUDIENCE, fetcher=lambda aud: "e30.e30.sig")  # {}.{}
    with pytest.raises(ValueError, match="exp"):
        auth.token()


def test_needs_an_audience_and_one_token_source():
    with pytest.raises(ValueError):
        CredproxyAuth("")
    with pytest.raises(ValueError):
        CredproxyAuth(AUDIENCE, impersonate="x@p.iam.gserviceaccount.com", fetcher=lambda a: "t")


def test_repr_never_shows_the_token(metadata):
    auth = CredproxyAuth(AUDIENCE)
    token = auth.token()
    assert token not in repr(auth)
