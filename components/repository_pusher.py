"""RepositoryPusher: TFX's Pusher, publishing into the model repository atomically, with lineage.

TFX's stock Pusher names versions by UNIX timestamp and copies straight into the final
directory, so a polling model server can load a half-copied version, and two pushes in
the same second collide. This component keeps the Pusher's contract (its spec, the
blessing checks on `model_blessing` and `infra_blessing`, the `pushed` /
`pushed_destination` / `pushed_version` properties, the archive copy) and swaps the copy
for `ModelRepository.publish`: integer versions that only grow, renamed into place
complete, as a **candidate** (`<model>/.candidates/N`, which no server polling the base
path sees). The run then deploys it (pipelines/operations/post_push.py: canary, smoke check,
promote or reject; or a candidate while an operator holds the model). A model identical
to the newest published version or candidate is not published again.

It also takes what the lineage record needs, as optional inputs: the examples the model
was trained and evaluated on (spans, data checksum), the Evaluator's `evaluation`
(metrics), and the Trainer's `base_model` (warm start). `lineage.json` is written into
the staging directory, so it is part of the version from the moment the version exists.

The push destination stays a standard `filesystem.base_directory`, `<repository>/<model>`.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx import v1 as tfx
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils, json_utils, proto_utils

from components.evaluation_results import read_evaluation
from components.span_window import span_of
from serving import lineage as lineage_record
from serving.repository import ModelRepository

EXAMPLES_KEY = "examples"
EVALUATION_KEY = "evaluation"
BASE_MODEL_KEY = "base_model"
# Set on the PushedModel when the repository's latest version already held this model.
REUSED_VERSION_KEY = "reused_version"
# custom_config keys: static facts of the pipeline for the lineage record.
LINEAGE_CONFIG_KEY = "lineage"


def split_destination(base_directory: str) -> tuple[ModelRepository, str]:
    """`<repository>/<model>` -> (repository, model name)."""
    path = Path(base_directory)
    return ModelRepository(path.parent), path.name


class RepositoryPusherSpec(standard_component_specs.PusherSpec):
    """The Pusher's spec, plus the optional inputs the lineage record is made from."""

    INPUTS = {
        **standard_component_specs.PusherSpec.INPUTS,
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
        BASE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }


class Executor(pusher_executor.Executor):
    """Pushes a blessed model as the next version of `<repository>/<model>`."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)

        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("the repository Pusher supports filesystem destinations only")
        repository, model_name = split_destination(destination.filesystem.base_directory)

        version = repository.version_with_same_content(model_name, Path(model_path))
        if version is not None:
            logging.info("%s version %d already holds this model; not publishing it again.",
                         model_name, version)
            model_push.set_int_custom_property(REUSED_VERSION_KEY, 1)
            path = repository.locate(model_name, version)
        else:
            config = json_utils.loads(
                exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null") or {}
            record = self._lineage(input_dict, config.get(LINEAGE_CONFIG_KEY, {}), repository,
                                   model_name)
            with repository.publish(model_name, candidate=True) as publication:
                io_utils.copy_dir(model_path, str(publication.staging))
                record.published_at = lineage_record.now()
                lineage_record.write(publication.staging, record)
            version, path = publication.version, publication.path
            logging.info("Published %s version %d at %s.", model_name, version, path)

        io_utils.copy_dir(model_path, model_push.uri)  # the Pusher's own archive copy
        self._MarkPushed(model_push, pushed_destination=str(path), pushed_version=str(version))

    def _lineage(self, input_dict, static: Dict[str, Any], repository: ModelRepository,
                 model_name: str) -> lineage_record.Lineage:
        record = lineage_record.Lineage.from_json(static)
        # The orchestrator's run; TFX's InteractiveContext has none, and a notebook
        # experiment names its run in the static fields.
        run_id = self._context.pipeline_run_id if self._context else None
        record.run_id = run_id or record.run_id
        record.run_started_at = _run_started_at(record.run_id)
        models = input_dict.get(standard_component_specs.MODEL_KEY)
        if models:
            record.model_uri = artifact_utils.get_single_instance(models).uri
        examples = input_dict.get(EXAMPLES_KEY) or []
        record.spans = sorted({span_of(e) for e in examples})
        record.data_sha256 = examples_sha256(examples)
        evaluations = input_dict.get(EVALUATION_KEY)
        if evaluations:
            record.metrics = read_evaluation(
                artifact_utils.get_single_instance(evaluations).uri).metrics
        base_models = input_dict.get(BASE_MODEL_KEY)
        if base_models:
            base = artifact_utils.get_single_instance(base_models)
            record.warm_start = {"model_uri": base.uri,
                                 "version": repository.version_from_model(model_name, base.uri)}
        if input_dict.get(standard_component_specs.INFRA_BLESSING_KEY):
            record.infra_validation = "passed"  # CheckBlessing let it through
        return record


def examples_sha256(examples: List[types.Artifact]) -> str:
    """sha256 over the example files of each artifact (by span, then path): the data a
    model was trained and evaluated on, whatever their names or modification times."""
    if not examples:
        return ""
    digest = hashlib.sha256()
    for artifact in sorted(examples, key=lambda a: (span_of(a), a.id)):
        root = Path(artifact.uri)
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{span_of(artifact)}/{file.relative_to(root)}".encode() + b"\0")
            with file.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _run_started_at(run_id: Optional[str]) -> str:
    """LocalDagRunner's run id is the run's start time (datetime.isoformat())."""
    try:
        return datetime.datetime.fromisoformat(run_id or "").astimezone(
            datetime.timezone.utc).isoformat(timespec="seconds")
    except ValueError:
        return ""


class RepositoryPusher(base_component.BaseComponent):
    """The Pusher component (id "Pusher"), publishing through the repository executor."""

    SPEC_CLASS = RepositoryPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, model_blessing: Optional[types.BaseChannel],
                 serving_model_dir: str, infra_blessing: Optional[types.BaseChannel] = None,
                 examples: Optional[types.BaseChannel] = None,
                 evaluation: Optional[types.BaseChannel] = None,
                 base_model: Optional[types.BaseChannel] = None,
                 lineage: Optional[Dict[str, Any]] = None):
        """`lineage`: static fields of the lineage record (pipeline, gates, git, ...)."""
        spec = RepositoryPusherSpec(
            model=model, model_blessing=model_blessing, infra_blessing=infra_blessing,
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(
                    base_directory=serving_model_dir)),
            custom_config=json_utils.dumps({LINEAGE_CONFIG_KEY: lineage or {}}),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            **{EXAMPLES_KEY: examples, EVALUATION_KEY: evaluation, BASE_MODEL_KEY: base_model})
        super().__init__(spec=spec)
        self.with_id("Pusher")
