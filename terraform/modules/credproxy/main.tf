# credproxy on Cloud Run (v2), with:
#   serviceaccount.tf  the runtime identity (and nothing granted to it here but its config)
#   config.tf          the config document as a Secret Manager secret, mounted as a file
#   service.tf         the Cloud Run service: probes, scaling, ingress, invoker check on
#   events.tf          the Pub/Sub push identity for Secret Manager event notifications
#   iam.tf             who may invoke the service

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  config_dir  = "/etc/credproxy"
  config_file = "config.yaml"

  # Cloud Run's deterministic URL, known before the service exists (so the config can
  # name it as the audience): https://SERVICE-PROJECT_NUMBER.REGION.run.app
  url = "https://${var.name}-${data.google_project.this.number}.${var.region}.run.app"

  events_path = "/_credproxy/events/secret-manager"
}
