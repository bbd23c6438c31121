"""The pipelines `python -m pipelines run NAME` knows, imported only when asked for.

Each module exposes MODEL_NAME, PROFILES, build(RunConfig, log) -> Pipeline and
gates(RunConfig) -> {metric: gate}.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PIPELINES = {
    "half_plus_two": "pipelines.half_plus_two",
    "mnist": "pipelines.mnist",
}


def get(name: str) -> ModuleType:
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")
    return importlib.import_module(PIPELINES[name])
