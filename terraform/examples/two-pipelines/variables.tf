variable "project_id" {
  description = "Project for credproxy, its secrets, the pipelines' service accounts and the monitoring."
  type        = string
}

variable "region" {
  description = "Region for Cloud Run and Artifact Registry, e.g. europe-west1."
  type        = string
}

variable "environment" {
  description = "Environment label written into every audit entry (dev, staging, production)."
  type        = string
  default     = "production"
}

variable "service_name" {
  description = "credproxy's Cloud Run service name (Cloud Build's _SERVICE)."
  type        = string
  default     = "credproxy"
}

variable "artifact_repository" {
  description = "Artifact Registry Docker repository Cloud Build pushes credproxy images to (Cloud Build's _REPOSITORY)."
  type        = string
  default     = "credproxy"
}

variable "ingress" {
  description = "credproxy's ingress: INGRESS_TRAFFIC_INTERNAL_ONLY when every pipeline runs in this project's VPC (with Private Google Access), else INGRESS_TRAFFIC_ALL. The IAM invoker check applies either way."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
}

variable "terraform_member" {
  description = "The principal running terraform apply (serviceAccount:EMAIL): it creates the push subscriptions, so it gets actAs on the push service account."
  type        = string
}

variable "upstreams" {
  description = "Third-party APIs, keyed by route name (the first URL path segment). Each gets one secret with a rotation reminder and credproxy reads it with the given injection."
  type = map(object({
    url = string
    inject = object({
      header = optional(object({
        name   = string
        format = optional(string, "{secret}")
      }))
      query = optional(object({
        name = string
      }))
      basic = optional(object({
        username = string
      }))
    })
    field              = optional(string)
    rotation_period    = optional(string, "7776000s")
    next_rotation_time = string
    version_adders     = optional(list(string), [])
    request_headers = optional(object({
      set    = optional(map(string), {})
      remove = optional(list(string), [])
    }), {})
    response_headers = optional(object({
      remove = optional(list(string), [])
    }), {})
    # Limits per caller and for all callers together (shared by all instances when
    # shared_rate_limits is set, else per instance).
    rate_limit = optional(object({
      per_second = number
      burst      = number
    }))
    route_rate_limit = optional(object({
      per_second = number
      burst      = number
    }))
  }))
}

variable "pipelines" {
  description = "Pipelines, keyed by service account id (6-30 characters). Each gets a service account that may invoke credproxy, and exactly the access listed here: route, methods, paths, optional expiry. token_creators may mint its tokens (a Composer environment's service account)."
  type = map(object({
    description    = string
    token_creators = optional(list(string), [])
    access = list(object({
      route   = string
      methods = list(string)
      paths   = list(string)
      expires = optional(string)
    }))
  }))

  validation {
    condition     = alltrue([for name in keys(var.pipelines) : can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", name))])
    error_message = "Pipeline keys are service account ids: 6-30 lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "decoys" {
  description = "Decoy routes (names no pipeline calls) and decoy callers (identities never to be used): any use is logged at ALERT and pages."
  type = object({
    routes  = optional(list(string), [])
    callers = optional(list(string), [])
  })
  default = {}
}

variable "notification_channels" {
  description = "Monitoring notification channel ids for credproxy's alerts."
  type        = list(string)
  default     = []
}

variable "min_instances" {
  description = "credproxy instances kept warm."
  type        = number
  default     = 1
}

variable "max_instances" {
  description = "Upper bound on credproxy instances."
  type        = number
  default     = 10
}

variable "shared_rate_limits" {
  description = "Count rate limits in one Memorystore for Redis instance shared by all credproxy instances (module rate_limit_store, reached with Direct VPC egress on network/subnetwork). null: limits are per instance. on_backend_failure: local (each instance enforces limit / max_instances while Redis fails), open or closed."
  type = object({
    network            = string
    subnetwork         = string
    network_tags       = optional(list(string), [])
    tier               = optional(string, "STANDARD_HA")
    memory_size_gb     = optional(number, 1)
    on_backend_failure = optional(string, "local")
  })
  default = null
}
