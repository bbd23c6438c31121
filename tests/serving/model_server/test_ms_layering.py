"""The model server stands alone: it imports nothing from the rest of serving/ (its image,
serving/image/build.sh, carries serving/model_server/ only)."""

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
