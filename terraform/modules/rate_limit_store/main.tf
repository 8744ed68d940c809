# The shared counter of credproxy's rate limits (`rate_limits.backend: redis`):
#   - a Memorystore for Redis instance on the VPC, in-transit encryption with server
#     authentication (rediss://, its own CA) and AUTH enabled;
#   - the AUTH string and the server CA in Secret Manager, each readable by credproxy's
#     runtime service account only (the references go into rate_limits.redis.auth and
#     rate_limits.redis.ca_bundle, so no password is in the config);
#   - credproxy reaches it with Direct VPC egress (PRIVATE_RANGES_ONLY), wired in the
#     credproxy module from this module's `vpc_egress` output.
#
# The AUTH string is in the Terraform state already (google_redis_instance exports it);
# storing it as a secret version adds no new exposure. Keep the state bucket private.

resource "google_redis_instance" "this" {
  project        = var.project_id
  region         = var.region
  name           = var.name
  display_name   = "credproxy shared rate limits"
  tier           = var.tier
  memory_size_gb = var.memory_size_gb
  redis_version  = var.redis_version
  labels         = var.labels

  authorized_network = var.network
  connect_mode       = "DIRECT_PEERING"

  # rediss:// with a server certificate from the instance's own CA, and AUTH.
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  auth_enabled            = true

  # Rate-limit state is a cache: an empty Redis admits a fresh burst, nothing is lost.
  redis_configs = {
    maxmemory-policy = "volatile-ttl"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = var.maintenance_day
      start_time {
        hours   = var.maintenance_hour
        minutes = 0
        seconds = 0
        nanos   = 0
      }
    }
  }
}

resource "google_secret_manager_secret" "auth" {
  project   = var.project_id
  secret_id = "${var.secret_id_prefix}-auth"
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "auth" {
  secret      = google_secret_manager_secret.auth.id
  secret_data = google_redis_instance.this.auth_string
}

resource "google_secret_manager_secret" "ca" {
  project   = var.project_id
  secret_id = "${var.secret_id_prefix}-ca"
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "ca" {
  secret = google_secret_manager_secret.ca.id
  # Every CA the instance may present (two during a server CA rotation).
  secret_data = join("\n", [for c in google_redis_instance.this.server_ca_certs : c.cert])
}

# roles/secretmanager.secretAccessor on these two secrets only, for credproxy only.
resource "google_secret_manager_secret_iam_member" "auth_accessor" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.auth.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = var.accessor_member
}

resource "google_secret_manager_secret_iam_member" "ca_accessor" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.ca.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = var.accessor_member
}
