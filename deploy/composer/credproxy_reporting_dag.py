"""Daily revenue report: an Airflow (Cloud Composer) DAG that reads Stripe and HubSpot
through credproxy. The DAG holds no third-party secret: it sends its service account's
ID token, and credproxy injects the API keys.

Install `credproxy-client[airflow]` in the environment (deploy/client/README.md) and
create the connection `credproxy_default` (type `credproxy`), e.g. as an environment
variable or a Secret Manager backend entry:

    AIRFLOW_CONN_CREDPROXY_DEFAULT='{"conn_type": "credproxy",
      "host": "https://credproxy-123456789012.europe-west1.run.app",
      "extra": {"impersonate": "reporting-dag@acme-data-prod.iam.gserviceaccount.com"}}'

Composer tasks run as the environment's service account. To call credproxy as the
pipeline's own identity (the one credproxy's policy names), the hook impersonates
`impersonate`; the environment's service account holds roles/iam.serviceAccountTokenCreator
on that account only (Terraform: pipeline_identity's token_creators), and the IAM
Credentials API is enabled. Leave `impersonate` out to call as the environment's identity.

Works on Airflow 2.10+ and 3.x. The schedule is a CronDataIntervalTimetable: each run
covers the day before its 06:00 UTC tick, so data_interval_start < data_interval_end on
both versions (a bare cron string is a CronTriggerTimetable on Airflow 3, whose data
intervals are empty). credproxy's permanent refusals (403: no rule allows the call) fail
the task at once with credproxy's message and request_id; transient errors use the retries.
"""

from __future__ import annotations

import pendulum

try:  # Airflow 3
    from airflow.sdk import CronDataIntervalTimetable, dag, task
except ImportError:  # Airflow 2.10, 2.11
    from airflow.decorators import dag, task
    from airflow.timetables.interval import CronDataIntervalTimetable

STRIPE_PAGE = 100


@dag(
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["reporting", "credproxy"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=5)},
)
def credproxy_reporting():
    @task
    def charges(data_interval_start=None, data_interval_end=None) -> dict:
        from credproxy_client.airflow import CredproxyHook

        start, end = int(data_interval_start.timestamp()), int(data_interval_end.timestamp())
        if start >= end:
            raise ValueError(f"empty data interval [{data_interval_start}, {data_interval_end}): nothing to report")
        hook = CredproxyHook()
        params = {"created[gte]": start, "created[lt]": end, "limit": STRIPE_PAGE}
        total, count, pages = 0, 0, 0
        while True:
            page = hook.run("GET", "/stripe/v1/charges", params=params)
            page.raise_for_status()  # an upstream (Stripe) error; credproxy's own raise already
            body = page.json()
            pages += 1
            for charge in body["data"]:
                if charge.get("paid"):
                    total += charge["amount"]
                    count += 1
            if not body.get("has_more"):
                break
            params["starting_after"] = body["data"][-1]["id"]
        print(f"stripe window [{data_interval_start}, {data_interval_end}): {count} paid charges in {pages} pages")
        return {"charges": count, "amount_minor_units": total, "window": [start, end]}

    @task
    def contacts() -> int:
        """Total number of HubSpot contacts: the CRM search API's `total` (a list call's
        page has no total, only its `limit` results)."""
        from credproxy_client.airflow import CredproxyHook

        resp = CredproxyHook().run("POST", "/hubspot/crm/v3/objects/contacts/search", json={"limit": 1})
        resp.raise_for_status()
        return int(resp.json()["total"])

    @task
    def report(revenue: dict, contact_count: int) -> None:
        print(
            f"revenue report: {revenue['charges']} charges, {revenue['amount_minor_units']} minor units, "
            f"{contact_count} contacts in total"
        )

    report(charges(), contacts())


credproxy_reporting()
