"""Caller labels (`X-Credproxy-Labels`): which task made a call, in credproxy's audit entry
(`logging.googleapis.com/labels`). The SPEC's charset: key `[a-z0-9_]{1,32}`, value
`[A-Za-z0-9._:/+-]{1,128}`, at most 8 pairs."""

from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Optional

HEADER = "X-Credproxy-Labels"
MAX_LABELS = 8

_KEY = re.compile(r"[a-z0-9_]{1,32}")
_BAD_VALUE_CHARS = re.compile(r"[^A-Za-z0-9._:/+-]")

# Airflow sets these in the task's environment before it runs (2.x and 3.x).
AIRFLOW_CONTEXT = (
    ("dag_id", "AIRFLOW_CTX_DAG_ID"),
    ("task_id", "AIRFLOW_CTX_TASK_ID"),
    ("run_id", "AIRFLOW_CTX_DAG_RUN_ID"),
    ("try_number", "AIRFLOW_CTX_TRY_NUMBER"),
)


def sanitise_value(value: object) -> Optional[str]:
    """`value` in the SPEC's value charset: other characters become `_`, cut at 128.
    None when nothing is left."""
    text = _BAD_VALUE_CHARS.sub("_", str(value).strip())[:128]
    return text or None


def sanitise(labels: Mapping[str, object]) -> Dict[str, str]:
    """The pairs credproxy will keep: valid keys (others dropped), sanitised values, first 8."""
    out: Dict[str, str] = {}
    for key, value in labels.items():
        if len(out) == MAX_LABELS:
            break
        if value is None or not _KEY.fullmatch(key) or key in out:
            continue
        clean = sanitise_value(value)
        if clean:
            out[key] = clean
    return out


def airflow_labels(environ: Mapping[str, str] = os.environ) -> Dict[str, str]:
    """`dag_id`, `task_id`, `run_id`, `try_number` of the Airflow task running this
    process, when there is one."""
    return {key: environ[var] for key, var in AIRFLOW_CONTEXT if environ.get(var)}


def header_value(labels: Mapping[str, object]) -> Optional[str]:
    """The `X-Credproxy-Labels` value for `labels`, or None when none survive."""
    clean = sanitise(labels)
    return ", ".join(f"{k}={v}" for k, v in clean.items()) or None
