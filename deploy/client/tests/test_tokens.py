"""Token sources beyond the metadata server: impersonation through the IAM Credentials API
(errors that name the account, the role and the Terraform input), and CREDPROXY_ID_TOKEN /
CREDPROXY_ID_TOKEN_FILE for local runs against `credproxy dev`."""

import base64
import json
import time

import pytest

from credproxy_client import CredproxyAuth, CredproxyTokenError
from fakes import FakeIam, unverified_claims

AUDIENCE = "https://credproxy-123456789012.europe-west1.run.app"
TARGET = "reporting-dag@acme-data-test.iam.gserviceaccount.com"


@pytest.fixture
def iam(signing_key, metadata, monkeypatch):
    from conftest import PIPELINE_EMAIL

    # The workload (the metadata server's account) may impersonate TARGET only.
    fake = FakeIam(signing_key, {PIPELINE_EMAIL: {TARGET}}, accounts={TARGET, "other@acme-data-test.iam.gserviceaccount.com"})
    monkeypatch.setenv("CREDPROXY_IAM_CREDENTIALS_ENDPOINT", fake.url)
    monkeypatch.delenv("CREDPROXY_ID_TOKEN", raising=False)
    monkeypatch.delenv("CREDPROXY_ID_TOKEN_FILE", raising=False)
    yield fake
    fake.close()


def test_impersonation_mints_the_target_accounts_token_with_its_email(iam):
    token = CredproxyAuth(AUDIENCE, impersonate=TARGET).token()
    claims = unverified_claims(token)
    assert claims["email"] == TARGET and claims["aud"] == AUDIENCE
    call = iam.calls[-1]
    assert json.loads(call.body) == {"audience": AUDIENCE, "includeEmail": True}


def test_refused_impersonation_names_the_source_the_role_and_the_terraform_input(iam):
    from conftest import PIPELINE_EMAIL

    other = "other@acme-data-test.iam.gserviceaccount.com"
    with pytest.raises(CredproxyTokenError) as info:
        CredproxyAuth(AUDIENCE, impersonate=other).token()
    text = str(info.value)
    assert PIPELINE_EMAIL in text and other in text
    assert "roles/iam.serviceAccountTokenCreator" in text and "token_creators" in text
    assert not info.value.retryable


def test_a_disabled_iam_credentials_api_is_named(iam):
    iam.enabled = False
    with pytest.raises(CredproxyTokenError) as info:
        CredproxyAuth(AUDIENCE, impersonate=TARGET).token()
    assert "iamcredentials.googleapis.com" in str(info.value) and "enable" in str(info.value)


def test_an_unknown_target_account_is_named(iam):
    with pytest.raises(CredproxyTokenError) as info:
        CredproxyAuth(AUDIENCE, impersonate="typo@acme-data-test.iam.gserviceaccount.com").token()
    assert "no such service account" in str(info.value)


def _jwt(exp):
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp, "email": "pipeline@dev"}).encode()).rstrip(b"=").decode()
    return f"e30.{payload}.sig"


def test_credproxy_id_token_wins_for_local_runs(monkeypatch, metadata):
    token = _jwt(int(time.time()) + 3600)
    monkeypatch.setenv("CREDPROXY_ID_TOKEN", token)
    assert CredproxyAuth(AUDIENCE).token() == token
    assert metadata.identity_requests == []


def test_a_token_file_is_read_again_when_the_token_is_due(monkeypatch, tmp_path, metadata):
    monkeypatch.delenv("CREDPROXY_ID_TOKEN", raising=False)
    path = tmp_path / "token"
    first = _jwt(int(time.time()) + 100)  # inside the refresh margin: read again each time
    path.write_text(first + "\n")
    monkeypatch.setenv("CREDPROXY_ID_TOKEN_FILE", str(path))
    auth = CredproxyAuth(AUDIENCE)
    assert auth.token() == first
    second = _jwt(int(time.time()) + 3600)
    path.write_text(second)
    assert auth.token() == second


def test_an_expired_local_token_says_where_to_get_a_new_one(monkeypatch):
    monkeypatch.setenv("CREDPROXY_ID_TOKEN", _jwt(int(time.time()) - 10))
    with pytest.raises(CredproxyTokenError) as info:
        CredproxyAuth(AUDIENCE).token()
    assert "expired" in str(info.value) and "credproxy dev" in str(info.value)
