"""The house rules of the code, checked on the source (an import graph drawn with `ast`):
imports only go down (launch -> pipelines -> components -> odpipe), the graph has no cycle,
no private name of Beam, kfp or TensorFlow is imported, and odpipe's modules stay readable."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("odpipe", "components", "pipelines", "launch")  # top to bottom: launch, pipelines, components, odpipe
LAYER = {"odpipe": 0, "components": 1, "pipelines": 2, "launch": 3}
LIBRARIES = ("apache_beam", "kfp", "tensorflow", "tf_keras", "official", "orbit")
MAX_LINES = 420  # "about 400"


def _modules() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


MODULES = _modules()


def _imports(path: str) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every import statement, at any depth."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names], node.lineno))
    return out


def _first_party(name: str) -> str | None:
    """The project module an import refers to (the longest known prefix)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, names, _ in _imports(path):
            targets = [_first_party(f"{name}.{n}") or _first_party(name) for n in names] if names else [_first_party(name)]
            edges[module] |= {t for t in targets if t and t != module and not module.startswith(t + ".")}
    return edges


def test_imports_only_go_down():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if module == "odpipe.cli":  # the command-line entry point maps commands onto every layer
                continue
            if LAYER[target.split(".")[0]] > LAYER[module.split(".")[0]]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_private_library_names():
    found = []
    for path in MODULES.values():
        for name, names, line in _imports(path):
            if name.split(".")[0] not in LIBRARIES:
                continue
            private = [p for p in name.split(".") if p.startswith("_")] + [n for n in names if n.startswith("_")]
            if private:
                found.append(f"{path}:{line} {name} {private}")
        source = open(path, encoding="utf-8").read()
        for attribute in ("._TFRecordUtil", "._masked_crc32c", "pipeline_orchestrator", "._Credentials"):
            if attribute in source:
                found.append(f"{path}: uses {attribute}")
    assert not found, found


def test_odpipe_modules_stay_readable():
    long = {m: n for m, p in MODULES.items() if m.startswith("odpipe")
            for n in [sum(1 for _ in open(p, encoding="utf-8"))] if n > MAX_LINES}
    assert not long, long
