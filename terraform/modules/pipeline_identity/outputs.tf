output "email" {
  description = "The pipeline's service account email: the Composer/Dataflow job's identity and the caller in credproxy's policy."
  value       = google_service_account.pipeline.email
}

output "member" {
  description = "IAM member string (serviceAccount:EMAIL)."
  value       = google_service_account.pipeline.member
}

output "name" {
  description = "Fully qualified service account resource name (projects/P/serviceAccounts/EMAIL)."
  value       = google_service_account.pipeline.name
}
