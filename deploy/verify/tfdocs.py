"""Inputs/outputs tables for the module READMEs, in terraform-docs' markdown-table shape.

Writes (or with --check, compares) the part of each README.md between
<!-- BEGIN_TF_DOCS --> and <!-- END_TF_DOCS -->, from the module's variables and outputs,
so the tables never disagree with the code. terraform-docs itself is a Go binary that the
package registries here do not carry; where it is available it writes the same markers.

Usage: python tfdocs.py [--check] MODULE_DIR...
"""

from __future__ import annotations

import os
import sys

import hcl2

BEGIN = "<!-- BEGIN_TF_DOCS -->"
END = "<!-- END_TF_DOCS -->"


def clean(value) -> str:
    if isinstance(value, str):
        text = value
        if text.startswith('"') and text.endswith('"'):
            text = text[1:-1].replace('\\"', '"')
        elif text.startswith("${") and text.endswith("}"):
            text = text[2:-1]
        return text
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(clean(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{k} = {clean(v)}" for k, v in value.items() if not k.startswith("__")]
        return "{" + ", ".join(items) + "}"
    return str(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(directory: str) -> str:
    variables: dict[str, dict] = {}
    outputs: dict[str, dict] = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".tf"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            doc = hcl2.load(f)
        for entry in doc.get("variable", []):
            for k, v in entry.items():
                variables[clean(k)] = v
        for entry in doc.get("output", []):
            for k, v in entry.items():
                outputs[clean(k)] = v

    lines = [BEGIN, "## Inputs", "", "| Name | Description | Type | Default | Required |", "|------|-------------|------|---------|:--------:|"]
    for name in sorted(variables):
        v = variables[name]
        has_default = "default" in v
        default = f"`{cell(clean(v['default']))}`" if has_default else "n/a"
        type_text = " ".join(clean(v.get("type", "any")).split())
        lines.append(
            f"| {name} | {cell(clean(v.get('description', '')))} | `{cell(type_text)}` | {default} | {'no' if has_default else 'yes'} |"
        )
    lines += ["", "## Outputs", "", "| Name | Description |", "|------|-------------|"]
    for name in sorted(outputs):
        lines.append(f"| {name} | {cell(clean(outputs[name].get('description', '')))} |")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    dirs = [a for a in argv if a != "--check"]
    stale = 0
    for d in dirs:
        readme = os.path.join(d, "README.md")
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        if BEGIN not in text or END not in text:
            print(f"{readme}: no {BEGIN} ... {END} section")
            stale += 1
            continue
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + render(d) + tail
        if new != text:
            if check:
                print(f"{readme}: inputs/outputs tables are out of date (run deploy/verify/tfdocs.py {d})")
                stale += 1
            else:
                with open(readme, "w", encoding="utf-8") as f:
                    f.write(new)
                print(f"{readme}: updated")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
