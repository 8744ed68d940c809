output "config" {
  description = "The configuration as a Terraform object (for tests and further composition)."
  value       = local.config
}

output "config_yaml" {
  description = "The configuration as YAML, ready to store in the config secret and to run `credproxy check` on."
  value       = "${local.header}${yamlencode(local.config)}"

  precondition {
    condition     = alltrue([for g in var.grants : contains(keys(var.upstreams), g.route)])
    error_message = "Every grant must name a route defined in upstreams."
  }

  precondition {
    condition     = alltrue([for g in var.shadow_grants : contains(keys(var.upstreams), g.route)])
    error_message = "Every shadow grant must name a route defined in upstreams."
  }

  precondition {
    condition     = length(setintersection(toset(var.decoys.routes), toset(keys(var.upstreams)))) == 0
    error_message = "A decoy route must not also be a real route."
  }

  precondition {
    condition     = length(setintersection(toset(var.decoys.callers), toset([for g in var.grants : g.caller]))) == 0
    error_message = "A decoy caller must not also hold a grant."
  }
}
