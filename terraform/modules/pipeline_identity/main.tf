# One service account per pipeline. Its only grant is roles/run.invoker on credproxy:
# everything else it may do against third-party APIs is credproxy policy, rendered from
# the same Terraform values (terraform/modules/credproxy_config). Roles the pipeline's
# own runtime needs (roles/dataflow.worker, ...) are the pipeline team's, not this module's.

resource "google_service_account" "pipeline" {
  project      = var.project_id
  account_id   = var.account_id
  display_name = coalesce(var.display_name, "pipeline ${var.account_id}")
  description  = var.description
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  project  = var.project_id
  location = var.credproxy_location
  name     = var.credproxy_service_name
  role     = "roles/run.invoker"
  member   = google_service_account.pipeline.member
}

# Granted on this service account only, never project-wide.
resource "google_service_account_iam_member" "token_creator" {
  for_each = toset(var.token_creators)

  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = each.value
}
