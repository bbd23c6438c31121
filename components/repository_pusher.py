"""A Pusher executor that publishes into the model repository atomically.

TFX's stock Pusher names versions by UNIX timestamp and copies straight into the final
directory, so a polling model server can load a half-copied version, and two pushes in
the same second collide. This executor keeps the Pusher's contract (blessing check,
`pushed`/`pushed_destination`/`pushed_version` properties, the archive copy) and swaps
the copy for `ModelRepository.publish`: integer versions that only grow, renamed into
place complete. A model identical to the latest version is not published again.

The push destination stays a standard `filesystem.base_directory`, `<repository>/<model>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx import v1 as tfx
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from serving.repository import ModelRepository


def split_destination(base_directory: str) -> tuple[ModelRepository, str]:
    """`<repository>/<model>` -> (repository, model name)."""
    path = Path(base_directory)
    return ModelRepository(path.parent), path.name


# Set on the PushedModel when the repository's latest version already held this model.
REUSED_VERSION_KEY = "reused_version"


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
            path = repository.version_path(model_name, version)
        else:
            with repository.publish(model_name) as publication:
                io_utils.copy_dir(model_path, str(publication.staging))
            version, path = publication.version, publication.path
            logging.info("Published %s version %d at %s.", model_name, version, path)

        io_utils.copy_dir(model_path, model_push.uri)  # the Pusher's own archive copy
        self._MarkPushed(model_push, pushed_destination=str(path), pushed_version=str(version))


EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)


def RepositoryPusher(model, model_blessing, serving_model_dir: str) -> tfx.components.Pusher:
    """The standard Pusher component, publishing through the repository executor."""
    return tfx.components.Pusher(
        model=model,
        model_blessing=model_blessing,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)),
        custom_executor_spec=EXECUTOR_SPEC)
