"""Daily revenue report: an Airflow (Cloud Composer) DAG that reads Stripe and HubSpot
through credproxy. The DAG holds no third-party secret: it sends its service account's
ID token, and credproxy injects the API keys.

Install credproxy-client in the environment (deploy/client/README.md) and set the
Airflow variables:
    credproxy_url              https://credproxy-123456789012.europe-west1.run.app
    credproxy_pipeline_account reporting-dag@acme-data-prod.iam.gserviceaccount.com

Composer tasks run as the environment's service account. To call credproxy as the
pipeline's own identity (the one credproxy's policy names), the DAG impersonates
`credproxy_pipeline_account`; the environment's service account holds
roles/iam.serviceAccountTokenCreator on that account only (Terraform: pipeline_identity's
token_creators). Leave the variable empty to call as the environment's identity.
"""

from __future__ import annotations

import pendulum
from airflow.decorators import dag, task
from airflow.models import Variable


def _session():
    from credproxy_client import credproxy_session

    return credproxy_session(
        Variable.get("credproxy_url"),
        impersonate=Variable.get("credproxy_pipeline_account", default_var=None) or None,
    )


@dag(
    schedule="0 6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["reporting", "credproxy"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=5)},
)
def credproxy_reporting():
    @task
    def charges(data_interval_start=None, data_interval_end=None) -> dict:
        session = _session()
        params = {
            "created[gte]": int(data_interval_start.timestamp()),
            "created[lt]": int(data_interval_end.timestamp()),
            "limit": 100,
        }
        total, count, starting_after = 0, 0, None
        while True:
            if starting_after:
                params["starting_after"] = starting_after
            resp = session.get("/stripe/v1/charges", params=params)
            resp.raise_for_status()
            page = resp.json()
            for charge in page["data"]:
                if charge.get("paid"):
                    total += charge["amount"]
                    count += 1
            if not page.get("has_more"):
                break
            starting_after = page["data"][-1]["id"]
        return {"charges": count, "amount_minor_units": total}

    @task
    def contacts() -> int:
        session = _session()
        resp = session.get("/hubspot/crm/v3/objects/contacts", params={"limit": 1})
        resp.raise_for_status()
        return resp.json().get("total", len(resp.json().get("results", [])))

    @task
    def report(revenue: dict, contact_count: int) -> None:
        print(f"revenue report: {revenue['charges']} charges, {revenue['amount_minor_units']} minor units, {contact_count} contacts")

    report(charges(), contacts())


credproxy_reporting()
