resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = "${var.name}-runtime"
  display_name = "credproxy runtime (${var.name})"
  description  = "Identity of the credproxy Cloud Run service. Holds secretAccessor on its config secret and on each upstream secret (upstream_secret module), nothing project-wide."
}
