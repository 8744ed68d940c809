output "url" {
  description = "rate_limits.redis.url: rediss://HOST:PORT of the instance (in-transit encryption)."
  value       = "rediss://${google_redis_instance.this.host}:${google_redis_instance.this.port}"
}

output "auth_reference" {
  description = "rate_limits.redis.auth: the AUTH string's secret reference (versions/latest)."
  value       = "${google_secret_manager_secret.auth.id}/versions/latest"
}

output "ca_bundle_reference" {
  description = "rate_limits.redis.ca_bundle: the server CA's secret reference (versions/latest)."
  value       = "${google_secret_manager_secret.ca.id}/versions/latest"
}

output "vpc_egress" {
  description = "Direct VPC egress for the credproxy module's vpc_egress: the network, subnetwork and tags; egress is PRIVATE_RANGES_ONLY."
  value = {
    network      = var.network
    subnetwork   = var.subnetwork
    network_tags = var.network_tags
  }
}

output "instance_id" {
  description = "The Memorystore instance's resource id."
  value       = google_redis_instance.this.id
}
