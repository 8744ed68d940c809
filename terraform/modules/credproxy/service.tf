resource "google_cloud_run_v2_service" "this" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  ingress             = var.ingress
  labels              = var.labels
  custom_audiences    = var.custom_audiences
  deletion_protection = var.deletion_protection

  # Keep Cloud Run's IAM invoker check on: only principals with roles/run.invoker reach
  # the container, so unauthenticated floods are refused (and never billed) at Google's
  # front end. credproxy then verifies the token in Authorization itself.
  invoker_iam_disabled = false

  template {
    service_account                  = google_service_account.runtime.email
    max_instance_request_concurrency = var.concurrency
    timeout                          = "${var.request_timeout_seconds}s"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    # Direct VPC egress to private addresses only (the shared rate-limit store, from the
    # rate_limit_store module); everything else (upstreams, Google APIs) goes out as before.
    dynamic "vpc_access" {
      for_each = var.vpc_egress == null ? [] : [var.vpc_egress]
      content {
        egress = "PRIVATE_RANGES_ONLY"
        network_interfaces {
          network    = vpc_access.value.network
          subnetwork = vpc_access.value.subnetwork
          tags       = vpc_access.value.network_tags
        }
      }
    }

    containers {
      image = var.image

      # Cloud Run sets PORT from this (do not set PORT yourself); credproxy listens on
      # 0.0.0.0:$PORT because the config has no `listen`.
      ports {
        container_port = 8080
      }

      env {
        name  = "CREDPROXY_CONFIG"
        value = "${local.config_dir}/${local.config_file}"
      }
      env {
        name  = "CREDPROXY_LOG"
        value = var.log_level
      }
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = !var.cpu_always_allocated
        startup_cpu_boost = true
      }

      volume_mounts {
        name       = "config"
        mount_path = local.config_dir
      }

      # Ready = config loaded, JWKS fetched, every route's credential resolved once.
      # Up to 3 minutes, which also covers IAM propagation on a fresh project.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 5
        timeout_seconds       = 3
        failure_threshold     = 36
        http_get {
          path = "/_credproxy/ready"
        }
      }

      # Liveness only says the process serves: a failing store or JWKS endpoint must not
      # restart instances that are serving cached values.
      liveness_probe {
        initial_delay_seconds = 0
        period_seconds        = 15
        timeout_seconds       = 3
        failure_threshold     = 4
        http_get {
          path = "/_credproxy/health"
        }
      }
    }

    volumes {
      name = "config"
      secret {
        secret = google_secret_manager_secret.config.secret_id
        items {
          # A pinned version: a config change is a new version, hence a new revision.
          version = google_secret_manager_secret_version.config.version
          path    = local.config_file
          mode    = 292 # 0444
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    # One owner per field: Cloud Build deploys the image (by digest), Terraform the rest.
    ignore_changes = [
      template[0].containers[0].image,
    ]
  }

  depends_on = [google_secret_manager_secret_iam_member.config_accessor]
}
