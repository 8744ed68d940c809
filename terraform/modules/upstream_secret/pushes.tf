# Pub/Sub push to credproxy's events endpoint. The subscription's creator needs
# iam.serviceAccounts.actAs on the push account (the credproxy module grants
# roles/iam.serviceAccountUser on that account to push_subscription_creators).

resource "google_pubsub_subscription" "credproxy_push" {
  count = var.enable_push ? 1 : 0

  project = var.project_id
  name    = "${var.secret_id}-credproxy-push"
  topic   = google_pubsub_topic.events.id
  labels  = var.labels

  ack_deadline_seconds       = 20
  message_retention_duration = "86400s"

  push_config {
    push_endpoint = var.push_endpoint

    oidc_token {
      service_account_email = var.push_service_account_email
      audience              = coalesce(var.push_audience, var.push_endpoint)
    }
  }

  # Any non-2xx is redelivered; back off so a restarting credproxy is not hammered.
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  # Never expire for inactivity: a secret may go months without an event.
  expiration_policy {
    ttl = ""
  }

  lifecycle {
    precondition {
      condition     = var.push_endpoint != null && var.push_service_account_email != null
      error_message = "enable_push needs push_endpoint and push_service_account_email."
    }
  }
}
