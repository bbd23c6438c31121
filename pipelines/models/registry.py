"""The models the commands know: the built-in ones and a model project's, loaded only when
asked for, each through the contract in pipelines/models/contract.py.

A built-in model is a module of this package with a `PIPELINE` (a ModelPipeline). A model
project (`python -m pipelines new`) is a directory whose `model.py` defines `MODEL_NAME`
(a string literal, read without importing anything) and `PIPELINE`; `--model-dir DIR`, or
$TOOLKIT_MODEL_DIR, adds its model to the built-in ones (and, under the same name, in
their place).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Dict, Optional

from pipelines.models.contract import ModelContractError, ModelPipeline, check

PIPELINES = {
    "half_plus_two": "pipelines.models.half_plus_two",
    "mnist": "pipelines.models.mnist",
}
MODEL_DIR_VARIABLE = "TOOLKIT_MODEL_DIR"
MODEL_FILE = "model.py"  # a model project's module: MODEL_NAME and PIPELINE


def model_dir_from_environment() -> Optional[Path]:
    value = os.environ.get(MODEL_DIR_VARIABLE)
    return Path(value) if value else None


def project_name(model_dir: Path) -> str:
    """The model name a project declares (`MODEL_NAME = "..."` in its model.py), read
    without running it. Raises ModelContractError saying what is missing."""
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelContractError(f"{model_dir} is not a model project: it has no {MODEL_FILE} "
                                 f"(`python -m pipelines new` writes one)")
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (SyntaxError, UnicodeDecodeError, OSError) as e:
        raise ModelContractError(f"{path}: cannot be read: {e}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "MODEL_NAME"
                                                for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    raise ModelContractError(f"{path}: no `MODEL_NAME = \"...\"` (a string literal): the "
                             f"commands read the model's name from it before loading it")


def names(model_dir: Optional[Path] = None) -> Dict[str, str]:
    """Model name -> where it is defined (a module, or a project's model.py)."""
    known = dict(PIPELINES)
    if model_dir is not None:
        known[project_name(model_dir)] = str(Path(model_dir).absolute() / MODEL_FILE)
    return known


def get(name: str, model_dir: Optional[Path] = None) -> ModelPipeline:
    """The model `name`, loaded and checked against the contract, with the standard wiring
    wherever it brings none of its own. Raises KeyError for an unknown name and
    ModelContractError for a model that does not meet the contract."""
    known = names(model_dir)
    if name not in known:
        raise KeyError(f"unknown pipeline {name!r}; choose from {', '.join(sorted(known))}")
    if name in PIPELINES and known[name] == PIPELINES[name]:
        module = importlib.import_module(PIPELINES[name])
        source = module.__file__
    else:
        module = _load_project(Path(known[name]))
        source = known[name]
    if not hasattr(module, "PIPELINE"):
        raise ModelContractError(f"{source}: defines no PIPELINE (a "
                                 f"pipelines.models.contract.ModelPipeline)")
    pipeline = check(module.PIPELINE, source)
    if pipeline.name != name:
        raise ModelContractError(f"{source}: PIPELINE is named {pipeline.name!r}, but the "
                                 f"model is {name!r} (MODEL_NAME): give both the same name")
    from pipelines.models import standard as standard_pipeline  # TFX: only once a model is used

    return standard_pipeline.complete(pipeline)


def _load_project(path: Path):
    """Import a project's model.py afresh, its directory first on sys.path (as Python puts
    a script's), so that it and the module files TFX runs import their siblings: the
    project's own, not a same-named module of another project loaded before, nor an
    edited one's old code."""
    directory = path.parent
    if str(directory) in sys.path:
        sys.path.remove(str(directory))
    sys.path.insert(0, str(directory))
    for sibling in directory.glob("*.py"):
        sys.modules.pop(sibling.stem, None)
    module_name = f"toolkit_model_project_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        if isinstance(e, ModelContractError):
            raise
        moved = MOVED_MODULES.get(getattr(e, "name", None) or "")
        hint = (f"; the toolkit's {e.name} is {moved} now: change the import in the "
                f"project's files" if isinstance(e, ModuleNotFoundError) and moved else "")
        raise ModelContractError(f"{path}: failed to load: {type(e).__name__}: {e}{hint}") from e
    return module


# What a project made by an older `pipelines new` imports, and where it lives now.
MOVED_MODULES = {"pipelines.model_contract": "pipelines.models.contract",
                 "pipelines.post_push": "pipelines.models.smoke"}
