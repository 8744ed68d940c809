variable "project_id" {
  description = "Project that holds the secret, its event topic and the push subscription."
  type        = string
}

variable "secret_id" {
  description = "Secret id (the S in projects/P/secrets/S), e.g. credproxy-stripe. Also names the topic (S-events) and the subscription (S-credproxy-push)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,200}$", var.secret_id))
    error_message = "secret_id must be 1-200 letters, digits, '-' or '_'."
  }
}

variable "labels" {
  description = "Labels for the secret, the topic and the subscription."
  type        = map(string)
  default     = {}
}

variable "rotation_period" {
  description = "How often Secret Manager sends SECRET_ROTATE to the topic, in seconds with an 's' suffix (at least 3600s), e.g. 7776000s for 90 days. Rotation only notifies: something must add the new version (version_adders, or the runbook)."
  type        = string
  default     = "7776000s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.rotation_period)) && try(tonumber(trimsuffix(var.rotation_period, "s")) >= 3600, false)
    error_message = "rotation_period must be whole seconds with an 's' suffix, at least 3600s."
  }
}

variable "next_rotation_time" {
  description = "First rotation reminder, RFC 3339 UTC (e.g. 2026-03-01T09:00:00Z), in the future when applied. Secret Manager advances it after each reminder, so Terraform ignores later drift."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z$", var.next_rotation_time))
    error_message = "next_rotation_time must be RFC 3339 in UTC, e.g. 2026-03-01T09:00:00Z."
  }
}

variable "version_destroy_ttl" {
  description = "Delay before a version marked for destruction is destroyed (e.g. 86400s), so a wrong destroy can be undone. null destroys at once."
  type        = string
  default     = "604800s"

  validation {
    condition     = var.version_destroy_ttl == null || can(regex("^[0-9]+s$", var.version_destroy_ttl))
    error_message = "version_destroy_ttl must be whole seconds with an 's' suffix, or null."
  }
}

variable "accessor_member" {
  description = "credproxy's runtime service account as an IAM member (serviceAccount:EMAIL): it gets roles/secretmanager.secretAccessor on this secret only."
  type        = string

  validation {
    condition     = startswith(var.accessor_member, "serviceAccount:")
    error_message = "accessor_member must be serviceAccount:EMAIL."
  }
}

variable "version_adders" {
  description = "Principals that add new versions (a rotation job, an on-call group): roles/secretmanager.secretVersionAdder on this secret only. They can write values, not read them."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.version_adders : can(regex("^(serviceAccount|user|group|principal|principalSet):", m))])
    error_message = "Each version adder must be a principal such as group:EMAIL."
  }
}

variable "enable_push" {
  description = "Create the push subscription that delivers this secret's events to credproxy (needs push_endpoint and push_service_account_email). A plain bool, so the plan never depends on values known only after apply."
  type        = bool
  default     = true
}

variable "push_endpoint" {
  description = "credproxy's events endpoint, https://CREDPROXY_URL/_credproxy/events/secret-manager (the credproxy module's events_push_endpoint)."
  type        = string
  default     = null

  validation {
    condition     = var.push_endpoint == null || can(regex("^https://[^/]+/_credproxy/events/secret-manager$", var.push_endpoint))
    error_message = "push_endpoint must be https://HOST/_credproxy/events/secret-manager."
  }
}

variable "push_audience" {
  description = "OIDC audience of the push token; must equal events.pubsub_push_audience in credproxy's config. null uses push_endpoint."
  type        = string
  default     = null
}

variable "push_service_account_email" {
  description = "Email of the dedicated push service account (the credproxy module's push_service_account_email). Required with enable_push."
  type        = string
  default     = null
}

variable "topic_kms_key_name" {
  description = "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) to encrypt the event topic with. null uses Google-managed encryption: the messages hold names, never secret values."
  type        = string
  default     = null
}
