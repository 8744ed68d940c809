variable "environment" {
  description = "Label copied into every audit entry (`environment`), e.g. production."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.environment))
    error_message = "environment must be lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "project_id" {
  description = "Project id written as `project_id`, used for trace ids in audit entries."
  type        = string
}

variable "audiences" {
  description = "Accepted ID-token audiences (`identity.audiences`): credproxy's Cloud Run URL(s) or custom audiences."
  type        = list(string)

  validation {
    condition     = length(var.audiences) > 0 && alltrue([for a in var.audiences : startswith(a, "https://")])
    error_message = "At least one audience is required, and each must be an https URL."
  }
}

variable "cloud_run_invoker_check" {
  description = "Whether Cloud Run's IAM invoker check is on (`identity.cloud_run_invoker_check`). Keep true on Cloud Run."
  type        = bool
  default     = true
}

variable "trusted_proxy_hops" {
  description = "X-Forwarded-For entries to trust for the client address (`server.trusted_proxy_hops`): 1 behind Cloud Run's front end."
  type        = number
  default     = 1

  validation {
    condition     = var.trusted_proxy_hops >= 0 && var.trusted_proxy_hops <= 5 && floor(var.trusted_proxy_hops) == var.trusted_proxy_hops
    error_message = "trusted_proxy_hops must be a whole number between 0 and 5."
  }
}

variable "max_in_flight" {
  description = "Concurrent requests per instance before credproxy answers 503 overloaded (`server.max_in_flight`)."
  type        = number
  default     = 1000

  validation {
    condition     = var.max_in_flight >= 1 && floor(var.max_in_flight) == var.max_in_flight
    error_message = "max_in_flight must be a whole number of at least 1."
  }
}

variable "secrets" {
  description = "Secret cache settings (`secrets`): seconds a resolved value is served, and how long the last good value outlives store failures."
  type = object({
    cache_ttl_seconds = optional(number, 60)
    max_stale_seconds = optional(number, 600)
  })
  default = {}

  validation {
    condition     = var.secrets.cache_ttl_seconds >= 1 && var.secrets.max_stale_seconds >= 0
    error_message = "cache_ttl_seconds must be at least 1 and max_stale_seconds at least 0."
  }
}

variable "events" {
  description = "Secret Manager event push settings (`events`): the push subscription's OIDC audience and the push service account(s). null leaves events off."
  type = object({
    push_audience = string
    push_callers  = list(string)
  })
  default = null

  validation {
    condition     = var.events == null || (startswith(try(var.events.push_audience, ""), "https://") && length(try(var.events.push_callers, [])) > 0)
    error_message = "events.push_audience must be an https URL and push_callers must name at least one service account."
  }
}

variable "decoys" {
  description = "Decoy route names and caller emails (`decoys`): anything touching them is refused and logged at ALERT."
  type = object({
    routes  = optional(list(string), [])
    callers = optional(list(string), [])
  })
  default = {}
}

variable "upstreams" {
  description = "Routes keyed by route name (the first path segment): upstream URL, the full credential reference (projects/P/secrets/S/versions/V, env:NAME or file:/path), how to inject it, and optional header shaping."
  type = map(object({
    url    = string
    secret = string
    field  = optional(string)
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
    request_headers = optional(object({
      set    = optional(map(string), {})
      remove = optional(list(string), [])
    }), {})
    response_headers = optional(object({
      remove = optional(list(string), [])
    }), {})
    timeout_seconds = optional(number)
    # Per caller and for all callers together; shared by every instance with rate_limits.
    rate_limit = optional(object({
      per_second = number
      burst      = number
    }))
    route_rate_limit = optional(object({
      per_second = number
      burst      = number
    }))
  }))

  validation {
    condition     = alltrue([for name in keys(var.upstreams) : can(regex("^[a-z0-9][a-z0-9_-]{0,62}$", name))])
    error_message = "Route names must be lower-case letters, digits, '-' or '_' (they become the first URL path segment)."
  }

  validation {
    condition     = alltrue([for u in values(var.upstreams) : startswith(u.url, "https://")])
    error_message = "Every upstream url must be https."
  }

  validation {
    condition     = alltrue([for u in values(var.upstreams) : length([for k in ["header", "query", "basic"] : k if u.inject[k] != null]) == 1])
    error_message = "Each upstream's inject must set exactly one of header, query or basic."
  }

  validation {
    condition = alltrue([for u in values(var.upstreams) : (
      can(regex("^projects/[^/]+/secrets/[^/]+/versions/[^/]+$", u.secret)) || startswith(u.secret, "env:") || startswith(u.secret, "file:/")
    )])
    error_message = "Each upstream's secret must be projects/P/secrets/S/versions/V, env:NAME or file:/path."
  }
}

