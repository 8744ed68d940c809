resource "google_logging_metric" "decoy_hits" {
  project     = var.project_id
  name        = "${local.metric_prefix}_decoy_hits"
  description = "credproxy requests that touched a decoy route or came from a decoy caller (audit severity ALERT)."
  filter      = local.filters.decoy_hits

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
      key         = "caller"
      value_type  = "STRING"
      description = "Verified caller email, empty when unauthenticated."
    }
  }

  label_extractors = {
    route  = "EXTRACT(jsonPayload.route)"
    caller = "EXTRACT(jsonPayload.caller)"
  }
}

resource "google_logging_metric" "auth_denials" {
  project     = var.project_id
  name        = "${local.metric_prefix}_auth_denials"
  description = "401 and 403 answers by credproxy itself (bad or missing tokens, callers outside policy)."
  filter      = local.filters.auth_denials

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "reason"
      value_type  = "STRING"
      description = "Audit reason, e.g. token_expired, audience_mismatch, forbidden, grant_expired."
    }
    labels {
      key         = "status"
      value_type  = "INT64"
      description = "HTTP status (401 or 403)."
    }
  }

  label_extractors = {
    reason = "EXTRACT(jsonPayload.reason)"
    status = "EXTRACT(httpRequest.status)"
  }
}

resource "google_logging_metric" "credential_unavailable" {
  project     = var.project_id
  name        = "${local.metric_prefix}_credential_unavailable"
  description = "503 credential_unavailable: a route's secret could not be resolved and no usable cached value was left."
  filter      = local.filters.credential_unavailable

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route whose credential was unavailable."
    }
    labels {
      key         = "secret"
      value_type  = "STRING"
      description = "Secret reference without version (never a value)."
    }
  }

  label_extractors = {
    route  = "EXTRACT(jsonPayload.route)"
    secret = "EXTRACT(jsonPayload.secret)"
  }
}

resource "google_logging_metric" "upstream_5xx" {
  project     = var.project_id
  name        = "${local.metric_prefix}_upstream_5xx"
  description = "Upstream 5xx answers passed back, and credproxy's 502 upstream_unreachable / 504 upstream_timeout."
  filter      = local.filters.upstream_5xx

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "route"
      value_type  = "STRING"
      description = "Route whose upstream failed."
    }
  }

  label_extractors = {
    route = "EXTRACT(jsonPayload.route)"
  }
}
