"""Offline checks of terraform/ where `terraform validate` cannot run.

`terraform validate` needs `terraform init`, which downloads hashicorp/google and
hashicorp/google-beta from registry.terraform.io. Where that registry is out of reach this
script checks what validate would, as far as it can without the provider plugin:

  * every .tf file parses (python-hcl2);
  * every reference to var.*, local.*, module.*, data.* and a resource resolves in its
    module, and module.X.OUTPUT names an output of X's source;
  * module calls pass only declared variables and every variable without a default;
  * every resource and data block uses only arguments and nested blocks that exist in the
    provider's schema (read from the CDK for Terraform bindings, tf_schema.py), sets every
    required one, repeats no single-instance block, and references only attributes the
    resource has; lifecycle.ignore_changes paths exist;
  * the project's conventions (STYLE.md section 4): every variable has a description and
    a type, every output a description, each module has main.tf, variables.tf,
    outputs.tf, versions.tf and README.md, versions.tf pins required_version and a version
    range for every provider, and every `checkov:skip` gives a reason.

Usage: python tfcheck.py TERRAFORM_DIR --schema google=PATH/.jsii --schema google-beta=PATH/.jsii
Exit 0 when clean, 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field

import hcl2

from tf_schema import Block, load_schema

META_RESOURCE = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
META_MODULE = {"source", "version", "providers", "count", "for_each", "depends_on"}
REF = re.compile(r"(?<![\w.\-\"])(var|local|module|data)\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?(?:\[[^\]]*\])?(?:\.([A-Za-z_][\w-]*))?")
RES_REF = re.compile(r"(?<![\w.\-\"/])((?:google|google_beta)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?(?:\.([A-Za-z_]\w*))?")
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(:?)(.*)")
REQUIRED_FILES = ["main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"]
TEXT_KEYS = {"description", "error_message", "content", "subject", "display_name"}


def unquote(label: str) -> str:
    return label[1:-1] if len(label) >= 2 and label[0] == '"' and label[-1] == '"' else label


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass
class Module:
    path: str
    variables: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    locals: set[str] = field(default_factory=set)
    modules: dict[str, dict] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    data: dict[tuple[str, str], dict] = field(default_factory=dict)
    terraform: list[dict] = field(default_factory=list)
    files: dict[str, dict] = field(default_factory=dict)
    resource_files: dict[tuple[str, str], str] = field(default_factory=dict)


class Checker:
    def __init__(self, root: str, schemas: dict[str, dict], classes: dict[str, dict[str, set[str]]]):
        self.root = root
        self.schemas = schemas
        self.classes = classes
        self.problems: list[str] = []
        self.modules: dict[str, Module] = {}

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{os.path.relpath(where, self.root)}: {message}")

    # -- loading -------------------------------------------------------------------------

    def load(self, directory: str) -> Module | None:
        directory = os.path.normpath(directory)
        if directory in self.modules:
            return self.modules[directory]
        mod = Module(directory)
        self.modules[directory] = mod
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".tf"):
                continue
            path = os.path.join(directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    doc = hcl2.load(f)
            except Exception as e:  # noqa: BLE001 - any parse failure is a finding
                self.problem(path, f"does not parse: {e}")
                continue
            mod.files[name] = doc
            self.collect(mod, path, doc)
        return mod

    def collect(self, mod: Module, path: str, doc: dict) -> None:
        for entry in doc.get("variable", []):
            for name, body in entry.items():
                mod.variables[unquote(name)] = body
        for entry in doc.get("output", []):
            for name, body in entry.items():
                mod.outputs[unquote(name)] = body
        for entry in doc.get("locals", []):
            mod.locals.update(k for k in entry if not k.startswith("__"))
        for entry in doc.get("module", []):
            for name, body in entry.items():
                mod.modules[unquote(name)] = body
        for entry in doc.get("resource", []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    key = (unquote(rtype), unquote(name))
                    if key in mod.resources:
                        self.problem(path, f"duplicate resource {key[0]}.{key[1]}")
                    mod.resources[key] = body
                    mod.resource_files[key] = path
        for entry in doc.get("data", []):
            for dtype, named in entry.items():
                for name, body in named.items():
                    mod.data[(unquote(dtype), unquote(name))] = body
                    mod.resource_files[("data." + unquote(dtype), unquote(name))] = path
        mod.terraform.extend(doc.get("terraform", []))

    # -- checks --------------------------------------------------------------------------

    def check_module(self, mod: Module, is_library: bool) -> None:
        d = mod.path
        if is_library:
            for required in REQUIRED_FILES:
                if not os.path.exists(os.path.join(d, required)):
                    self.problem(d, f"missing {required}")
        for name, body in mod.variables.items():
            if "description" not in body:
                self.problem(d, f"variable {name} has no description")
            if "type" not in body:
                self.problem(d, f"variable {name} has no type")
        for name, body in mod.outputs.items():
            if "description" not in body:
                self.problem(d, f"output {name} has no description")
        self.check_versions(mod)
        self.check_references(mod)
        for name, body in mod.modules.items():
            self.check_module_call(mod, name, body)
        for (rtype, name), body in mod.resources.items():
            self.check_resource(mod, "resource", rtype, name, body)
        for (dtype, name), body in mod.data.items():
            self.check_resource(mod, "data", dtype, name, body)

    def check_versions(self, mod: Module) -> None:
        if not mod.terraform:
            self.problem(mod.path, "no terraform block (versions.tf)")
            return
        required_version = any("required_version" in t for t in mod.terraform)
        if not required_version:
            self.problem(mod.path, "terraform block does not pin required_version")
        declared: dict[str, str] = {}
        for t in mod.terraform:
            for rp in t.get("required_providers", []):
                for pname, spec in rp.items():
                    if pname.startswith("__"):
                        continue
                    if not isinstance(spec, dict) or "version" not in spec:
                        self.problem(mod.path, f"provider {pname} has no version range")
                        continue
                    declared[pname] = spec["version"]
        used = set()
        for (rtype, _), body in list(mod.resources.items()) + list(mod.data.items()):
            used.add(self.provider_of(rtype, body))
        for p in sorted(used - set(declared)):
            self.problem(mod.path, f"resources use provider {p}, which required_providers does not declare")

    @staticmethod
    def provider_of(rtype: str, body: dict) -> str:
        provider = body.get("provider")
        if isinstance(provider, str):
            return provider.strip("${}").split(".")[0]
        return rtype.split("_")[0]

    def strings(self, value, key: str | None = None):
        if isinstance(value, str):
            if key not in TEXT_KEYS:
                yield value
        elif isinstance(value, dict):
            for k, v in value.items():
                if not k.startswith("__"):
                    yield from self.strings(v, k)
        elif isinstance(value, list):
            for v in value:
                yield from self.strings(v, key)

    def check_references(self, mod: Module) -> None:
        declared_resources = set(mod.resources)
        for fname, doc in mod.files.items():
            path = os.path.join(mod.path, fname)
            for text in self.strings(doc):
                for m in REF.finditer(text):
                    kind, name, attr = m.group(1), m.group(2), m.group(3)
                    if kind == "var" and name not in mod.variables:
                        self.problem(path, f"reference to undeclared variable var.{name}")
                    elif kind == "local" and name not in mod.locals:
                        self.problem(path, f"reference to undeclared local.{name}")
                    elif kind == "module":
                        if name not in mod.modules:
                            self.problem(path, f"reference to undeclared module.{name}")
                            continue
                        out = attr or m.group(4)
                        child = self.child(mod, name)
                        if out and child is not None and out not in child.outputs:
                            self.problem(path, f"module.{name} has no output {out}")
                    elif kind == "data":
                        if attr is None or (name, attr) not in mod.data:
                            self.problem(path, f"reference to undeclared data.{name}.{attr}")
                        elif m.group(4):
                            self.check_attribute(path, "data", name, m.group(4))
                for m in RES_REF.finditer(text):
                    rtype, name, attr = m.group(1), m.group(2), m.group(3)
                    start = m.start()
                    if text[max(0, start - 5):start].endswith("data."):
                        continue
                    if (rtype, name) not in declared_resources:
                        self.problem(path, f"reference to undeclared resource {rtype}.{name}")
                    elif attr:
                        self.check_attribute(path, "resource", rtype, attr)

    def check_attribute(self, path: str, kind: str, rtype: str, attr: str) -> None:
        attrs = self.classes.get(kind, {}).get(rtype)
        if attrs is None:
            return
        if camel(attr) not in attrs and attr not in ("id",):
            self.problem(path, f"{rtype} has no attribute {attr}")

    def child(self, mod: Module, name: str) -> Module | None:
        source = mod.modules[name].get("source", "")
        source = unquote(source) if isinstance(source, str) else ""
        if not source.startswith("."):
            return None
        return self.load(os.path.join(mod.path, source))

    def check_module_call(self, mod: Module, name: str, body: dict) -> None:
        child = self.child(mod, name)
        if child is None:
            self.problem(mod.path, f"module {name}: only local sources are checked")
            return
        for arg in body:
            if arg in META_MODULE or arg.startswith("__"):
                continue
            if arg not in child.variables:
                self.problem(mod.path, f"module {name}: {os.path.relpath(child.path, self.root)} has no variable {arg}")
        for var, vbody in child.variables.items():
            if "default" not in vbody and var not in body:
                self.problem(mod.path, f"module {name}: required variable {var} not set")

    def check_resource(self, mod: Module, kind: str, rtype: str, name: str, body: dict) -> None:
        path = mod.resource_files.get((rtype if kind == "resource" else "data." + rtype, name), mod.path)
        if not self.schemas:  # no provider schema available: references and modules only
            return
        provider = self.provider_of(rtype, body)
        schema = self.schemas.get(provider)
        if schema is None:
            self.problem(path, f"{kind} {rtype}.{name}: no schema for provider {provider}")
            return
        block = schema[kind].get(rtype)
        if block is None:
            self.problem(path, f"{kind} {rtype}.{name}: provider {provider} has no {kind} type {rtype}")
            return
        self.check_block(path, f"{rtype}.{name}", block, body, top=True)
        for lc in body.get("lifecycle", []):
            for ignored in lc.get("ignore_changes", []) if isinstance(lc.get("ignore_changes"), list) else []:
                self.check_path(path, f"{rtype}.{name}", block, ignored.strip("${}"))

    def check_block(self, path: str, where: str, block: Block, body: dict, top: bool = False) -> None:
        for key, value in body.items():
            if key.startswith("__"):  # python-hcl2 markers: __is_block__, __comments__, ...
                continue
            if top and key in META_RESOURCE:
                continue
            if key == "dynamic":
                for dyn in value:
                    for dname, dbody in dyn.items():
                        dname = unquote(dname)
                        nested = block.blocks.get(dname)
                        if nested is None:
                            self.problem(path, f"{where}: no block type {dname}")
                            continue
                        for content in dbody.get("content", []):
                            self.check_block(path, f"{where}.{dname}", nested.block, content)
                continue
            is_block = isinstance(value, list) and value and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
            if is_block:
                nested = block.blocks.get(key)
                if nested is None:
                    what = "an argument, not a block" if key in block.attributes else "not in the schema"
                    self.problem(path, f"{where}: block {key} is {what}")
                    continue
                if nested.single and len(value) > 1:
                    self.problem(path, f"{where}: block {key} may appear once, appears {len(value)} times")
                for v in value:
                    self.check_block(path, f"{where}.{key}", nested.block, v)
            else:
                if key not in block.attributes:
                    what = "a block, not an argument" if key in block.blocks else "not in the schema"
                    self.problem(path, f"{where}: argument {key} is {what}")
        present = {k for k in body if not k.startswith("__")}
        if "dynamic" in body:
            for dyn in body["dynamic"]:
                present.update(unquote(k) for k in dyn)
        for aname, attr in block.attributes.items():
            if attr.required and aname not in present:
                self.problem(path, f"{where}: required argument {aname} missing")
        for bname, nested in block.blocks.items():
            if nested.required and bname not in present:
                self.problem(path, f"{where}: required block {bname} missing")

    def check_path(self, path: str, where: str, block: Block, expr: str) -> None:
        parts = [p for p in re.split(r"\[\d+\]\.?|\.", expr) if p]
        current: Block | None = block
        for i, part in enumerate(parts):
            if current is None:
                break
            if part in current.blocks:
                current = current.blocks[part].block
            elif part in current.attributes and i == len(parts) - 1:
                return
            else:
                self.problem(path, f"{where}: lifecycle.ignore_changes path {expr} does not exist")
                return

    def check_skip_comments(self) -> None:
        for dirpath, _, names in os.walk(self.root):
            for n in names:
                if not n.endswith(".tf"):
                    continue
                p = os.path.join(dirpath, n)
                with open(p, encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = SKIP_COMMENT.search(line)
                        if m and (not m.group(2) or len(m.group(3).strip()) < 10):
                            self.problem(p, f"line {lineno}: checkov:skip={m.group(1)} without a reason (write ID:reason)")


def load_classes(jsii_path: str) -> dict[str, dict[str, set[str]]]:
    """Attribute names (camelCase) of each resource class, inputs and computed outputs alike."""
    import json

    from tf_schema import _LINK

    with open(jsii_path, encoding="utf-8") as f:
        types = json.load(f)["types"]
    out: dict[str, dict[str, set[str]]] = {"resource": {}, "data": {}}
    for fqn, t in types.items():
        if not (t.get("datatype") and t.get("name", "").endswith("Config")):
            continue
        link = None
        for prop in t.get("properties", []):
            docs = prop.get("docs", {})
            m = _LINK.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
            if m:
                link = m
                break
        if link is None:
            continue
        class_fqn = fqn[: -len("Config")]
        cls = types.get(class_fqn)
        if cls is None:
            continue
        names = {p["name"] for p in cls.get("properties", []) if not p.get("static")}
        names.update(p["name"] for p in t.get("properties", []))
        kind = "resource" if link.group(1) == "resources" else "data"
        out[kind]["google_" + link.group(2) if not link.group(2).startswith("google") else link.group(2)] = names
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--schema", action="append", default=[], help="PROVIDER=PATH to a .jsii manifest")
    args = ap.parse_args()

    schemas: dict[str, dict] = {}
    classes: dict[str, dict[str, set[str]]] = {"resource": {}, "data": {}}
    for spec in args.schema:
        provider, path = spec.split("=", 1)
        schemas[provider] = load_schema(path)
        for kind, table in load_classes(path).items():
            for rtype, names in table.items():
                classes[kind].setdefault(rtype, set()).update(names)

    root = os.path.abspath(args.root)
    checker = Checker(root, schemas, classes)
    module_dirs = []
    for base in ("modules", "examples"):
        bdir = os.path.join(root, base)
        if not os.path.isdir(bdir):
            continue
        for n in sorted(os.listdir(bdir)):
            d = os.path.join(bdir, n)
            if os.path.isdir(d) and any(f.endswith(".tf") for f in os.listdir(d)):
                module_dirs.append((d, base == "modules"))
    for d, is_library in module_dirs:
        checker.check_module(checker.load(d), is_library)
    checker.check_skip_comments()

    checked = sum(len(m.resources) + len(m.data) for m in checker.modules.values())
    for p in checker.problems:
        print(p)
    print(f"tfcheck: {len(module_dirs)} modules, {checked} resource/data blocks checked against the provider schema, {len(checker.problems)} problem(s)")
    return 1 if checker.problems else 0


if __name__ == "__main__":
    sys.exit(main())
