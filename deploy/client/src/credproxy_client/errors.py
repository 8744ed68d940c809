"""What went wrong, in credproxy's words: errors that name their cause and their fix."""

from __future__ import annotations

from typing import Optional

import requests

#: Codes of answers worth repeating later (the same request may then succeed).
RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})

# What to do about each code credproxy answers with (SPEC, status table).
_FIXES = {
    "unauthenticated": (
        "the ID token was refused: mint it for credproxy's URL (the audience, or the "
        "connection's `audience` extra) with the workload's service account; locally, "
        "take a fresh CREDPROXY_ID_TOKEN from `credproxy dev`"
    ),
    "forbidden": (
        "no rule of credproxy's policy allows this caller, method and path: add one to the "
        "route's `allow` in credproxy's config, or call as the account that has it "
        "(`impersonate`)"
    ),
    "unknown_route": "the first path segment names no route of credproxy: check the path (/ROUTE/...)",
    "not_found": "paths under /_credproxy/ are credproxy's own: call /ROUTE/... instead",
    "bad_request": "send a normalised path (no `..`, `//` or encoded `/`) and a well-formed body",
    "body_too_large": "the body is over the route's `max_body_bytes`: send less, or raise the limit",
    "request_timeout": "the request body stalled: send it without pauses",
    "rate_limited": "over a rate limit: slow down (Retry-After says when to try again)",
    "overloaded": "credproxy is at its limit of requests in flight: retry later",
    "credential_unavailable": "credproxy cannot resolve the route's credential: see credproxy's logs for the secret",
    "rate_limiter_unavailable": "credproxy's shared rate limiter is down: retry later",
    "upstream_unreachable": "credproxy could not reach the upstream API: retry later",
    "upstream_timeout": "the upstream API did not answer within the route's timeout_seconds",
}


class CredproxyError(requests.HTTPError):
    """A response credproxy answered itself (it carries `X-Credproxy-Error`).

    Attributes: `status` (HTTP status), `error` (credproxy's code, e.g. `forbidden`),
    `message` (credproxy's explanation), `request_id` (to find the audit entry),
    `retryable` (whether the same request may succeed later), `response`.
    Upstream errors are not this: they come back as responses, for `raise_for_status()`.
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        request_id: Optional[str],
        *,
        method: str = "",
        url: str = "",
        response: Optional[requests.Response] = None,
    ) -> None:
        self.status = status
        self.error = error
        self.message = message
        self.request_id = request_id
        self.method = method
        self.url = url
        self.retryable = status in RETRYABLE_STATUSES
        super().__init__(self._text(), response=response)

    def _text(self) -> str:
        fix = _FIXES.get(self.error)
        target = f" {self.method} {self.url}" if self.method else ""
        text = f"credproxy {self.status} {self.error}: {self.message} (request_id {self.request_id}{';' if target else ''}{target})"
        return f"{text}. Fix: {fix}" if fix else text

    def __str__(self) -> str:
        return self._text()

    @classmethod
    def from_response(cls, response: requests.Response) -> "CredproxyError":
        """The error of a response carrying `X-Credproxy-Error`."""
        code = response.headers.get("X-Credproxy-Error", "")
        message, request_id = "", response.headers.get("X-Request-Id")
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            message = str(body.get("message") or "")
            request_id = body.get("request_id") or request_id
        request = response.request
        path = ""
        if request is not None and request.path_url:
            path = request.path_url.split("?")[0]
        return cls(
            response.status_code,
            code,
            message or response.reason or "",
            request_id,
            method=(request.method or "") if request is not None else "",
            url=path,
            response=response,
        )

    def __reduce__(self):  # picklable (Beam and Airflow move exceptions between processes)
        return (_rebuild, (type(self), self.status, self.error, self.message, self.request_id, self.method, self.url))


def _rebuild(cls, status, error, message, request_id, method, url):
    return cls(status, error, message, request_id, method=method, url=url)


class CredproxyTokenError(RuntimeError):
    """The workload's ID token for credproxy could not be obtained. The message names the
    account, what refused and how to fix it. `retryable` is false for refusals (IAM
    permissions, a disabled API, an expired local token)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __reduce__(self):
        return (type(self), (str(self),), {"retryable": self.retryable})
