"""The typed run configuration: CLI flags / Make variables -> RunConfig -> pipeline code."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a pipeline run reads, writes and publishes; shared by every pipeline."""

    pipeline_root: Path = Path("tfx_runs")
    repository: Path = Path("model_repository")
    # User-supplied input data; None means the pipeline's own data source.
    data_dir: Optional[Path] = None
    # Downloaded and converted data sets, reused across runs (MNIST: ~30 MB).
    cache_dir: Path = Path(".cache")
    # Pass-through Beam flags for the data-heavy components (DirectRunner when empty).
    beam_args: Tuple[str, ...] = ()
    enable_cache: bool = True
    # A named set of sizes (examples, steps, epochs); e.g. "fast" for tests.
    profile: str = "default"

    def pipeline_dir(self, pipeline_name: str) -> Path:
        return (self.pipeline_root / pipeline_name).absolute()

    def metadata_path(self, pipeline_name: str) -> Path:
        return self.pipeline_dir(pipeline_name) / "metadata.sqlite"

    def model_destination(self, model_name: str) -> Path:
        """The Pusher's base directory: `<repository>/<model>`."""
        return (self.repository / model_name).absolute()
