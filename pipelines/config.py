"""The typed run configuration: CLI flags / Make variables -> RunConfig -> pipeline code."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Tuple

from serving import defaults


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a pipeline run reads, writes and publishes; shared by every pipeline."""

    # Defaults: <project>/tfx_runs, <project>/model_repository and <project>/.cache, or
    # $TOOLKIT_PIPELINE_ROOT, $TOOLKIT_REPOSITORY, $TOOLKIT_CACHE_DIR (serving/defaults.py).
    pipeline_root: Path = dataclasses.field(default_factory=defaults.pipeline_root)
    repository: Path = dataclasses.field(default_factory=defaults.repository)
    # User-supplied input data; None means the pipeline's own data source.
    data_dir: Optional[Path] = None
    # Downloaded and converted data sets, reused across runs (MNIST: ~30 MB).
    cache_dir: Path = dataclasses.field(default_factory=defaults.cache_dir)
    # Pass-through Beam flags for the data-heavy components (DirectRunner when empty).
    beam_args: Tuple[str, ...] = ()
    enable_cache: bool = True
    # A named set of sizes (examples, steps, epochs); e.g. "fast" for tests.
    profile: str = "default"
    # A model project (`python -m pipelines new`) whose model is known besides the built-in
    # ones (--model-dir, $TOOLKIT_MODEL_DIR); None: the built-in ones only.
    model_dir: Optional[Path] = None

    def pipeline_dir(self, pipeline_name: str) -> Path:
        return (self.pipeline_root / pipeline_name).absolute()

    def metadata_path(self, pipeline_name: str) -> Path:
        return self.pipeline_dir(pipeline_name) / "metadata.sqlite"

    def model_destination(self, model_name: str) -> Path:
        """The Pusher's base directory: `<repository>/<model>`."""
        return (self.repository / model_name).absolute()

    @staticmethod
    def pipelines_of(model: str) -> Tuple[str, str, str]:
        """Every pipeline that trains `model`: `run`'s, `retrain`'s and the notebook's."""
        return (model, f"{model}{RETRAIN_SUFFIX}", f"{model}{NOTEBOOK_SUFFIX}")


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """A scheduled retraining run: `run.data_dir` holds the spans."""

    run: RunConfig
    # Train on the newest `window` spans (resolved from ML Metadata).
    window: int = 3
    # Let a drifted span through (an operator who has read the drift report).
    accept_drift: bool = False
    # InfraValidator: "auto" (when a Docker Engine and the image are there), "require", "off".
    infra_validation: str = "auto"
    # The image InfraValidator loads the model in; None: the running server's image, else
    # the official TF Serving image when present, else the stand-in.
    serving_image: Optional[str] = None
    # Another Trainer module file (an experiment); None: the model's own.
    trainer_module: Optional[str] = None
    # After a push, when a server is up: wait this long for the version, then send this
    # many eval examples of the newest span through it.
    # Default: <project>/.cache/serving, or $TOOLKIT_STATE_DIR.
    serving_state_dir: Path = dataclasses.field(default_factory=defaults.state_dir)
    serving_timeout: float = 300.0
    smoke_examples: int = 200
    # False: the pushed version stays a candidate (--no-promote).
    promote: bool = True
    # The repository's retention policy, applied after each run (serving/retention.py).
    keep_versions: int = 10
    keep_rejected_days: float = 14.0
    keep_runs: int = 10
    keep_days: float = 30.0

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"--window must be at least 1, got {self.window}")
        if self.infra_validation not in ("auto", "require", "off"):
            raise ValueError(f"infra validation must be auto, require or off, "
                             f"got {self.infra_validation!r}")
        if self.run.data_dir is None:
            raise ValueError("retraining needs a data directory of spans (--data)")

    def pipeline_name(self, model: str) -> str:
        return f"{model}{RETRAIN_SUFFIX}"


RETRAIN_SUFFIX = "_retrain"
# Notebook experiments (pipelines/notebook/experiment.py) keep their own artifacts and ML Metadata.
NOTEBOOK_SUFFIX = "_notebook"
