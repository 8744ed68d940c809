# The config names secrets but holds none, so it may live in state; it is a secret (not
# an env value) so that it arrives as a file, versioned, and rolls out with a revision.
resource "google_secret_manager_secret" "config" {
  project   = var.project_id
  secret_id = "${var.name}-config"
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "config" {
  secret      = google_secret_manager_secret.config.id
  secret_data = var.config_yaml
}

resource "google_secret_manager_secret_iam_member" "config_accessor" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.config.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}
