# The identity Pub/Sub push subscriptions present to credproxy (OIDC token), for Secret
# Manager event notifications. Dedicated: it can invoke credproxy and do nothing else, and
# credproxy's config lists it as the only accepted pusher (events.pubsub_push_callers).

resource "google_service_account" "push" {
  count = var.enable_events ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-events-push"
  display_name = "credproxy event push (${var.name})"
  description  = "OIDC identity of the Pub/Sub push subscriptions that deliver Secret Manager events to credproxy."
}

# Whoever creates a push subscription with this OIDC identity needs actAs on it.
resource "google_service_account_iam_member" "push_act_as" {
  for_each = var.enable_events ? toset(var.push_subscription_creators) : toset([])

  service_account_id = google_service_account.push[0].name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

resource "google_service_account_iam_member" "pubsub_token_creator" {
  count = var.enable_events && var.grant_pubsub_token_creator ? 1 : 0

  service_account_id = google_service_account.push[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
