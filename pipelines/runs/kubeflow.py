"""Compile a pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines (KubeflowV2DagRunner).

The output is the PipelineJob JSON that `kfp`'s client or Vertex AI's `PipelineJob` submits.
Every task runs `image`: TFX 1.16 plus this project (pipelines/image/Dockerfile), since the
Pusher's executor, the AnomaliesGate component and the trainer modules import `components`
and `serving`, and the MNIST schema is read from the image.

Compiling touches no data and trains nothing, but TFX packages the trainer and transform
module files as wheels into `<pipeline_root>/_wheels/` for the workers to install: with a
`gs://` root that is an upload, so it needs credentials for the bucket at compile time.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Optional, Sequence

from pipelines.models import registry

# Built from pipelines/image/Dockerfile and pushed where the cluster pulls from; pass the
# pushed reference (e.g. REGION-docker.pkg.dev/PROJECT/REPO/tfx-serving-toolkit-pipeline:TAG).
DEFAULT_IMAGE = "tfx-serving-toolkit/pipeline:latest"


def compile_pipeline(name: str, *, output: Path, pipeline_root: str, data_root: str,
                     repository: str, image: str = DEFAULT_IMAGE, profile: str = "default",
                     beam_args: Sequence[str] = (), model_dir: Optional[Path] = None) -> Path:
    """Write pipeline `name` as a PipelineJob JSON file at `output` (a `.yaml` name gets
    the PipelineSpec as YAML, as TFX writes it) and return its path.

    `pipeline_root` (artifacts) and `data_root` (the pipeline's input data) are URIs the
    workers can read and write, e.g. `gs://...`. `repository` is the model repository as a
    filesystem path inside the workers (e.g. a volume or `/gcs/BUCKET/...` mount): the
    Pusher publishes with an atomic rename, which an object store URI cannot do.
    `model_dir`: a model project whose model `name` may be (its files must be at the same
    paths in the image)."""
    from tfx import v1 as tfx

    if not posixpath.isabs(repository):  # also every URI: gs://, s3://, ...
        raise ValueError(f"repository {repository!r}: the Pusher publishes by renaming "
                         f"directories, so give an absolute filesystem path inside the "
                         f"workers (a mounted volume), not a relative path or URI")
    pipeline = registry.get(name, model_dir).build_remote(
        pipeline_name=name.replace("_", "-"),  # Kubeflow's names are [a-z0-9][a-z0-9-]*
        pipeline_root=pipeline_root, data_root=data_root, repository=repository,
        profile=profile, beam_args=beam_args)
    output = Path(output)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(output.parent), output_filename=output.name)
    runner.run(pipeline)
    return output
