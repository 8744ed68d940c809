# One Cloud Monitoring dashboard for operators who would rather look than read logs:
#   requests by route and decision; denials and 429s by reason (log-based metrics over the
#   audit entries, below); the overhead latency percentiles, secret refresh failures and
#   stale serves, and the shared rate-limit backend's health (PromQL over credproxy's own
#   Prometheus metrics, /_credproxy/metrics).
#
# The PromQL tiles need the metrics in Managed Service for Prometheus, e.g. Cloud Run's
# Prometheus sidecar scraping metrics.listen; without a collector they stay empty while
# the log-based tiles work as they are.

resource "google_logging_metric" "requests" {
  project     = var.project_id
  name        = "${local.metric_prefix}_requests"
  description = "credproxy requests by route, decision and status (one per audit entry)."
  filter      = local.filters.requests

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route named in the request path."
    }
    labels {
      key         = "decision"
      value_type  = "STRING"
      description = "allow or deny."
    }
    labels {
      key         = "status"
      value_type  = "INT64"
      description = "HTTP status returned to the caller."
    }
  }

  label_extractors = {
    route    = "EXTRACT(jsonPayload.route)"
    decision = "EXTRACT(jsonPayload.decision)"
    status   = "EXTRACT(httpRequest.status)"
  }
}

resource "google_logging_metric" "refusals" {
  project     = var.project_id
  name        = "${local.metric_prefix}_refusals"
  description = "credproxy's denials (decision deny) and every 429 or rate_limiter_unavailable 503, by audit reason."
  filter      = local.filters.refusals

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "reason"
      value_type  = "STRING"
      description = "Audit reason, e.g. forbidden, rate_limited, route_rate_limited, caller_concurrency, rate_limiter_unavailable."
    }
    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route named in the request path."
    }
  }

  label_extractors = {
    reason = "EXTRACT(jsonPayload.reason)"
    route  = "EXTRACT(jsonPayload.route)"
  }
}

locals {
  dashboard_resource = "resource.type=\"cloud_run_revision\" resource.label.\"service_name\"=\"${var.service_name}\""

  # A log-based metric's rate per second, summed by `by`.
  log_rate = {
    for k, v in {
      requests = { metric = google_logging_metric.requests.name, by = ["metric.label.\"route\"", "metric.label.\"decision\""] }
      refusals = { metric = google_logging_metric.refusals.name, by = ["metric.label.\"reason\""] }
      } : k => {
      timeSeriesFilter = {
        filter = "metric.type=\"logging.googleapis.com/user/${v.metric}\" ${local.dashboard_resource}"
        aggregation = {
          alignmentPeriod    = "60s"
          perSeriesAligner   = "ALIGN_RATE"
          crossSeriesReducer = "REDUCE_SUM"
          groupByFields      = v.by
        }
      }
    }
  }

  promql = {
    overhead_p50     = "histogram_quantile(0.5, sum by (le) (rate(credproxy_overhead_duration_seconds_bucket{${var.prometheus_matchers}}[5m])))"
    overhead_p95     = "histogram_quantile(0.95, sum by (le) (rate(credproxy_overhead_duration_seconds_bucket{${var.prometheus_matchers}}[5m])))"
    overhead_p99     = "histogram_quantile(0.99, sum by (le) (rate(credproxy_overhead_duration_seconds_bucket{${var.prometheus_matchers}}[5m])))"
    refresh_failures = "sum by (secret) (increase(credproxy_secret_refresh_failures_total{${var.prometheus_matchers}}[5m]))"
    stale_serves     = "sum by (secret) (increase(credproxy_secret_stale_serves_total{${var.prometheus_matchers}}[5m]))"
    backend_up       = "min(credproxy_rate_limit_backend_up{${var.prometheus_matchers}})"
    backend_errors   = "sum(increase(credproxy_rate_limit_backend_errors_total{${var.prometheus_matchers}}[5m]))"
  }

  tiles = [
    { title = "Requests by route and decision (/s)", sets = [{ query = local.log_rate.requests, legend = "" }], kind = "STACKED_AREA" },
    { title = "Denials and 429s by reason (/s)", sets = [{ query = local.log_rate.refusals, legend = "" }], kind = "STACKED_BAR" },
    {
      title = "Overhead latency, excluding the upstream (s)"
      sets = [
        { query = { prometheusQuery = local.promql.overhead_p50 }, legend = "p50" },
        { query = { prometheusQuery = local.promql.overhead_p95 }, legend = "p95" },
        { query = { prometheusQuery = local.promql.overhead_p99 }, legend = "p99" },
      ]
      kind = "LINE"
    },
    {
      title = "Secret refresh failures and stale serves (per 5 min)"
      sets = [
        { query = { prometheusQuery = local.promql.refresh_failures }, legend = "refresh failures {{secret}}" },
        { query = { prometheusQuery = local.promql.stale_serves }, legend = "stale serves {{secret}}" },
      ]
      kind = "LINE"
    },
    {
      title = "Shared rate-limit backend: up (min over instances) and failed calls (per 5 min)"
      sets = [
        { query = { prometheusQuery = local.promql.backend_up }, legend = "up" },
        { query = { prometheusQuery = local.promql.backend_errors }, legend = "failed calls" },
      ]
      kind = "LINE"
    },
  ]

  dashboard = {
    displayName = "credproxy (${var.service_name})"
    mosaicLayout = {
      columns = 48
      tiles = [
        for i, t in local.tiles : {
          xPos   = (i % 2) * 24
          yPos   = floor(i / 2) * 16
          width  = 24
          height = 16
          widget = {
            title = t.title
            xyChart = {
              dataSets = [
                for s in t.sets : {
                  plotType           = t.kind
                  legendTemplate     = s.legend
                  minAlignmentPeriod = "60s"
                  timeSeriesQuery    = s.query
                }
              ]
              yAxis = { scale = "LINEAR" }
            }
          }
        }
      ]
    }
  }
}

resource "google_monitoring_dashboard" "this" {
  project        = var.project_id
  dashboard_json = jsonencode(local.dashboard)
}
