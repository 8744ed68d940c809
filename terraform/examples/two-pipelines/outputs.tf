output "credproxy_url" {
  description = "credproxy's URL: the base URL and the ID-token audience for every pipeline."
  value       = module.credproxy.url
}

output "pipeline_service_accounts" {
  description = "Service account email per pipeline: run the Composer task or Dataflow job as (or impersonating) this account."
  value       = { for name, m in module.pipeline_identity : name => m.email }
}

output "upstream_secrets" {
  description = "Secret resource name per upstream route: add versions here (deploy/RUNBOOK-rotation.md)."
  value       = { for name, m in module.upstream_secret : name => m.secret_name }
}

output "credproxy_config_yaml" {
  description = "The configuration credproxy runs with (no secret values in it); review it in the plan, check it with `credproxy check`."
  value       = module.credproxy_config.config_yaml
}

output "image_repository" {
  description = "Image path for Cloud Build's _IMAGE (REGION-docker.pkg.dev/PROJECT/REPOSITORY/credproxy)."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.credproxy.repository_id}/credproxy"
}

output "alert_policies" {
  description = "Alert policy names, keyed by concern."
  value       = module.monitoring.alert_policy_ids
}
