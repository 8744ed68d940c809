# credproxy's policy, rendered from the variables that also create the identities
# (module.pipeline_identity) and the secrets (module.upstream_secret).
#
# Self-contained but for local.credproxy_url, local.events_path and local.rate_limit_url
# (main.tf), and free of
# cloud lookups otherwise, so deploy/verify.sh renders it with terraform.tfvars.example and
# a stand-in project number, and runs `credproxy check` on the result.

locals {
  # Emails and secret names are computed the way Google forms them rather than read
  # from the resources, so the document is known at plan time and reviewable in the plan.
  pipeline_emails = { for name, _ in var.pipelines : name => "${name}@${var.project_id}.iam.gserviceaccount.com" }
  secret_refs     = { for name, _ in var.upstreams : name => "projects/${var.project_id}/secrets/${var.service_name}-${name}/versions/latest" }
  push_caller     = "${var.service_name}-events-push@${var.project_id}.iam.gserviceaccount.com"
  rate_limit_auth = "projects/${var.project_id}/secrets/${var.service_name}-redis-auth/versions/latest"
  rate_limit_ca   = "projects/${var.project_id}/secrets/${var.service_name}-redis-ca/versions/latest"
  events_audience = "${local.credproxy_url}${local.events_path}"
  credproxy_grants = flatten([
    for name, p in var.pipelines : [
      for a in p.access : {
        caller  = local.pipeline_emails[name]
        route   = a.route
        methods = a.methods
        paths   = a.paths
        expires = a.expires
      }
    ]
  ])
}

module "credproxy_config" {
  source = "../../modules/credproxy_config"

  environment             = var.environment
  project_id              = var.project_id
  audiences               = [local.credproxy_url]
  cloud_run_invoker_check = true
  trusted_proxy_hops      = 1
  decoys                  = var.decoys

  events = {
    push_audience = local.events_audience
    push_callers  = [local.push_caller]
  }

  upstreams = {
    for name, u in var.upstreams : name => {
      url              = u.url
      secret           = local.secret_refs[name]
      field            = u.field
      inject           = u.inject
      request_headers  = u.request_headers
      response_headers = u.response_headers
      timeout_seconds  = null
      rate_limit       = u.rate_limit
      route_rate_limit = u.route_rate_limit
    }
  }

  # Shared limits: the store's address (main.tf) and the secret names it creates; with
  # local, each instance enforces limit / max_instances while Redis fails.
  rate_limits = var.shared_rate_limits == null ? null : {
    url                = local.rate_limit_url
    auth               = local.rate_limit_auth
    ca_bundle          = local.rate_limit_ca
    on_backend_failure = var.shared_rate_limits.on_backend_failure
    max_instances      = var.max_instances
  }

  grants = local.credproxy_grants
}
