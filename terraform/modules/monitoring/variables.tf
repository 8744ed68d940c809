variable "project_id" {
  description = "Project where credproxy runs and where the metrics and alert policies are created."
  type        = string
}

variable "service_name" {
  description = "credproxy's Cloud Run service name (its audit entries are this service's stdout). Also prefixes metric names, so several credproxy services can share a project."
  type        = string
}

variable "notification_channels" {
  description = "Monitoring notification channel ids (projects/P/notificationChannels/N) every alert is sent to."
  type        = list(string)
  default     = []
}

variable "auth_denial_threshold" {
  description = "401/403 answers from credproxy itself (decision deny) within alignment_period that make a burst worth an alert."
  type        = number
  default     = 50

  validation {
    condition     = var.auth_denial_threshold >= 1
    error_message = "auth_denial_threshold must be at least 1."
  }
}

variable "upstream_5xx_threshold" {
  description = "Upstream 5xx answers, connect failures and timeouts within alignment_period that raise an alert."
  type        = number
  default     = 10

  validation {
    condition     = var.upstream_5xx_threshold >= 1
    error_message = "upstream_5xx_threshold must be at least 1."
  }
}

variable "alignment_period" {
  description = "Window the counts are summed over, e.g. 300s."
  type        = string
  default     = "300s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.alignment_period)) && try(tonumber(trimsuffix(var.alignment_period, "s")) >= 60, false)
    error_message = "alignment_period must be whole seconds with an 's' suffix, at least 60s."
  }
}

variable "runbook_url" {
  description = "Link put into every alert's documentation (e.g. the rotation runbook in your repository)."
  type        = string
  default     = null
}

variable "prometheus_matchers" {
  description = "Label matchers added to the dashboard's PromQL queries to select this service's series in Managed Service for Prometheus, e.g. job=\"credproxy\" (what your collector sets). Empty: every credproxy series in the project."
  type        = string
  default     = ""
}
