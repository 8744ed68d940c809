variable "project_id" {
  description = "Project that hosts the Memorystore instance and its two secrets (usually credproxy's)."
  type        = string
}

variable "region" {
  description = "Region of the instance: credproxy's Cloud Run region, so the round trip stays in the region."
  type        = string
}

variable "name" {
  description = "Memorystore instance id."
  type        = string
  default     = "credproxy-rate-limits"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,38}[a-z0-9]$", var.name))
    error_message = "name must be 2-40 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "network" {
  description = "VPC network the instance is reachable on (projects/P/global/networks/N); credproxy's Direct VPC egress uses the same network."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork of that network that credproxy's Direct VPC egress takes addresses from (projects/P/regions/R/subnetworks/S), in the same region."
  type        = string
}

variable "network_tags" {
  description = "Network tags on credproxy's egress, for firewall rules that allow it to reach the instance (port 6378)."
  type        = list(string)
  default     = []
}

variable "tier" {
  description = "BASIC (one node) or STANDARD_HA (a replica in another zone, automatic failover). With on_backend_failure: local an outage costs accuracy, not availability, so BASIC is a reasonable saving."
  type        = string
  default     = "STANDARD_HA"

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.tier)
    error_message = "tier must be BASIC or STANDARD_HA."
  }
}

variable "memory_size_gb" {
  description = "Instance memory. Each rate-limit key is about 100 bytes and lives only until its bucket is full again: 1 GB holds millions of active callers."
  type        = number
  default     = 1

  validation {
    condition     = var.memory_size_gb >= 1 && var.memory_size_gb <= 300 && floor(var.memory_size_gb) == var.memory_size_gb
    error_message = "memory_size_gb must be a whole number between 1 and 300."
  }
}

variable "redis_version" {
  description = "Memorystore Redis version (the script needs Redis 5 or later for TIME in scripts with effect replication)."
  type        = string
  default     = "REDIS_7_2"

  validation {
    condition     = can(regex("^REDIS_[5-9]_[0-9X]$", var.redis_version))
    error_message = "redis_version must be REDIS_5_0 or later, e.g. REDIS_7_2."
  }
}

variable "maintenance_day" {
  description = "Day of the weekly maintenance window (a failover on STANDARD_HA, a short outage on BASIC)."
  type        = string
  default     = "SUNDAY"

  validation {
    condition     = contains(["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"], var.maintenance_day)
    error_message = "maintenance_day must be a day of the week in upper case."
  }
}

variable "maintenance_hour" {
  description = "Start hour (UTC) of the weekly maintenance window."
  type        = number
  default     = 3

  validation {
    condition     = var.maintenance_hour >= 0 && var.maintenance_hour <= 23 && floor(var.maintenance_hour) == var.maintenance_hour
    error_message = "maintenance_hour must be a whole hour between 0 and 23."
  }
}

variable "secret_id_prefix" {
  description = "Prefix of the two secret ids: PREFIX-auth (the AUTH string) and PREFIX-ca (the server CA)."
  type        = string
  default     = "credproxy-redis"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,250}$", var.secret_id_prefix))
    error_message = "secret_id_prefix must be letters, digits, '_' or '-'."
  }
}

variable "accessor_member" {
  description = "credproxy's runtime service account (serviceAccount:EMAIL): the only principal given secretAccessor on the two secrets."
  type        = string

  validation {
    condition     = startswith(var.accessor_member, "serviceAccount:")
    error_message = "accessor_member must be serviceAccount:EMAIL."
  }
}

variable "labels" {
  description = "Labels for the instance and the secrets."
  type        = map(string)
  default     = {}
}
