terraform {
  # optional() attribute defaults need 1.3; output preconditions 1.2.
  required_version = ">= 1.5.0, < 2.0.0"

  # No providers: this module only computes the configuration document, so it can be
  # planned (and its output checked with `credproxy check`) without any cloud access.
}
