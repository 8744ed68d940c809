# One secret per upstream API, with:
#   - automatic replication and a rotation reminder (rotation_period, next_rotation_time)
#     published, like every change to the secret, on its own Pub/Sub topic;
#   - roles/secretmanager.secretAccessor for credproxy's runtime service account on this
#     secret only (never project-wide);
#   - a push subscription delivering the events to credproxy, authenticated with an OIDC
#     token of a dedicated push service account (pushes.tf).
# No version is created here: a value in Terraform would sit in its state. Add versions
# with `gcloud secrets versions add` (deploy/RUNBOOK-rotation.md).

# The Secret Manager service agent publishes the secret's events; enabling the API does
# not always create it, this does (idempotent, shared by every upstream).
resource "google_project_service_identity" "secretmanager" {
  provider = google-beta

  project = var.project_id
  service = "secretmanager.googleapis.com"
}

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:Messages carry resource names and event types only, never a secret value; Google-managed encryption suffices. Set topic_kms_key_name for a CMEK.
  project      = var.project_id
  kms_key_name = var.topic_kms_key_name
  name         = "${var.secret_id}-events"
  labels       = var.labels

  # Events are hints to re-read a secret; a day covers any redelivery that matters.
  message_retention_duration = "86400s"
}

resource "google_pubsub_topic_iam_member" "secretmanager_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_project_service_identity.secretmanager.email}"
}

resource "google_secret_manager_secret" "this" {
  project             = var.project_id
  secret_id           = var.secret_id
  labels              = var.labels
  version_destroy_ttl = var.version_destroy_ttl

  replication {
    auto {}
  }

  topics {
    name = google_pubsub_topic.events.id
  }

  rotation {
    rotation_period    = var.rotation_period
    next_rotation_time = var.next_rotation_time
  }

  lifecycle {
    # Secret Manager moves next_rotation_time forward after each reminder; resetting it
    # to the configured (past) value would fail.
    ignore_changes = [rotation[0].next_rotation_time]
  }

  # Secret Manager checks that its agent may publish to the topic when the secret is created.
  depends_on = [google_pubsub_topic_iam_member.secretmanager_publisher]
}

resource "google_secret_manager_secret_iam_member" "credproxy_accessor" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.this.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = var.accessor_member
}

resource "google_secret_manager_secret_iam_member" "version_adders" {
  for_each = toset(var.version_adders)

  project   = var.project_id
  secret_id = google_secret_manager_secret.this.secret_id
  role      = "roles/secretmanager.secretVersionAdder"
  member    = each.value
}
