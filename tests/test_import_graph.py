"""The house's walls: no import cycle between modules, and the dependency directions the architecture promises.

The graph is read statically (``ast``) from every module of ``jax_vdit``, ``pallas_kernels`` and ``convert``,
counting imports inside functions too (a cycle hidden by a function-level import is still a cycle).
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jax_vdit", "pallas_kernels", "convert")


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of this repository it imports (anywhere in its body)."""
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base_parts = package[: len(package) - node.level + 1] if node.level else []
                base = ".".join(base_parts + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            elif isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


@functools.lru_cache(maxsize=1)
def fresh_import_graph() -> dict[str, set[str]]:
    """:func:`import_graph` computed in a fresh interpreter. CPython 3.11's ``ast.parse`` can fail with
    "SystemError: AST constructor recursion depth mismatch" once an earlier test in the same process has left the
    interpreter's recursion bookkeeping off (seen on CI); a new process has clean state."""
    code = ("import json, runpy; g = runpy.run_path('tests/test_import_graph.py')['import_graph'](); "
            "print(json.dumps({k: sorted(v) for k, v in g.items()}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: set(v) for k, v in json.loads(proc.stdout).items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(fresh_import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _reaches(graph, start: str, prefix: str) -> list[str]:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        for w in graph[v]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return sorted(w for w in seen if w == prefix or w.startswith(prefix + "."))


@pytest.mark.parametrize("module, forbidden", [
    ("pallas_kernels", "jax_vdit"),            # the kernels stand alone
    ("jax_vdit.model", "jax_vdit.sampling"),   # the model never imports sampling, distillation or the CLI
    ("jax_vdit.model", "jax_vdit.distill"),
    ("jax_vdit.model", "jax_vdit.cli"),
    ("jax_vdit.model", "jax_vdit.training"),
    ("jax_vdit.parallel", "jax_vdit.model"),   # the mechanism imports nothing from its users
    ("jax_vdit.io", "jax_vdit.training"),      # loading and conversion never import training code
    ("convert", "jax_vdit.training"),
    ("jax_vdit.model", "jax_vdit.toy"),        # the product does not depend on the toy wing
    ("jax_vdit.io", "jax_vdit.toy"),
    ("jax_vdit.sampling", "jax_vdit.toy"),
    ("jax_vdit.training", "jax_vdit.toy"),
    ("jax_vdit.distill", "jax_vdit.toy"),
])
def test_dependency_directions(module, forbidden):
    graph = fresh_import_graph()
    starts = [m for m in graph if m == module or m.startswith(module + ".")]
    bad = {s: _reaches(graph, s, forbidden) for s in starts}
    assert {s: r for s, r in bad.items() if r} == {}
