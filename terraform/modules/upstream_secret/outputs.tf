output "secret_id" {
  description = "The secret's id (S)."
  value       = google_secret_manager_secret.this.secret_id
}

output "secret_name" {
  description = "The secret's resource name, projects/PROJECT_ID/secrets/S (credproxy matches event names by the canonical name it learns on first access)."
  value       = google_secret_manager_secret.this.id
}

output "latest_reference" {
  description = "The credential reference for credproxy's config: projects/PROJECT_ID/secrets/S/versions/latest."
  value       = "${google_secret_manager_secret.this.id}/versions/latest"
}

output "topic_id" {
  description = "The Pub/Sub topic receiving the secret's events (projects/P/topics/S-events)."
  value       = google_pubsub_topic.events.id
}

output "subscription_id" {
  description = "The push subscription to credproxy (null when enable_push is false)."
  value       = var.enable_push ? google_pubsub_subscription.credproxy_push[0].id : null
}
