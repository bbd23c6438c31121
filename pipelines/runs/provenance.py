"""Which code made a model: the project's git commit and whether the tree had changes; and
the static fields of a version's lineage record (serving/lineage.py), the same for `run`,
`retrain` and a notebook experiment."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from pipelines.config import RunConfig
from pipelines.models.contract import ModelPipeline
from serving.lineage import DEFAULT_PROFILE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_PROFILE = "notebook"


def git_state(root: Path = PROJECT_ROOT) -> Tuple[str, Optional[bool]]:
    """(commit, dirty); ("", None) where the project is not a git checkout."""
    def git(*args: str) -> Optional[str]:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return "", None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), (bool(status.strip()) if status is not None else None)


def lineage_fields(pipeline: str, config: RunConfig, model: ModelPipeline, *,
                   notebook: bool = False,
                   trainer_module: Optional[str] = None,
                   hyperparameters: Optional[Mapping[str, Any]] = None,
                   **fields: Any) -> Dict[str, Any]:
    """The static fields of the lineage record of what pipeline `pipeline` of `model`
    (pipelines/models/contract.py) publishes: the gates, the git state, and how
    the model is trained - the profile's name, its sizes with `hyperparameters` over them
    (with the steps they make, where the profile computes them) and the Trainer module.

    A notebook experiment's profile is "notebook" ("notebook-fast" over the fast profile),
    so a version it publishes is never taken for one of `make pipeline`'s. `fields`: other
    fields of the record (run_id, infra_validation).
    """
    profile = model.profile(config.profile)
    overrides = dict(hyperparameters or {})
    names = {f.name for f in dataclasses.fields(profile)}
    profile = dataclasses.replace(profile, **{k: overrides.pop(k) for k in list(overrides)
                                              if k in names})
    sizes = dataclasses.asdict(profile)
    for name in ("train_steps", "eval_steps"):
        if callable(getattr(profile, name, None)):
            sizes[name] = getattr(profile, name)()
    name = config.profile
    if notebook:
        name = NOTEBOOK_PROFILE if name == DEFAULT_PROFILE else f"{NOTEBOOK_PROFILE}-{name}"
    commit, dirty = git_state()
    return {"pipeline": pipeline, "gates": model.gates(config), "git_commit": commit,
            "git_dirty": dirty, "profile": name, "hyperparameters": {**sizes, **overrides},
            "trainer_module": project_relative(trainer_module or model.trainer_module),
            **fields}


def project_relative(path: str) -> str:
    """`path` relative to the project root when it is under it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
