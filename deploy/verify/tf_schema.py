"""Terraform provider schemas, read from the CDK for Terraform prebuilt bindings.

`terraform validate` needs the provider plugin, which comes from registry.terraform.io.
Where that registry cannot be reached, the schema still can: the npm packages
@cdktf/provider-google and @cdktf/provider-google-beta are generated from the provider's
own schema (their package.json names the provider version), and their .jsii manifest
lists every resource's arguments and nested blocks, with required/optional and a link
whose anchor is the Terraform name of each one.

    schema = load_schema(".verify/schema/google/.jsii")
    schema["resource"]["google_cloud_run_v2_service"] -> Block
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_LINK = re.compile(r"\{@link https://registry\.terraform\.io/providers/hashicorp/[\w-]+/[^/]+/docs/(resources|data-sources)/(\w+)#(\w+) [^}]*\}")


@dataclass
class Attribute:
    name: str
    required: bool


@dataclass
class Block:
    """A resource body or a nested block: its arguments and its nested block types."""

    attributes: dict[str, Attribute] = field(default_factory=dict)
    blocks: dict[str, "NestedBlock"] = field(default_factory=dict)


@dataclass
class NestedBlock:
    name: str
    required: bool
    single: bool  # at most one (a struct, not a list of structs)
    fqn: str
    block: Block | None = None


def _struct_fqns(type_ref: dict, types: dict) -> list[tuple[str, bool]]:
    """Provider struct types named in a jsii type reference, each with whether it is single."""
    found: list[tuple[str, bool]] = []

    def walk(t: dict, in_collection: bool) -> None:
        if "fqn" in t:
            target = types.get(t["fqn"])
            if target is not None and target.get("datatype") and not t["fqn"].startswith("cdktf."):
                found.append((t["fqn"], not in_collection))
        elif "collection" in t:
            walk(t["collection"]["elementtype"], True)
        elif "union" in t:
            for member in t["union"]["types"]:
                walk(member, in_collection)

    walk(type_ref, False)
    return found


def _link(prop: dict) -> tuple[str, str, str] | None:
    docs = prop.get("docs", {})
    text = docs.get("remarks", "") + " " + docs.get("summary", "")
    m = _LINK.search(text)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def load_schema(jsii_path: str, prefix: str = "google_") -> dict[str, dict[str, Block]]:
    with open(jsii_path, encoding="utf-8") as f:
        types = json.load(f)["types"]

    cache: dict[str, Block] = {}

    def build(fqn: str) -> Block:
        if fqn in cache:
            return cache[fqn]
        block = Block()
        cache[fqn] = block
        for prop in types[fqn].get("properties", []):
            link = _link(prop)
            if link is None:
                continue
            name = link[2]
            required = not prop.get("optional", False)
            structs = _struct_fqns(prop["type"], types)
            if structs:
                sfqn, single = structs[0]
                block.blocks[name] = NestedBlock(name, required, single, sfqn)
            else:
                block.attributes[name] = Attribute(name, required)
        for nested in block.blocks.values():
            nested.block = build(nested.fqn)
        return block

    schema: dict[str, dict[str, Block]] = {"resource": {}, "data": {}}
    for fqn, t in types.items():
        if not (t.get("datatype") and t.get("name", "").endswith("Config")):
            continue
        if "cdktf.TerraformMetaArguments" not in t.get("interfaces", []):
            continue
        kind_name = None
        for prop in t.get("properties", []):
            link = _link(prop)
            if link:
                kind_name = link
                break
        if kind_name is None:
            continue
        kind = "resource" if kind_name[0] == "resources" else "data"
        name = kind_name[1]
        tf_type = name if name.startswith(prefix.rstrip("_")) else prefix + name
        schema[kind][tf_type] = build(fqn)
    return schema


def provider_version(package_json_path: str) -> str:
    with open(package_json_path, encoding="utf-8") as f:
        meta = json.load(f)
    provider = meta.get("cdktf", {}).get("provider", {})
    return f"{provider.get('name', '?')} {provider.get('version', '?')}"


if __name__ == "__main__":  # dump one resource's schema: python tf_schema.py JSII TYPE
    import sys

    s = load_schema(sys.argv[1])

    def dump(b: Block, indent: str = "") -> None:
        for a in sorted(b.attributes.values(), key=lambda a: a.name):
            print(f"{indent}{a.name}{' (required)' if a.required else ''}")
        for n in sorted(b.blocks.values(), key=lambda n: n.name):
            print(f"{indent}{n.name} {{}}{' (required)' if n.required else ''}{' max 1' if n.single else ''}")
            dump(n.block, indent + "  ")

    kind = "data" if len(sys.argv) > 3 and sys.argv[3] == "data" else "resource"
    dump(s[kind][sys.argv[2]])
