output "service_name" {
  description = "Cloud Run service name (for pipeline_identity's invoker binding and Cloud Build's _SERVICE)."
  value       = google_cloud_run_v2_service.this.name
}

output "location" {
  description = "Region of the service."
  value       = google_cloud_run_v2_service.this.location
}

output "url" {
  description = "The service's deterministic URL (https://NAME-PROJECT_NUMBER.REGION.run.app): the ID-token audience pipelines use and the config's identity.audiences."
  value       = local.url
}

output "urls" {
  description = "All URLs Cloud Run serves the service on."
  value       = google_cloud_run_v2_service.this.urls
}

output "events_push_endpoint" {
  description = "Push endpoint (and OIDC audience) for Secret Manager event subscriptions."
  value       = "${local.url}${local.events_path}"
}

output "runtime_service_account_email" {
  description = "Email of credproxy's runtime service account; grant it secretAccessor on each upstream secret (upstream_secret does)."
  value       = google_service_account.runtime.email
}

output "runtime_service_account_member" {
  description = "IAM member string (serviceAccount:EMAIL) of the runtime service account."
  value       = google_service_account.runtime.member
}

output "push_service_account_email" {
  description = "Email of the Pub/Sub push service account (null when enable_events is false); list it in events.pubsub_push_callers."
  value       = var.enable_events ? google_service_account.push[0].email : null
}

output "config_secret_id" {
  description = "Resource id of the config secret (projects/P/secrets/NAME-config)."
  value       = google_secret_manager_secret.config.id
}

output "config_version" {
  description = "The config secret version the current revision mounts."
  value       = google_secret_manager_secret_version.config.version
}
