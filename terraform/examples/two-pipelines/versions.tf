terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.20.0, < 7.0.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.20.0, < 7.0.0"
    }
  }

  # Keep state in a bucket of your own, e.g.:
  # backend "gcs" {
  #   bucket = "acme-data-prod-tfstate"
  #   prefix = "credproxy"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
