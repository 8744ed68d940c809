"""Airflow provider metadata (the `apache_airflow_provider` entry point). Imports nothing
from Airflow, so `airflow providers list` can read it cheaply."""

from __future__ import annotations

from ._version import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "credproxy-client",
        "name": "credproxy",
        "description": "Call APIs through credproxy with the task's Google ID token: no third-party secret in Airflow.",
        "versions": [__version__],
        "connection-types": [
            {"connection-type": "credproxy", "hook-class-name": "credproxy_client.airflow.CredproxyHook"},
        ],
    }
