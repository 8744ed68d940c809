# roles/run.invoker on this service only. Pipelines get theirs from the pipeline_identity
# module (one place per binding, so destroying one never removes another's).

resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  count = var.enable_events ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = google_service_account.push[0].member
}

resource "google_cloud_run_v2_service_iam_member" "extra_invokers" {
  for_each = toset(var.invoker_members)

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = each.value
}
