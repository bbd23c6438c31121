"""The layout is a contract, checked here rather than kept in docstrings.

Every `import` in the project's packages (module-level, function-level and under
TYPE_CHECKING alike: a deferred import is still a dependency) is read with `ast`, and:
- no modules import each other in a circle;
- a package that declares `LAYERS` in its `__init__` (lowest first, each a space-separated
  list of dotted prefixes) has every module in exactly one layer, and no module imports a
  higher layer;
- serving/, components/ and pipelines/ are layers too, in that order;
- the model server imports nothing from the rest of the project, so the serving image
  carries `serving/model_server/` alone (serving/image/build.sh copies only that).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "components", "pipelines")  # lowest first: the project's own layers
LAYERED = ("serving.model_server", "pipelines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> Dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "templates" in path.parts or path.name.endswith("_pb2.py"):
                continue  # model-project templates are copied out, not imported
            modules[module_name(path)] = path
    return modules


MODULES = project_modules()


def imports_of(name: str, path: Path) -> Set[str]:
    """The project modules `name` imports (`from pkg import mod` counts as pkg.mod)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(GRAPH) == []


def layer_of(module: str, layers) -> int:
    matches = [(len(prefix), i) for i, layer in enumerate(layers) for prefix in layer.split()
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else -1


@pytest.mark.parametrize("package", LAYERED)
def test_no_module_imports_a_layer_above_its_own(package):
    layers = importlib.import_module(package).LAYERS
    members = [m for m in MODULES if m.startswith(package + ".")]
    assert [m for m in members if layer_of(m, layers) < 0] == [], \
        f"modules in no layer of {package}.LAYERS"
    upward = sorted(f"{m} (layer {layer_of(m, layers)}) imports {t} (layer {layer_of(t, layers)})"
                    for m in members for t in GRAPH[m]
                    if t.startswith(package + ".") and layer_of(t, layers) > layer_of(m, layers))
    assert upward == []


def test_no_package_imports_a_package_above_it():
    """serving/ (repository, model server, lifecycle) knows nothing of TFX pipelines; the
    components (the Pusher, InfraValidator's launcher) use serving/; pipelines/ use both."""
    rank = {package: i for i, package in enumerate(PACKAGES)}
    upward = sorted(f"{m} imports {t}" for m in MODULES for t in GRAPH[m]
                    if rank[t.split(".")[0]] > rank[m.split(".")[0]])
    assert upward == []


def test_the_model_server_imports_nothing_from_the_rest_of_the_project():
    outside = sorted(f"{m} imports {t}" for m in MODULES if m.startswith("serving.model_server")
                     for t in GRAPH[m]
                     if not t.startswith("serving.model_server") and t != "serving")
    assert outside == []


def test_the_checks_see_every_kind_of_import():
    """The reader finds module-level, function-level and `from package import module`
    imports (a checker that saw none would pass everything)."""
    assert "serving.model_server.servable.run" in GRAPH["serving.model_server.servable.warmup"]
    assert "pipelines.models.standard" in GRAPH["pipelines.models.registry"]  # in a function
    assert "serving.model_server.core.apis" in GRAPH["serving.model_server.frontends.rest"]
    assert any(GRAPH[m] for m in MODULES if m.startswith("pipelines."))
    back = {**GRAPH, "serving.model_server.errors": GRAPH["serving.model_server.errors"]
            | {"serving.model_server.server"}}
    assert any({"serving.model_server.errors", "serving.model_server.server"} <= set(cycle)
               for cycle in cycles(back)), "an import back from errors to server is a circle"
