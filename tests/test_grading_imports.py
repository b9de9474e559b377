"""The grader's modules import one way: no module of autograde/ imports, even lazily from
inside a function, one that imports it back; and each imports alone, in a fresh
interpreter, with no side effect (no framework loaded, no environment variable set)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "autograde"
# nbgrader's configuration file: nbgrader runs it with `get_config` defined; not a module.
NOT_MODULES = {"nbgrader_config"}


def import_graph(package: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from every import statement in a
    module's source, those inside functions and classes included."""
    name = package.name
    modules = {p.stem for p in package.glob("*.py")} - NOT_MODULES - {"__init__"}
    graph = {}
    for module in sorted(modules):
        tree = ast.parse((package / f"{module}.py").read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from . import x  /  from .x import y
                    base = node.module or ""
                elif node.level == 0 and f"{node.module}.".startswith(f"{name}."):
                    base = node.module.removeprefix(name).lstrip(".")
                else:  # another package
                    continue
                if base:
                    targets = [f"{name}.{base}"]
                else:
                    targets = [f"{name}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                first = target.removeprefix(f"{name}.").split(".")[0]
                if target.startswith(f"{name}.") and first in modules and first != module:
                    imported.add(first)
        graph[module] = imported
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules (the first one repeated last), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            cycle = visit(target, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_the_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
    package = tmp_path / "autograde"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("import os\n")
    (package / "server.py").write_text("from . import base\nfrom .launcher import run\n")
    (package / "launcher.py").write_text(
        "import autograde.base\n\ndef run():\n    from autograde import server\n"
    )
    graph = import_graph(package)
    assert graph == {"base": set(), "launcher": {"base", "server"}, "server": {"base", "launcher"}}
    assert find_cycle(graph) == ["launcher", "server", "launcher"]
    (package / "launcher.py").write_text("import autograde.base\n")
    assert find_cycle(import_graph(package)) is None


def test_the_autograde_import_graph_has_no_cycle():
    graph = import_graph(PACKAGE)
    assert {"sandbox", "forkserver", "forkprotocol", "grade", "workers"} <= set(graph)
    assert "forkserver" in graph["workers"] and "sandbox" in graph["forkserver"]
    cycle = find_cycle(graph)
    assert cycle is None, f"autograde imports in a circle: {' -> '.join(cycle)}"


# The launcher and the fork server first: they are what a kernel's start imports.
MODULES = ["forkprotocol", "sandbox", "forkserver"] + sorted(
    {p.stem for p in PACKAGE.glob("*.py")}
    - NOT_MODULES
    - {"__init__", "forkprotocol", "sandbox", "forkserver"}
)
CHECK = """
import json, os, sys
before = dict(os.environ)
import autograde.{module}
heavy = sorted({{"torch", "tensorflow", "keras", "jax"}} & set(sys.modules))
print(json.dumps({{"heavy": heavy, "environ_changed": dict(os.environ) != before}}))
"""


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_without_side_effects(module):
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "environ_changed": False}, report
