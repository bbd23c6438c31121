"""The model server stands alone and has no import circle: it imports nothing from the rest
of serving/ (its image, serving/image/build.sh, carries serving/model_server/ only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "serving" / "model_server"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imported_names(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            if node.module == "serving":
                yield from (f"serving.{alias.name}" for alias in node.names)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_model_server_imports_nothing_else_from_serving(path):
    outside = [name for name in imported_names(path)
               if (name == "serving" or name.startswith("serving."))
               and not (name == "serving.model_server" or name.startswith("serving.model_server."))]
    assert outside == [], f"{path.name} imports {outside}"


def test_the_check_sees_an_import_from_outside(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from serving import repository\nimport serving.lifecycle\n")
    assert sorted(imported_names(module)) == ["serving", "serving.lifecycle", "serving.repository"]


def module_level_imports(path: Path):
    """The serving.model_server modules `path` imports at module level (TYPE_CHECKING and
    other `if` blocks included; imports inside functions are not part of the structure)."""
    prefix = "serving.model_server"
    body = list(ast.parse(path.read_text(), str(path)).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.If, ast.Try)):
            body.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                body.extend(handler.body)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith(prefix + "."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            if node.module == prefix:
                yield from (f"{prefix}.{a.name}" for a in node.names)
            else:
                yield node.module


def test_no_import_circle_inside_the_model_server():
    name = {p: "serving.model_server." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
            for p in MODULES}
    graph = {name[p].removesuffix(".__init__"): set(module_level_imports(p)) for p in MODULES}

    def circle_from(start, path):
        for nxt in graph.get(path[-1], ()):
            if nxt == start:
                return path + [start]
            if nxt not in path and nxt in graph:
                found = circle_from(start, path + [nxt])
                if found:
                    return found
        return None

    circles = [c for c in (circle_from(m, [m]) for m in graph) if c]
    assert circles == [], " -> ".join(circles[0])
