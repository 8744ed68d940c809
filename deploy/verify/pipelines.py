"""Run the Composer DAG and the Dataflow example for real against the real credproxy.

    python deploy/verify/pipelines.py --credproxy BIN --airflow-python PY --beam-python PY

Starts, on 127.0.0.1: a fake JWKS, two fake metadata servers (the Composer environment's
identity and the Dataflow workers'), a fake IAM Credentials API, fake Stripe and HubSpot
APIs, and `credproxy serve` with a policy for the pipelines. Then, each a check that
prints PASS or FAIL:

  airflow-provider  `airflow providers list` shows credproxy-client (entry point)
  airflow-dag       `airflow dags test credproxy_reporting`: every task succeeds, the
                    Stripe window is non-empty and the HubSpot count is the real total
  airflow-labels    the run's audit entries carry dag_id, task_id, run_id, try_number
  airflow-denied    the DAG impersonating an account no rule allows: `charges` fails at
                    once (one try, no 5-minute retries), its log shows credproxy's message
                    and the request_id of the audit entry
  beam-directrunner the Dataflow example on the DirectRunner upserts every customer,
                    with job/step labels in the audit entries

Exit 0 when all pass. Needs only the standard library here; the interpreters given run
Airflow and Beam (deploy/verify.sh installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "client" / "tests"))

from fakes import FakeIam, FakeJwks, FakeMetadataServer, Server, SigningKey  # noqa: E402

PROJECT = "acme-data-test"
COMPOSER_ENV = f"composer-env@{PROJECT}.iam.gserviceaccount.com"
REPORTING = f"reporting-dag@{PROJECT}.iam.gserviceaccount.com"
INTRUDER = f"intruder@{PROJECT}.iam.gserviceaccount.com"
CRM_SYNC = f"crm-sync@{PROJECT}.iam.gserviceaccount.com"
AUDIENCE = "https://credproxy-123456789012.europe-west1.run.app"
STRIPE_KEY = "sk_test_verify_" + "51c0ffee"
HUBSPOT_KEY = "pat-verify-" + "9d7e1a"
HUBSPOT_TOTAL = 4242
# `airflow dags test` logical date: the CronDataIntervalTimetable run for the 06:00 tick
# of 2026-11-30 covers 2026-11-29T06:00 .. 2026-11-30T06:00.
LOGICAL_DATE = "2026-11-30T06:00:00+00:00"
WINDOW = (
    int(datetime(2026, 11, 29, 6, tzinfo=timezone.utc).timestamp()),
    int(datetime(2026, 11, 30, 6, tzinfo=timezone.utc).timestamp()),
)

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str) -> bool:
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


# -- fake upstream APIs ------------------------------------------------------------------------


def stripe_charges() -> list[dict]:
    """500 charges, one every 10 minutes from 2026-11-27T00:00Z on: some inside the
    window, some outside, a few unpaid."""
    start = int(datetime(2026, 11, 27, tzinfo=timezone.utc).timestamp())
    return [
        {"id": f"ch_{i:04d}", "amount": 100 + i, "paid": i % 7 != 0, "created": start + i * 600}
        for i in range(500)
    ]


def make_stripe(charges: list[dict]) -> Server:
    customers = [
        {"id": "cus_1", "email": "ada@example.com", "name": "Ada Lovelace"},
        {"id": "cus_2", "email": "alan@example.com", "name": "Alan Turing"},
        {"id": "cus_3", "email": "grace@example.com", "name": "Grace Hopper"},
        {"id": "cus_4", "email": None, "name": "No Email"},
    ]

    def page(items: list[dict], q: dict) -> bytes:
        limit = int(q.get("limit", 10))
        after = q.get("starting_after")
        if after:
            idx = next(i for i, c in enumerate(items) if c["id"] == after)
            items = items[idx + 1 :]
        return json.dumps({"object": "list", "data": items[:limit], "has_more": len(items) > limit}).encode()

    def handle(req):
        if req.headers.get("authorization") != f"Bearer {STRIPE_KEY}":
            return 401, {"Content-Type": "application/json"}, b'{"error": {"message": "Invalid API Key"}}'
        path, q = urlsplit(req.path).path, {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}
        if path == "/v1/charges":
            gte, lt = int(q.get("created[gte]", 0)), int(q.get("created[lt]", 2**40))
            return 200, {"Content-Type": "application/json"}, page([c for c in charges if gte <= c["created"] < lt], q)
        if path == "/v1/customers":
            return 200, {"Content-Type": "application/json"}, page(customers, q)
        return 404, {"Content-Type": "application/json"}, b'{"error": {"message": "no such path"}}'

    return Server(handle)


def make_hubspot() -> Server:
    existing = {"alan@example.com"}

    def handle(req):
        if req.headers.get("authorization") != f"Bearer {HUBSPOT_KEY}":
            return 401, {"Content-Type": "application/json"}, b'{"message": "bad token"}'
        path = urlsplit(req.path).path
        if req.method == "POST" and path == "/crm/v3/objects/contacts/search":
            limit = json.loads(req.body or b"{}").get("limit", 10)
            results = [{"id": str(i)} for i in range(min(limit, HUBSPOT_TOTAL))]
            return 200, {"Content-Type": "application/json"}, json.dumps({"total": HUBSPOT_TOTAL, "results": results}).encode()
        if req.method == "POST" and path == "/crm/v3/objects/contacts":
            email = json.loads(req.body)["properties"]["email"]
            if email in existing:
                return 409, {"Content-Type": "application/json"}, b'{"message": "Contact already exists"}'
            existing.add(email)
            return 201, {"Content-Type": "application/json"}, json.dumps({"id": email}).encode()
        if req.method == "PATCH" and path.startswith("/crm/v3/objects/contacts/"):
            return 200, {"Content-Type": "application/json"}, b'{"id": "updated"}'
        return 404, {"Content-Type": "application/json"}, b'{"message": "not found"}'

    return Server(handle)


# -- credproxy ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_yaml(port: int, jwks: FakeJwks, stripe: Server, hubspot: Server) -> str:
    return f"""
