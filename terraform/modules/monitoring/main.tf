# Log-based metrics over credproxy's audit entries (SPEC, "Audit entry": one JSON line per
# request on the service's stdout, so severity and httpRequest become LogEntry fields and
# the rest is jsonPayload), and an alert policy on each:
#   metrics.tf  the four counters
#   alerts.tf   the policies
#   dashboard.tf  two more counters (requests, refusals) and the dashboard

locals {
  audit_filter = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${var.service_name}\"",
    "logName=\"projects/${var.project_id}/logs/run.googleapis.com%2Fstdout\"",
  ])

  filters = {
    # Severity ALERT is used for decoy hits and nothing else.
    decoy_hits = "${local.audit_filter} AND severity=ALERT"
    # credproxy's own refusals (an upstream's 401/403 passed through has decision allow).
    auth_denials = "${local.audit_filter} AND jsonPayload.decision=\"deny\" AND (httpRequest.status=401 OR httpRequest.status=403)"
    # The route's secret could not be resolved and no usable cached value was left.
    credential_unavailable = "${local.audit_filter} AND jsonPayload.reason=\"credential_unavailable\""
    # Upstream 5xx passed back, and credproxy's own 502/504 for the upstream.
    upstream_5xx = "${local.audit_filter} AND (jsonPayload.upstream_status>=500 OR jsonPayload.reason=\"upstream_unreachable\" OR jsonPayload.reason=\"upstream_timeout\")"
    # Every audit entry (dashboard.tf).
    requests = local.audit_filter
    # credproxy's refusals and rate limiting, by reason (dashboard.tf).
    refusals = "${local.audit_filter} AND (jsonPayload.decision=\"deny\" OR httpRequest.status=429 OR jsonPayload.reason=\"rate_limiter_unavailable\")"
  }

  metric_prefix = replace(var.service_name, "-", "_")

  runbook = var.runbook_url == null ? "" : "\n\nRunbook: ${var.runbook_url}"
}