variable "grants" {
  description = "Allow rules, one per caller and route: the caller's service account email, the route name, the methods and path patterns (`*` one segment, `**` the rest), and an optional RFC 3339 expiry."
  type = list(object({
    caller  = string
    route   = string
    methods = list(string)
    paths   = list(string)
    expires = optional(string)
  }))

  validation {
    condition = alltrue(flatten([for g in var.grants : [
      for m in g.methods : contains(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], m)
    ]]))
    error_message = "Methods must be among GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (exact, upper case)."
  }

  validation {
    condition     = alltrue([for g in var.grants : length(g.methods) > 0 && length(g.paths) > 0 && alltrue([for p in g.paths : startswith(p, "/")])])
    error_message = "Each grant needs at least one method and one path, and paths start with '/'."
  }

  validation {
    condition     = alltrue([for g in var.grants : can(regex("^[^@\\s]+@[^@\\s]+$", g.caller))])
    error_message = "Each grant's caller must be a service account email."
  }

  validation {
    condition     = alltrue([for g in var.grants : g.expires == null || can(formatdate("YYYY", g.expires))])
    error_message = "expires must be an RFC 3339 timestamp with a zone, e.g. 2026-12-31T00:00:00Z."
  }
}

variable "rate_limits" {
  description = "Shared rate limits (`rate_limits`, backend redis): the rate_limit_store module's url, auth_reference and ca_bundle_reference, the failure mode (local, open or closed) and max_instances (the credproxy module's, required with local). null: limits are per instance."
  type = object({
    url                = string
    auth               = optional(string)
    ca_bundle          = optional(string)
    timeout_ms         = optional(number)
    key_prefix         = optional(string)
    on_backend_failure = optional(string, "local")
    max_instances      = optional(number)
  })
  default = null

  validation {
    condition     = var.rate_limits == null || can(regex("^rediss?://", var.rate_limits.url))
    error_message = "rate_limits.url must be rediss://HOST:PORT (or redis:// to a private address)."
  }

  validation {
    condition     = var.rate_limits == null || contains(["local", "open", "closed"], try(var.rate_limits.on_backend_failure, "local"))
    error_message = "rate_limits.on_backend_failure must be local, open or closed."
  }

  validation {
    condition     = var.rate_limits == null || try(var.rate_limits.on_backend_failure, "local") != "local" || try(var.rate_limits.max_instances >= 1, false)
    error_message = "rate_limits.max_instances (the service's max instances) is required with on_backend_failure = local."
  }
}

variable "shadow_grants" {
  description = "Candidate rules rendered as each route's `shadow_allow`, in the shape of grants: judged for every request and recorded in the audit entry (`shadow`), never enforced. `credproxy report --terraform` proposes them; move them to grants to enforce them."
  type = list(object({
    caller  = string
    route   = string
    methods = list(string)
    paths   = list(string)
    expires = optional(string)
  }))
  default = []

  validation {
    condition = alltrue(flatten([for g in var.shadow_grants : [
      for m in g.methods : contains(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], m)
    ]]))
    error_message = "Methods must be among GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (exact, upper case)."
  }

  validation {
    condition     = alltrue([for g in var.shadow_grants : length(g.methods) > 0 && length(g.paths) > 0 && alltrue([for p in g.paths : startswith(p, "/")])])
    error_message = "Each shadow grant needs at least one method and one path, and paths start with '/'."
  }

  validation {
    condition     = alltrue([for g in var.shadow_grants : can(regex("^[^@\\s]+@[^@\\s]+$", g.caller))])
    error_message = "Each shadow grant's caller must be a service account email."
  }
}
