# Renders credproxy's configuration (SPEC, "Configuration") from typed inputs.
#
# The callers' emails and the secret references come from the same Terraform values that
# create the service accounts and the secrets, so the policy credproxy enforces and the
# IAM Google enforces cannot drift apart. Keys whose value is unset are left out rather
# than written as null, so the document reads like a hand-written one.

locals {
  routes = {
    for name, u in var.upstreams : name => {
      for k, v in {
        upstream = u.url
        credential = {
          for ck, cv in {
            secret = u.secret
            field  = u.field
            inject = { for ik, iv in u.inject : ik => iv if iv != null }
          } : ck => cv if cv != null
        }
        request_headers = (length(u.request_headers.set) + length(u.request_headers.remove)) == 0 ? null : {
          for hk, hv in { set = u.request_headers.set, remove = u.request_headers.remove } : hk => hv if length(hv) > 0
        }
        response_headers = length(u.response_headers.remove) == 0 ? null : { remove = u.response_headers.remove }
        timeout_seconds  = u.timeout_seconds
        rate_limit       = u.rate_limit
        route_rate_limit = u.route_rate_limit
        allow = [
          for g in var.grants : {
            for rk, rv in {
              callers = [g.caller]
              methods = g.methods
              paths   = g.paths
              expires = g.expires
            } : rk => rv if rv != null
          } if g.route == name
        ]
        shadow_allow = length([for g in var.shadow_grants : g if g.route == name]) == 0 ? null : [
          for g in var.shadow_grants : {
            for rk, rv in {
              callers = [g.caller]
              methods = g.methods
              paths   = g.paths
              expires = g.expires
            } : rk => rv if rv != null
          } if g.route == name
        ]
      } : k => v if v != null
    }
  }

  config = {
    for k, v in {
      environment = var.environment
      project_id  = var.project_id
      server = {
        max_in_flight      = var.max_in_flight
        trusted_proxy_hops = var.trusted_proxy_hops
      }
      decoys = (length(var.decoys.routes) + length(var.decoys.callers)) == 0 ? null : {
        for dk, dv in { routes = var.decoys.routes, callers = var.decoys.callers } : dk => dv if length(dv) > 0
      }
      identity = {
        audiences               = var.audiences
        cloud_run_invoker_check = var.cloud_run_invoker_check
      }
      secrets = {
        cache_ttl_seconds = var.secrets.cache_ttl_seconds
        max_stale_seconds = var.secrets.max_stale_seconds
      }
      events = var.events == null ? null : {
        pubsub_push_audience = var.events.push_audience
        pubsub_push_callers  = var.events.push_callers
      }
      rate_limits = var.rate_limits == null ? null : {
        for rk, rv in {
          backend = "redis"
          redis = {
            for sk, sv in {
              url        = var.rate_limits.url
              auth       = var.rate_limits.auth
              ca_bundle  = var.rate_limits.ca_bundle
              timeout_ms = var.rate_limits.timeout_ms
              key_prefix = var.rate_limits.key_prefix
            } : sk => sv if sv != null
          }
          on_backend_failure = var.rate_limits.on_backend_failure
          max_instances      = var.rate_limits.max_instances
        } : rk => rv if rv != null
      }
      routes = local.routes
    } : k => v if v != null
  }

  header = "# Rendered by Terraform (terraform/modules/credproxy_config). Do not edit: change the Terraform variables.\n"
}
