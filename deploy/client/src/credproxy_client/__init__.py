"""Call credproxy with the workload's own Google ID token.

    from credproxy_client import credproxy_session

    session = credproxy_session("https://credproxy-123456789012.europe-west1.run.app")
    charges = session.get("/stripe/v1/charges", params={"limit": 100}).json()

The token comes from google-auth (`google.oauth2.id_token.fetch_id_token`): the metadata
server on Composer, Dataflow, Cloud Run and GCE, or a service-account key file named by
GOOGLE_APPLICATION_CREDENTIALS; locally, CREDPROXY_ID_TOKEN (or CREDPROXY_ID_TOKEN_FILE)
as `credproxy dev` prints it. It is sent in both `Authorization` and
`X-Serverless-Authorization`: Cloud Run's IAM invoker check consumes the second (and
strips its signature), credproxy verifies the first.

Answers credproxy gives itself raise `CredproxyError` (credproxy's message, request_id and
the fix); upstream responses come back as responses. Airflow: `credproxy_client.airflow`
(extra `[airflow]`); Beam: `credproxy_client.beam` (extra `[beam]`).
"""

from ._version import __version__
from .auth import CredproxyAuth
from .errors import CredproxyError, CredproxyTokenError
from .session import CredproxySession, credproxy_session

__all__ = ["CredproxyAuth", "CredproxyError", "CredproxySession", "CredproxyTokenError", "credproxy_session", "__version__"]
