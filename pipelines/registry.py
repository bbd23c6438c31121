"""The pipelines `python -m pipelines run NAME` knows, imported only when asked for.

Each module exposes MODEL_NAME, PROFILES, build(RunConfig, log) -> Pipeline,
gates(RunConfig) -> {metric: gate}, and build_remote(pipeline_name=, pipeline_root=,
data_root=, repository=, profile=, beam_args=) -> Pipeline for orchestrators that run elsewhere.
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
