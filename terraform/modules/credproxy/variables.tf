variable "project_id" {
  description = "Project that hosts the credproxy service, its service accounts and its config secret."
  type        = string
}

variable "region" {
  description = "Cloud Run region, e.g. europe-west1."
  type        = string
}

variable "name" {
  description = "Cloud Run service name. Also prefixes the runtime (NAME-runtime) and push (NAME-events-push) service accounts and the config secret (NAME-config), hence at most 17 characters."
  type        = string
  default     = "credproxy"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,15}[a-z0-9])?$", var.name))
    error_message = "name must be 1-17 lower-case letters, digits or dashes, start with a letter and not end with a dash."
  }
}

variable "image" {
  description = "Container image for the first deployment only. Cloud Build owns the image afterwards (deploys by digest); Terraform ignores later changes to it. The default placeholder answers 200 on every path, so the probes pass until the first real deploy."
  type        = string
  default     = "us-docker.pkg.dev/cloudrun/container/hello"
}

variable "config_yaml" {
  description = "credproxy's configuration document (see terraform/modules/credproxy_config). Stored as a Secret Manager secret and mounted as a file; it names secrets but holds none. Changing it rolls out a new revision."
  type        = string

  validation {
    condition     = can(yamldecode(var.config_yaml)) && can(yamldecode(var.config_yaml).identity.audiences)
    error_message = "config_yaml must be YAML with at least identity.audiences."
  }
}

variable "ingress" {
  description = "Who can reach the service at the network level: INGRESS_TRAFFIC_INTERNAL_ONLY (VPC, Private Google Access, and Pub/Sub push from the same project), INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER, or INGRESS_TRAFFIC_ALL. The IAM invoker check applies in every case."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "min_instances" {
  description = "Instances kept warm. 1 or more avoids a cold start (JWKS fetch, secret warm-up) on the first pipeline call."
  type        = number
  default     = 1

  validation {
    condition     = var.min_instances >= 0 && floor(var.min_instances) == var.min_instances
    error_message = "min_instances must be a whole number of at least 0."
  }
}

variable "max_instances" {
  description = "Upper bound on instances; also bounds Secret Manager access traffic (each instance resolves each secret once per cache TTL)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1 && floor(var.max_instances) == var.max_instances
    error_message = "max_instances must be a whole number of at least 1."
  }
}

variable "concurrency" {
  description = "Requests one instance handles at once (Cloud Run max_instance_request_concurrency). credproxy streams and mostly waits on upstreams, so a high value is fine; keep server.max_in_flight in the config at or above it."
  type        = number
  default     = 80

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000 && floor(var.concurrency) == var.concurrency
    error_message = "concurrency must be a whole number between 1 and 1000."
  }
}

variable "cpu" {
  description = "CPU limit per instance, e.g. \"1\"."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit per instance, e.g. \"512Mi\"."
  type        = string
  default     = "512Mi"
}

variable "cpu_always_allocated" {
  description = "Keep CPU allocated between requests (instance-based billing). credproxy refreshes the JWKS and secrets ahead of expiry in the background; with CPU only during requests those refreshes stall and the first request after a pause pays for them."
  type        = bool
  default     = true
}

variable "request_timeout_seconds" {
  description = "Cloud Run request timeout: the longest a proxied request (including a streamed response) may take."
  type        = number
  default     = 300

  validation {
    condition     = var.request_timeout_seconds >= 1 && var.request_timeout_seconds <= 3600
    error_message = "request_timeout_seconds must be between 1 and 3600."
  }
}

variable "log_level" {
  description = "CREDPROXY_LOG filter for operational logs (stderr); audit entries (stdout) are always written."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["error", "warn", "info", "debug", "trace"], var.log_level)
    error_message = "log_level must be error, warn, info, debug or trace."
  }
}

variable "custom_audiences" {
  description = "Extra audiences Cloud Run accepts besides its own URLs (for a custom domain). Add the same values to identity.audiences in the config."
  type        = list(string)
  default     = []
}

variable "invoker_members" {
  description = "Extra principals given roles/run.invoker, e.g. [\"group:data-platform@acme.com\"] for debugging. Pipelines get theirs from the pipeline_identity module; the push service account gets its own here."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.invoker_members : can(regex("^(serviceAccount|user|group|domain|principal|principalSet):", m))])
    error_message = "Each member must be a principal such as serviceAccount:EMAIL or group:EMAIL (never allUsers or allAuthenticatedUsers)."
  }
}

variable "enable_events" {
  description = "Create the push service account for Secret Manager event notifications (Pub/Sub push to /_credproxy/events/secret-manager) and give it roles/run.invoker."
  type        = bool
  default     = true
}

variable "push_subscription_creators" {
  description = "Principals that create the push subscriptions (usually the Terraform service account, serviceAccount:EMAIL). Creating a subscription with an OIDC token needs iam.serviceAccounts.actAs on the push account: they get roles/iam.serviceAccountUser on that account only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.push_subscription_creators : can(regex("^(serviceAccount|user|group):", m))])
    error_message = "Each creator must be serviceAccount:EMAIL, user:EMAIL or group:EMAIL."
  }
}

variable "grant_pubsub_token_creator" {
  description = "Give the project's Pub/Sub service agent roles/iam.serviceAccountTokenCreator on the push account. Needed only in projects that enabled Pub/Sub before 8 April 2021."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the service until this is set to false and applied."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for the service and the config secret."
  type        = map(string)
  default     = {}
}

variable "vpc_egress" {
  description = "Direct VPC egress (PRIVATE_RANGES_ONLY) to reach private addresses such as the shared rate-limit store: pass the rate_limit_store module's vpc_egress output. null: no VPC egress."
  type = object({
    network      = string
    subnetwork   = string
    network_tags = optional(list(string), [])
  })
  default = null
}
