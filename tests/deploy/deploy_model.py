"""Load the two deployment descriptions of promgate into comparable shapes.

The Terraform module (terraform/*.tf, parsed with python-hcl2) and the plain
manifests (config/kubernetes/*.yaml, parsed with PyYAML) describe the same
objects. This module reads both and evaluates just enough of the Terraform
expressions (variable defaults, locals, tostring, merge) to turn the module
into the values it would produce with its defaults, so that the tests can
compare real values instead of text.

An expression it cannot evaluate raises ``Unresolvable``; it never guesses.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import yaml
from hcl2.utils import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = ROOT / "terraform"
MANIFEST_DIR = ROOT / "config" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"

_HCL_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)


class Unresolvable(ValueError):
    """A Terraform expression outside the small subset evaluated here."""


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def parse_tf_file(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return hcl2.load(f, serialization_options=_HCL_OPTIONS)


@dataclass
class TerraformModule:
    """The resources, variables and locals of one module directory."""

    directory: Path
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path = TERRAFORM_DIR) -> "TerraformModule":
        module = cls(directory)
        files = sorted(directory.glob("*.tf"))
        if not files:
            raise FileNotFoundError(f"no .tf files in {directory}")
        for path in files:
            doc = parse_tf_file(path)
            for block in doc.get("resource", []):
                for rtype, by_name in block.items():
                    for rname, body in by_name.items():
                        key = (_unquote(rtype), _unquote(rname))
                        if key in module.resources:
                            raise ValueError(f"duplicate resource {key} in {path}")
                        module.resources[key] = body
            for block in doc.get("variable", []):
                for vname, body in block.items():
                    module.variables[_unquote(vname)] = body
            for block in doc.get("locals", []):
                module.locals.update(block)
        return module

    # -- evaluation ---------------------------------------------------------

    def default(self, name: str) -> Any:
        try:
            var = self.variables[name]
        except KeyError:
            raise Unresolvable(f"no variable {name!r}") from None
        if "default" not in var:
            raise Unresolvable(f"variable {name!r} has no default")
        return self.value(var["default"])

    def value(self, node: Any) -> Any:
        """Evaluate a parsed HCL value: strings may hold ${...} expressions."""
        if isinstance(node, dict):
            return {_unquote(k): self.value(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if not isinstance(node, str):
            return node
        pieces = _interpolations(node)
        if len(pieces) == 1 and isinstance(pieces[0], tuple):
            return self.expr(pieces[0][0])
        return "".join(p if isinstance(p, str) else str(self.expr(p[0])) for p in pieces)

    def expr(self, text: str) -> Any:
        text = text.strip()
        if re.fullmatch(r"-?[0-9]+", text):
            return int(text)
        if text.startswith('"') and text.endswith('"') and _split_top_level(text) == [text]:
            return self.value(text[1:-1])
        m = re.fullmatch(r'(.+?)\s*==\s*(.+?)\s*\?\s*(.+?)\s*:\s*(.+)', text, re.S)
        if m:
            cond = self.expr(m.group(1)) == self.expr(m.group(2))
            return self.expr(m.group(3) if cond else m.group(4))
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*\?\s*(.+?)\s*:\s*(.+)", text, re.S)
        if m:
            cond = self.expr(m.group(1))
            if not isinstance(cond, bool):
                raise Unresolvable(f"condition {m.group(1)!r} is not a bool")
            return self.expr(m.group(2) if cond else m.group(3))
        if text.startswith("{") and text.endswith("}"):
            return self._object(text)
        if text == "null":
            return None
        if text in ("true", "false"):
            return text == "true"
        m = re.fullmatch(r"(var|local)\.([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+)*)", text)
        if m:
            kind, name, rest = m.groups()
            if kind == "var":
                val = self.default(name)
            else:
                if name not in self.locals:
                    raise Unresolvable(f"no local {name!r}")
                val = self.value(self.locals[name])
            for part in filter(None, rest.split(".")):
                val = val[part]
            return val
        m = re.fullmatch(r"([a-z0-9_]+)\.([a-z0-9_]+)\.metadata\[0\]\.name", text)
        if m and m.group(1) not in ("var", "local"):
            meta = one(self.resource(m.group(1), m.group(2))["metadata"], "metadata")
            return self.value(meta["name"])
        m = re.fullmatch(r"jsonencode\((.*)\)", text, re.S)
        if m:
            import json

            return json.dumps(self.expr(m.group(1)))
        m = re.fullmatch(r"tostring\((.*)\)", text, re.S)
        if m:
            return str(self.expr(m.group(1)))
        m = re.fullmatch(r"merge\((.*)\)", text, re.S)
        if m:
            merged: dict = {}
            for arg in _split_top_level(m.group(1)):
                merged.update(self._object(arg))
            return merged
        raise Unresolvable(f"cannot evaluate {text!r}")

    def template_args(self, local_name: str) -> tuple[str, dict[str, Any]]:
        """The template path and evaluated arguments of a templatefile() local.

        Arguments outside the evaluated subset are left out; the caller
        decides whether it needs them.
        """
        text = self.locals[local_name]
        m = re.fullmatch(r'\$\{templatefile\("\$\{path\.module\}/([^"]+)",\s*\{(.*)\}\)\}', text, re.S)
        if not m:
            raise Unresolvable(f"local {local_name!r} is not templatefile(path.module/..., {{...}})")
        args: dict[str, Any] = {}
        for item in _split_top_level(m.group(2)):
            key, _, expr = item.partition("=")
            try:
                args[key.strip()] = self.expr(expr)
            except Unresolvable:
                continue
        return m.group(1), args

    def render_template(self, local_name: str, overrides: dict[str, Any]) -> str:
        """Render a templatefile() local with its default arguments.

        Only the two forms the templates use are supported: ${name} and
        ${jsonencode(name)}; anything else raises Unresolvable.
        """
        import json

        rel, args = self.template_args(local_name)
        args.update(overrides)
        text = (self.directory / rel).read_text(encoding="utf-8")

        def sub(m: re.Match) -> str:
            inner = m.group(1).strip()
            jm = re.fullmatch(r"jsonencode\(([a-z_]+)\)", inner)
            if jm:
                return json.dumps(args[jm.group(1)])
            if re.fullmatch(r"[a-z_]+", inner):
                return str(args[inner])
            raise Unresolvable(f"template expression {inner!r} in {rel}")

        return re.sub(r"\$\{([^{}]*)\}", sub, text)

    def _object(self, text: str) -> dict:
        text = text.strip()
        if text.startswith("{"):
            pairs = re.findall(r'"([^"]+)"\s*=\s*"([^"]*)"', text)
            return dict(pairs)
        val = self.expr(text)
        if not isinstance(val, dict):
            raise Unresolvable(f"{text!r} is not an object")
        return val

    # -- shortcuts ----------------------------------------------------------

    def resource(self, rtype: str, name: str) -> dict:
        try:
            return self.resources[(rtype, name)]
        except KeyError:
            raise AssertionError(f"terraform module has no {rtype}.{name}") from None


def _interpolations(text: str) -> list:
    """Split a template string into literal str pieces and (expr,) tuples."""
    out: list = []
    i, lit = 0, ""
    while i < len(text):
        if text.startswith("${", i):
            depth, j, in_str = 1, i + 2, False
            while j < len(text) and depth:
                ch = text[j]
                if ch == '"' and text[j - 1] != "\\":
                    in_str = not in_str
                elif text.startswith("${", j):
                    depth += 1
                    j += 1
                elif not in_str and ch == "{":
                    depth += 1
                elif ch == "}" and (not in_str or depth > 1):
                    depth -= 1
                j += 1
            if depth:
                raise Unresolvable(f"unbalanced interpolation in {text!r}")
            if lit:
                out.append(lit)
                lit = ""
            out.append((text[i + 2 : j - 1].strip(),))
            i = j
        else:
            lit += text[i]
            i += 1
    if lit or not out:
        out.append(lit)
    return out


def _split_top_level(text: str) -> list[str]:
    parts, depth, start, in_str = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            in_str = not in_str
        elif not in_str and ch in "({[":
            depth += 1
        elif not in_str and ch in ")}]":
            depth -= 1
        elif not in_str and ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def one(blocks: Any, what: str = "block") -> dict:
    """The single block of a repeated-block list (HCL blocks parse as lists)."""
    if isinstance(blocks, dict):
        return blocks
    if not isinstance(blocks, list) or len(blocks) != 1:
        raise AssertionError(f"expected exactly one {what}, got {blocks!r}")
    return blocks[0]


# ---------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------


@dataclass
class Manifests:
    """Every object of config/kubernetes, keyed by (kind, namespace, name)."""

    objects: dict[tuple[str, str, str], dict]

    @classmethod
    def load(cls, directory: Path = MANIFEST_DIR) -> "Manifests":
        objects: dict[tuple[str, str, str], dict] = {}
        files = sorted(directory.glob("*.yaml"))
        if not files:
            raise FileNotFoundError(f"no manifests in {directory}")
        for path in files:
            with path.open(encoding="utf-8") as f:
                for doc in yaml.safe_load_all(f):
                    if doc is None:
                        continue
                    meta = doc["metadata"]
                    key = (doc["kind"], meta.get("namespace", ""), meta["name"])
                    if key in objects:
                        raise ValueError(f"duplicate object {key} in {path}")
                    objects[key] = doc
        return cls(objects)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict:
        found = [
            obj
            for (k, ns, n), obj in self.objects.items()
            if k == kind and n == name and (namespace is None or ns == namespace)
        ]
        if len(found) != 1:
            raise AssertionError(f"expected one {kind} {name!r}, found {len(found)}")
        return found[0]

    def of_kind(self, kind: str) -> list[dict]:
        return [obj for (k, _, _), obj in self.objects.items() if k == kind]


def gateway_toml(manifests: Manifests) -> dict:
    """promgate.toml as held by the plain manifests' gateway ConfigMap."""
    cm = manifests.get("ConfigMap", "promgate-config")
    return tomllib.loads(cm["data"]["promgate.toml"])


# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuations joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out