listen: "127.0.0.1:{port}"
environment: verify
identity:
  audiences: ["{AUDIENCE}", "http://127.0.0.1:{port}"]
  jwks_url: "{jwks.url}"
routes:
  stripe:
    upstream: "{stripe.url}"
    credential:
      secret: "env:STRIPE_KEY"
      inject:
        header: {{ name: "Authorization", format: "Bearer {{secret}}" }}
    allow:
      - callers: ["{REPORTING}"]
        methods: ["GET"]
        paths: ["/v1/charges"]
      - callers: ["{CRM_SYNC}"]
        methods: ["GET"]
        paths: ["/v1/customers"]
  hubspot:
    upstream: "{hubspot.url}"
    credential:
      secret: "env:HUBSPOT_KEY"
      inject:
        header: {{ name: "Authorization", format: "Bearer {{secret}}" }}
    allow:
      - callers: ["{REPORTING}"]
        methods: ["POST"]
        paths: ["/crm/v3/objects/contacts/search"]
      - callers: ["{CRM_SYNC}"]
        methods: ["POST", "PATCH"]
        paths: ["/crm/v3/objects/contacts", "/crm/v3/objects/contacts/*"]
"""


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith(("AIRFLOW", "CREDPROXY_ID_TOKEN"))}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def audit(stdout: Path) -> list[dict]:
    out = []
    for line in stdout.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "request_id" in entry:
            out.append(entry)
    return out


def start_credproxy(binary: str, work: Path, config: str) -> tuple[subprocess.Popen, str, Path]:
    path = work / "credproxy.yaml"
    path.write_text(config)
    subprocess.run([binary, "check", "--config", str(path)], check=True, timeout=60)
    stdout = work / "credproxy.stdout"
    env = clean_env()
    env.update(STRIPE_KEY=STRIPE_KEY, HUBSPOT_KEY=HUBSPOT_KEY)
    proc = subprocess.Popen(
        [binary, "serve", "--config", str(path)],
        stdout=open(stdout, "wb"),
        stderr=open(work / "credproxy.stderr", "wb"),
        env=env,
    )
    base = "http://" + re.search(r'listen: "([^"]+)"', config).group(1)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"credproxy exited: {(work / 'credproxy.stderr').read_text()}")
        try:
            if urlopen(base + "/_credproxy/ready", timeout=1).status == 200:
                return proc, base, stdout
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("credproxy not ready within 30 s")
        time.sleep(0.1)


# -- Airflow ------------------------------------------------------------------------------------


def airflow_env(py: str, work: Path, metadata: FakeMetadataServer, iam: FakeIam, base: str, impersonate: str) -> dict:
    home = work / "airflow"
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "credproxy_reporting_dag.py").write_text((ROOT / "deploy/composer/credproxy_reporting_dag.py").read_text())
    env = clean_env()
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        GCE_METADATA_HOST=metadata.host,
        GCE_METADATA_IP=metadata.host,
        GCE_METADATA_DETECT_RETRIES="1",
        CREDPROXY_IAM_CREDENTIALS_ENDPOINT=iam.url,
        AIRFLOW_CONN_CREDPROXY_DEFAULT=json.dumps(
            {"conn_type": "credproxy", "host": base, "extra": {"audience": AUDIENCE, "impersonate": impersonate}}
        ),
    )
    env["PATH"] = f"{Path(py).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(cmd: list[str], env: dict, timeout: int, log: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, stdin=subprocess.DEVNULL)
        code, out = proc.returncode, proc.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        code, out = -1, (e.stdout or b"").decode(errors="replace") + f"\n[timed out after {timeout} s]"
    log.write_text(out)
    return code, out, time.monotonic() - started


def task_logs(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((home / "logs").rglob("*")) if p.is_file())


def airflow_checks(py: str, work: Path, metadata: FakeMetadataServer, iam: FakeIam, base: str, stdout: Path, stripe: Server) -> None:
    airflow = str(Path(py).parent / "airflow")
    env = airflow_env(py, work, metadata, iam, base, REPORTING)
    code, out, _ = run([airflow, "db", "migrate"], env, 600, work / "airflow-db.log")
    if not check("airflow-db", code == 0, f"airflow db migrate exit {code}" + ("" if code == 0 else "\n" + out[-3000:])):
        return
    code, out, _ = run([airflow, "providers", "list", "--output", "json"], env, 300, work / "airflow-providers.log")
    check("airflow-provider", code == 0 and "credproxy-client" in out, "credproxy-client listed by `airflow providers list`" if code == 0 and "credproxy-client" in out else out[-2000:])

    before = len(audit(stdout))
    stripe_before = len(stripe.requests)
    code, out, took = run([airflow, "dags", "test", "credproxy_reporting", LOGICAL_DATE], env, 600, work / "airflow-dags-test.log")
    logs = out + task_logs(Path(env["AIRFLOW_HOME"]))
    report = re.search(r"revenue report: (\d+) charges, (\d+) minor units, (\d+) contacts in total", logs)
    windows = [
        (int(r.query.get("created[gte]", 0)), int(r.query.get("created[lt]", 0)))
        for r in stripe.requests[stripe_before:]
        if r.path.startswith("/v1/charges")
    ]
    in_window = [c for c in stripe_charges() if WINDOW[0] <= c["created"] < WINDOW[1] and c["paid"]]
    ok = (
        code == 0
        and report is not None
        and windows
        and all(w == WINDOW for w in windows)
        and int(report.group(1)) == len(in_window) > 0
        and int(report.group(3)) == HUBSPOT_TOTAL
    )
    check(
        "airflow-dag",
        bool(ok),
        f"dags test exit {code} in {took:.0f} s; Stripe window {windows[:1]} ({len(windows)} pages), {report.group(0) if report else 'no report line'}"
        + ("" if ok else "\n" + logs[-4000:]),
    )
    entries = [e for e in audit(stdout)[before:] if e.get("route") in ("stripe", "hubspot")]
    labels = [e.get("logging.googleapis.com/labels") or {} for e in entries]
    want_tasks = {"charges", "contacts"}
    ok = (
        bool(entries)
        and all(l.get("dag_id") == "credproxy_reporting" and l.get("try_number") == "1" and l.get("run_id") for l in labels)
        and {l.get("task_id") for l in labels} == want_tasks
        and all(e["httpRequest"]["userAgent"].startswith("credproxy-client/") for e in entries)
        and all(e["caller"] == REPORTING for e in entries)
    )
    check("airflow-labels", ok, f"{len(entries)} audit entries, labels {labels[:1]}" + ("" if ok else f"\n{entries}"))

    # Denied: impersonate an account IAM lets the environment use but credproxy's policy does not.
    env = airflow_env(py, work, metadata, iam, base, INTRUDER)
    before = len(audit(stdout))
    code, out, took = run([airflow, "dags", "test", "credproxy_reporting", "2026-11-29T06:00:00+00:00"], env, 240, work / "airflow-denied.log")
    logs = out + task_logs(Path(env["AIRFLOW_HOME"]))
    denied = [e for e in audit(stdout)[before:] if e.get("caller") == INTRUDER]
    charges_calls = [e for e in denied if e.get("route") == "stripe"]
    ids_logged = [e["request_id"] for e in charges_calls if e["request_id"] in logs]
    message = f"no rule of route `stripe` allows caller {INTRUDER}"
    tries = {(e.get("logging.googleapis.com/labels") or {}).get("try_number") for e in charges_calls}
    ok = (
        code != 0
        and len(charges_calls) == 1
        and charges_calls[0]["httpRequest"]["status"] == 403
        and tries == {"1"}
        and message in logs
        and ids_logged
        and took < 180
    )
    check(
        "airflow-denied",
        bool(ok),
        f"dags test exit {code} in {took:.0f} s; {len(charges_calls)} call(s) to stripe (tries {sorted(t for t in tries if t)}), "
        f"message in log: {message in logs}, request_id in log: {bool(ids_logged)}" + ("" if ok else "\n" + logs[-4000:]),
    )


# -- Beam ---------------------------------------------------------------------------------------


def beam_checks(py: str, work: Path, metadata: FakeMetadataServer, base: str, stdout: Path, hubspot: Server) -> None:
    env = clean_env()
    env.update(GCE_METADATA_HOST=metadata.host, GCE_METADATA_IP=metadata.host, GCE_METADATA_DETECT_RETRIES="1")
    before, hub_before = len(audit(stdout)), len(hubspot.requests)
    code, out, took = run(
        [py, str(ROOT / "deploy/dataflow/crm_sync.py"), "--runner=DirectRunner", f"--credproxy_url={base}", "--job_name=crm-sync-verify"],
        env,
        600,
        work / "beam.log",
    )
    entries = [e for e in audit(stdout)[before:] if e.get("caller") == CRM_SYNC]
    upserts = [r for r in hubspot.requests[hub_before:] if r.path.startswith("/crm/v3/objects/contacts")]
    labels = [e.get("logging.googleapis.com/labels") or {} for e in entries]
    steps = {l.get("step") for l in labels}
    ok = (
        code == 0
        and "synced 3 contacts" in out
        and len(upserts) == 4  # 3 POSTs, one 409 then PATCH
        and all(l.get("job") == "crm-sync-verify" for l in labels)
        and steps == {"ListCustomers", "UpsertContact"}
    )
    check(
        "beam-directrunner",
        bool(ok),
        f"exit {code} in {took:.0f} s; {len(upserts)} HubSpot calls, {len(entries)} audit entries, steps {sorted(s for s in steps if s)}"
        + ("" if ok else "\n" + out[-4000:]),
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--credproxy", required=True)
    ap.add_argument("--airflow-python")
    ap.add_argument("--beam-python")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    key = SigningKey()
    jwks = FakeJwks(key)
    composer_md = FakeMetadataServer(key, COMPOSER_ENV)
    beam_md = FakeMetadataServer(key, CRM_SYNC)
    iam = FakeIam(key, {COMPOSER_ENV: {REPORTING, INTRUDER}})
    charges = stripe_charges()
    stripe, hubspot = make_stripe(charges), make_hubspot()
    work = Path(tempfile.mkdtemp(prefix="credproxy-pipelines-"))
    proc, base, stdout = start_credproxy(args.credproxy, work, config_yaml(free_port(), jwks, stripe, hubspot))
    try:
        if args.airflow_python:
            airflow_checks(args.airflow_python, work, composer_md, iam, base, stdout, stripe)
        if args.beam_python:
            # The example's token audience is its --credproxy_url, which the stack's config
            # lists next to AUDIENCE (the Composer connection's `audience` extra).
            beam_checks(args.beam_python, work, beam_md, base, stdout, hubspot)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        for s in (jwks, composer_md, beam_md, iam, stripe, hubspot):
            s.close()
        logs = (work / "credproxy.stdout").read_text() + (work / "credproxy.stderr").read_text()
        check("no-secret-in-logs", STRIPE_KEY not in logs and HUBSPOT_KEY not in logs, "credproxy's logs hold neither API key")
        print(f"work directory: {work}" + ("" if args.keep else " (removed)"))
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    failed = [name for name, ok, _ in RESULTS if not ok]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
