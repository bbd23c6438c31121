"""Where the toolkit's files go by default: one place for both command sets and the config objects.

Every default is under the project (the checkout the toolkit runs from), so a command run
from any directory of the project, or from cron, finds the same repository, pipeline runs,
caches and running server; an environment variable overrides each, and a command-line flag
overrides the variable. Read at call time: a process that changes its environment (a test,
the docs generator) sees the change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, NamedTuple


class Default(NamedTuple):
    variable: str  # the environment variable that overrides it
    relative: str  # where it is under the project when the variable is not set
    what: str


REPOSITORY = Default("TOOLKIT_REPOSITORY", "model_repository", "the model repository")
PIPELINE_ROOT = Default("TOOLKIT_PIPELINE_ROOT", "tfx_runs",
                        "pipeline artifacts and ML Metadata")
STATE_DIR = Default("TOOLKIT_STATE_DIR", ".cache/serving",
                    "where `python -m serving up` records the running server")
CACHE_DIR = Default("TOOLKIT_CACHE_DIR", ".cache", "downloaded and converted data sets")
ALL = (REPOSITORY, PIPELINE_ROOT, STATE_DIR, CACHE_DIR)


def project_root() -> Path:
    """The checkout this code runs from (installed editable: the directory holding
    pipelines/, serving/ and setup.cfg); the current directory when that is not a checkout
    (an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "setup.cfg").is_file() and (root / "pipelines").is_dir() and \
            (root / "serving").is_dir():
        return root
    return Path.cwd()


def path(default: Default) -> Path:
    """The effective default: $VARIABLE when set (relative to the current directory),
    else <project>/<relative>."""
    value = os.environ.get(default.variable)
    if value:
        return Path(value)
    return project_root() / default.relative


def repository() -> Path:
    return path(REPOSITORY)


def pipeline_root() -> Path:
    return path(PIPELINE_ROOT)


def state_dir() -> Path:
    return path(STATE_DIR)


def cache_dir() -> Path:
    return path(CACHE_DIR)


def effective() -> Dict[str, Path]:
    """Variable name -> the path it stands for now."""
    return {d.variable: path(d) for d in ALL}
