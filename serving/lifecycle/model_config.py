"""The models.config a server reads for several models, and the version policy of rollback.

A pinned model gets `model_version_policy { specific { versions: N } }`: the server loads
N and unloads the rest without a restart. Unpinned models serve the latest version.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


def build(base_paths: Mapping[str, str], pinned: Mapping[str, int],
          order: Iterable[str]) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()  # a list, even of no model
    for name in order:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = base_paths[name]
        entry.model_platform = "tensorflow"
        if name in pinned:
            entry.model_version_policy.specific.versions.append(int(pinned[name]))
        else:
            entry.model_version_policy.latest.num_versions = 1
    return config


def to_text(config: model_server_config_pb2.ModelServerConfig) -> str:
    return text_format.MessageToString(config)


def render(base_paths: Dict[str, str], pinned: Dict[str, int], order: Iterable[str]) -> str:
    return to_text(build(base_paths, pinned, order))
