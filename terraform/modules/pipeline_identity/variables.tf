variable "project_id" {
  description = "Project that holds the pipeline's service account (and the credproxy service)."
  type        = string
}

variable "account_id" {
  description = "Service account id (the part before @): 6-30 lower-case letters, digits or dashes. Used as the caller identity in credproxy's policy."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.account_id))
    error_message = "account_id must be 6-30 characters: lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "display_name" {
  description = "Human-readable name of the service account."
  type        = string
  default     = null
}

variable "description" {
  description = "What the pipeline is and who owns it (shown on the service account)."
  type        = string
  default     = null
}

variable "credproxy_service_name" {
  description = "Name of the credproxy Cloud Run service this pipeline may invoke (the credproxy module's service_name output)."
  type        = string
}

variable "credproxy_location" {
  description = "Region of the credproxy Cloud Run service."
  type        = string
}

variable "token_creators" {
  description = "Principals allowed to mint tokens as this service account (roles/iam.serviceAccountTokenCreator on it only), e.g. a Composer environment's service account, so that a DAG calls credproxy as its own pipeline identity rather than as the shared environment identity."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.token_creators : can(regex("^(serviceAccount|user|group|principal|principalSet):", m))])
    error_message = "Each token creator must be a principal such as serviceAccount:EMAIL."
  }
}
