# Two pipelines (a read-only reporting DAG on Composer, a read-write CRM sync job on
# Dataflow) calling two upstream APIs through credproxy. Everything the policy says is
# rendered in config.tf from the same variables that create the service accounts and the
# secrets below, so IAM and policy cannot drift apart.
#
# Order of a first deployment: terraform apply (the service starts on a placeholder
# image), then Cloud Build (cloudbuild.yaml) builds, pushes and deploys credproxy by digest.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Cloud Run's deterministic URL, known before the service exists.
  credproxy_url = "https://${var.service_name}-${data.google_project.this.number}.${var.region}.run.app"
  events_path   = "/_credproxy/events/secret-manager"
  labels        = { app = "credproxy", environment = var.environment }
  # The shared rate-limit store's address, known once the instance exists.
  rate_limit_url = var.shared_rate_limits == null ? null : module.rate_limit_store[0].url
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "credproxy" {
  #checkov:skip=CKV_GCP_84:Images hold no secrets (the Dockerfile bakes in none); Google-managed encryption is enough and a CMEK would add a key to operate for no gain.
  project       = var.project_id
  location      = var.region
  repository_id = var.artifact_repository
  format        = "DOCKER"
  description   = "credproxy images, pushed by Cloud Build, tagged by commit"
  labels        = local.labels

  docker_config {
    # A tag names one build forever; deploys use digests anyway.
    immutable_tags = true
  }

  depends_on = [google_project_service.apis]
}

module "credproxy" {
  source = "../../modules/credproxy"

  project_id    = var.project_id
  region        = var.region
  name          = var.service_name
  config_yaml   = module.credproxy_config.config_yaml
  ingress       = var.ingress
  min_instances = var.min_instances
  max_instances = var.max_instances
  labels        = local.labels
  vpc_egress    = var.shared_rate_limits == null ? null : module.rate_limit_store[0].vpc_egress

  enable_events              = true
  push_subscription_creators = [var.terraform_member]

  depends_on = [google_project_service.apis]
}

module "pipeline_identity" {
  source   = "../../modules/pipeline_identity"
  for_each = var.pipelines

  project_id             = var.project_id
  account_id             = each.key
  description            = each.value.description
  credproxy_service_name = module.credproxy.service_name
  credproxy_location     = module.credproxy.location
  token_creators         = each.value.token_creators

  depends_on = [google_project_service.apis]
}

module "upstream_secret" {
  source   = "../../modules/upstream_secret"
  for_each = var.upstreams

  project_id         = var.project_id
  secret_id          = "${var.service_name}-${each.key}"
  labels             = merge(local.labels, { upstream = each.key })
  rotation_period    = each.value.rotation_period
  next_rotation_time = each.value.next_rotation_time
  version_adders     = each.value.version_adders

  accessor_member            = module.credproxy.runtime_service_account_member
  enable_push                = true
  push_endpoint              = module.credproxy.events_push_endpoint
  push_service_account_email = module.credproxy.push_service_account_email

  # The push subscription's creator needs actAs on the push account first.
  depends_on = [google_project_service.apis, module.credproxy]
}

# Shared rate limits: one Memorystore instance counts every instance's requests.
module "rate_limit_store" {
  source = "../../modules/rate_limit_store"
  count  = var.shared_rate_limits == null ? 0 : 1

  project_id       = var.project_id
  region           = var.region
  name             = "${var.service_name}-rate-limits"
  network          = var.shared_rate_limits.network
  subnetwork       = var.shared_rate_limits.subnetwork
  network_tags     = var.shared_rate_limits.network_tags
  tier             = var.shared_rate_limits.tier
  memory_size_gb   = var.shared_rate_limits.memory_size_gb
  secret_id_prefix = "${var.service_name}-redis"
  accessor_member  = module.credproxy.runtime_service_account_member
  labels           = local.labels

  depends_on = [google_project_service.apis]
}

module "monitoring" {
  source = "../../modules/monitoring"

  project_id            = var.project_id
  service_name          = var.service_name
  notification_channels = var.notification_channels

  depends_on = [google_project_service.apis]
}

# config.tf computes callers, secret references and URLs the way Google forms them; these
# must be the names the modules create. A mismatch is reported by plan and apply.
check "policy_matches_iam" {
  assert {
    condition     = alltrue([for name, m in module.pipeline_identity : m.email == local.pipeline_emails[name]])
    error_message = "A pipeline service account email differs from the caller written into credproxy's policy."
  }
  assert {
    condition     = alltrue([for name, m in module.upstream_secret : m.latest_reference == local.secret_refs[name]])
    error_message = "An upstream secret name differs from the reference written into credproxy's config."
  }
  assert {
    condition     = module.credproxy.push_service_account_email == local.push_caller
    error_message = "The push service account differs from events.pubsub_push_callers."
  }
  assert {
    condition     = module.credproxy.url == local.credproxy_url
    error_message = "The credproxy URL differs from identity.audiences."
  }
  assert {
    condition = var.shared_rate_limits == null || (
      try(module.rate_limit_store[0].auth_reference, "") == local.rate_limit_auth &&
      try(module.rate_limit_store[0].ca_bundle_reference, "") == local.rate_limit_ca
    )
    error_message = "The rate-limit store's secrets differ from rate_limits.redis.auth / ca_bundle."
  }
}
