output "metric_types" {
  description = "Monitoring metric types of the log-based metrics, keyed by concern (for dashboards)."
  value = {
    decoy_hits             = "logging.googleapis.com/user/${google_logging_metric.decoy_hits.name}"
    auth_denials           = "logging.googleapis.com/user/${google_logging_metric.auth_denials.name}"
    credential_unavailable = "logging.googleapis.com/user/${google_logging_metric.credential_unavailable.name}"
    upstream_5xx           = "logging.googleapis.com/user/${google_logging_metric.upstream_5xx.name}"
    requests               = "logging.googleapis.com/user/${google_logging_metric.requests.name}"
    refusals               = "logging.googleapis.com/user/${google_logging_metric.refusals.name}"
  }
}

output "alert_policy_ids" {
  description = "Alert policy resource names, keyed by concern."
  value = {
    decoy_hits             = google_monitoring_alert_policy.decoy_hits.name
    auth_denials           = google_monitoring_alert_policy.auth_denials.name
    credential_unavailable = google_monitoring_alert_policy.credential_unavailable.name
    upstream_5xx           = google_monitoring_alert_policy.upstream_5xx.name
  }
}

output "log_filters" {
  description = "The Cloud Logging filters behind each metric, to paste into Logs Explorer."
  value       = local.filters
}

output "dashboard_id" {
  description = "The Cloud Monitoring dashboard's resource name."
  value       = google_monitoring_dashboard.this.id
}
