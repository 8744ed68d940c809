terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # Checked offline against the 6.50 schema (deploy/verify.sh); 7.0 changed defaults,
      # so move the upper bound deliberately.
      version = ">= 6.20.0, < 7.0.0"
    }
  }
}
