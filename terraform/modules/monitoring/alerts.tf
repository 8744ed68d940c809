resource "google_monitoring_alert_policy" "decoy_hits" {
  project               = var.project_id
  display_name          = "credproxy ${var.service_name}: decoy touched"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels

  conditions {
    display_name = "Any decoy hit"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.decoy_hits.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.caller", "metric.label.route"]
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "credproxy: decoy touched on ${var.service_name}"
    content   = "A request touched a decoy route or came from a decoy identity: no pipeline should ever do this. Treat it as a possible credential or identity compromise: find the entries with `severity=ALERT` in the service's stdout logs, identify the caller and its source, and disable the identity if it is not explained.${local.runbook}"
  }

  alert_strategy {
    auto_close = "3600s"
  }
}

resource "google_monitoring_alert_policy" "auth_denials" {
  project               = var.project_id
  display_name          = "credproxy ${var.service_name}: burst of 401/403"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels

  conditions {
    display_name = "More than ${var.auth_denial_threshold} denials in ${var.alignment_period}"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.auth_denials.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.auth_denial_threshold
      duration        = "0s"
      aggregations {
        alignment_period     = var.alignment_period
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "credproxy: burst of 401/403 on ${var.service_name}"
    content   = "credproxy refused many requests. Group the audit entries by `jsonPayload.reason` and `jsonPayload.caller`: `token_expired`/`audience_mismatch`/`signature_removed` point at a misconfigured client, `forbidden`/`grant_expired` at a policy change or a pipeline calling beyond its grant, unknown callers at probing.${local.runbook}"
  }

  alert_strategy {
    auto_close = "3600s"
  }
}

resource "google_monitoring_alert_policy" "credential_unavailable" {
  project               = var.project_id
  display_name          = "credproxy ${var.service_name}: credential unavailable"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "Any credential_unavailable"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.credential_unavailable.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = var.alignment_period
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.route", "metric.label.secret"]
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "credproxy: credential unavailable on ${var.service_name}"
    content   = "Pipelines get 503 credential_unavailable: credproxy could not resolve the route's secret and its last good value is older than cache_ttl_seconds + max_stale_seconds. Check that the newest version of the secret is ENABLED (a disabled newest version makes versions/latest fail: roll back by adding a version, never by disabling the newest) and that the runtime service account still holds secretAccessor on it.${local.runbook}"
  }

  alert_strategy {
    auto_close = "3600s"
  }
}

resource "google_monitoring_alert_policy" "upstream_5xx" {
  project               = var.project_id
  display_name          = "credproxy ${var.service_name}: upstream 5xx"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels

  conditions {
    display_name = "More than ${var.upstream_5xx_threshold} upstream failures in ${var.alignment_period}"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.upstream_5xx.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.upstream_5xx_threshold
      duration        = "0s"
      aggregations {
        alignment_period     = var.alignment_period
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.route"]
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "credproxy: upstream failures on ${var.service_name}"
    content   = "An upstream API answers 5xx, times out or cannot be reached. Usually the third party's incident: check its status page. If only credproxy sees it, check egress (VPC, firewall, DNS) from the Cloud Run service.${local.runbook}"
  }

  alert_strategy {
    auto_close = "3600s"
  }
}
