# credproxy container image.
#
# Stages (cargo-chef, as zero2prod's):
#   chef     Rust toolchain + cargo-chef, shared base of the next two
#   planner  reduces the workspace to recipe.json (manifests and lockfile only)
#   builder  builds the dependencies from recipe.json (a cached layer that changes only
#            when Cargo.toml/Cargo.lock change), then the crate itself
#   runtime  distroless cc (glibc, libgcc, CA certificates, no shell, no package manager),
#            user nonroot (65532)
#
# Nothing secret goes into any layer: the config (which names secrets, never holds them)
# is mounted at run time from Secret Manager by Cloud Run and found through
# CREDPROXY_CONFIG; credentials are resolved at run time. `PORT` is set by Cloud Run and
# read by credproxy when the config has no `listen`.
#
# The builder is Debian bookworm, like the runtime (distroless cc-debian12), so the glibc
# the binary links against is the one it runs on.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

# The full (not -slim) image: aws-lc-sys, rustls' crypto backend, compiles C and its build
# finds what it needs there (gcc, make, perl).
FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# Smaller binary without touching Cargo.toml: strip symbols in the release profile.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
COPY --from=planner /app/recipe.json recipe.json
# Build settings (mimalloc's C flags) apply to the dependency build too.
COPY .cargo .cargo
# Dependencies only: this layer is reused until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin credproxy

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
#checkov:skip=CKV_DOCKER_2:Cloud Run ignores HEALTHCHECK and probes /_credproxy/ready and /_credproxy/health itself (terraform/modules/credproxy); distroless has no shell or curl to run one.
LABEL org.opencontainers.image.title="credproxy" \
      org.opencontainers.image.description="Credential-injecting API proxy for data pipelines on Google Cloud"
# The :nonroot variant already runs as nonroot (65532); saying it numerically keeps the
# intent visible to scanners and to runtimes that check runAsNonRoot.
USER 65532:65532
# Owned by root (COPY's default), executable by all: the nonroot user can run it, not change it.
COPY --from=builder /app/target/release/credproxy /credproxy
# Where the credproxy Terraform module mounts the config secret (a file, not an env value).
ENV CREDPROXY_CONFIG=/etc/credproxy/config.yaml
# Documentation only: Cloud Run sets PORT (8080 unless configured otherwise).
EXPOSE 8080
ENTRYPOINT ["/credproxy"]
CMD ["serve"]
