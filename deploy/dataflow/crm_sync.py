"""CRM sync on Dataflow (Apache Beam, Python): Stripe customers -> HubSpot contacts,
through credproxy. The workers run as the pipeline's service account, so the metadata
server mints their ID tokens; no API key is in the job, its options or its logs.

    python crm_sync.py \
      --runner=DataflowRunner --project=acme-data-prod --region=europe-west1 \
      --service_account_email=crm-sync@acme-data-prod.iam.gserviceaccount.com \
      --extra_package=dist/credproxy_client-0.2.0-py3-none-any.whl \
      --credproxy_url=https://credproxy-123456789012.europe-west1.run.app \
      --temp_location=gs://acme-data-prod-dataflow/tmp

Locally (DirectRunner) against `credproxy dev` or a test stack: export CREDPROXY_ID_TOKEN
and pass --credproxy_url.

The service account needs roles/dataflow.worker (the pipeline team grants it) and
roles/run.invoker on credproxy (Terraform: pipeline_identity); what it may do at Stripe
and HubSpot is credproxy's policy. `credproxy_client.beam.CredproxyDoFn` shares one
session per worker process, labels each call with the job and step (credproxy's audit
entry), and counts retries and denials in Beam metrics (namespace `credproxy`).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from credproxy_client.beam import CredproxyDoFn


class CredproxyOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--credproxy_url", required=True, help="credproxy's URL (also the token audience)")


class ListCustomers(CredproxyDoFn):
    def process(self, _):
        params = {"limit": 100}
        while True:
            resp = self.session.get("/stripe/v1/customers", params=params)
            resp.raise_for_status()
            page = resp.json()
            yield from page["data"]
            if not page.get("has_more"):
                return
            params["starting_after"] = page["data"][-1]["id"]


class UpsertContact(CredproxyDoFn):
    def process(self, customer):
        if not customer.get("email"):
            return
        properties = {"email": customer["email"], "firstname": (customer.get("name") or "").split(" ")[0]}
        resp = self.session.post("/hubspot/crm/v3/objects/contacts", json={"properties": properties})
        if resp.status_code == 409:  # exists: update by email
            resp = self.session.patch(
                f"/hubspot/crm/v3/objects/contacts/{customer['email']}",
                params={"idProperty": "email"},
                json={"properties": properties},
            )
        resp.raise_for_status()
        yield customer["email"]


def run(argv=None):
    options = PipelineOptions(argv)
    url = options.view_as(CredproxyOptions).credproxy_url
    job = options.view_as(GoogleCloudOptions).job_name or "crm-sync"
    with beam.Pipeline(options=options) as p:
        (
            p
            | "Start" >> beam.Create([None])
            | "ListCustomers" >> beam.ParDo(ListCustomers(url, job=job, step="ListCustomers"))
            | "Spread" >> beam.Reshuffle()
            | "UpsertContact" >> beam.ParDo(UpsertContact(url, job=job, step="UpsertContact"))
            | "Count" >> beam.combiners.Count.Globally()
            | "Log" >> beam.Map(lambda n: print(f"synced {n} contacts"))
        )


if __name__ == "__main__":
    run()
