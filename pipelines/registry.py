"""The pipelines `python -m pipelines run NAME` knows, imported only when asked for.

Each module exposes MODEL_NAME, TRAINER_MODULE, PROFILES and
- build(RunConfig, log, lineage) -> Pipeline: the `run` pipeline;
- gates(RunConfig) -> {metric: gate}, as the run summary shows them;
- build_remote(pipeline_name=, pipeline_root=, data_root=, repository=, profile=, beam_args=)
  -> Pipeline, for orchestrators that run elsewhere (`compile`);
- retrain_parts(Profile, trainer_module) -> retraining.ModelParts, its part of the
  retraining pipeline; smoke_check(eval_dir, RunConfig, examples) -> the post-push check;
- write_spans(RunConfig, out_dir, span_numbers, kind) -> paths, for `make-spans`.
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
