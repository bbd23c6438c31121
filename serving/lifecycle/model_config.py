"""The models.config every server reads, rendered from the rollout records.

Per model, two entries at most, both plain TF Serving config, so the official image takes
the same file (`--model_config_file`, polled, and ReloadConfig):

- `M`, base path `<repository>/M`: `specific { versions: stable [, previous] }` with the
  version labels `stable` (and `previous` when it is loaded). The previous stable is kept
  loaded only when it is below stable: a request that names no version gets the highest
  loaded version of its entry, which is then always stable.
- `M-canary`, base path `<repository>/M/.candidates`, while a push is verified:
  `specific { versions: canary }`, label `canary`. The canary is a separate entry because
  TF Serving has no "default label": loaded into `M`, a newer canary would answer every
  request that names no version before it passed verification.

A model with nothing stable yet has no entry (only its canary's while its first push is
checked): TF Serving's ReloadConfig waits, holding its config lock, for a newly added
model's first version, so an entry waiting for one would block every later reload.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import rollouts
from serving.repository import CANDIDATES_DIR, ModelRepository
from serving.rollouts import CANARY, Rollout

CANARY_SUFFIX = "-canary"


def canary_entry(model: str) -> str:
    """The name the canary of `model` is served under (REST /v1/models/<this>/labels/canary)."""
    return model + CANARY_SUFFIX


def model_of(entry: str) -> str:
    """The model a served entry belongs to: `canary_entry`'s inverse, else the entry itself."""
    return entry[:-len(CANARY_SUFFIX)] if entry.endswith(CANARY_SUFFIX) else entry


def build(base_paths: Mapping[str, str], records: Mapping[str, Rollout],
          order: Iterable[str], also_loaded: Optional[Mapping[str, Rollout]] = None,
          labels_from: Optional[Mapping[str, Rollout]] = None,
          ) -> model_server_config_pb2.ModelServerConfig:
    """The config serving `records`. For a change between two records (see
    serving/lifecycle/rollout.py): `also_loaded` keeps what another record loads, and
    `labels_from` takes the labels from another record."""
    also_loaded = also_loaded or {}
    labels_from = labels_from or records
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()  # a list, even of no model
    for name in order:
        record = records.get(name) or Rollout(model=name)
        other = also_loaded.get(name) or Rollout(model=name)
        labelled = labels_from.get(name) or Rollout(model=name)
        loaded = sorted(set(record.loaded_versions()) | set(other.loaded_versions()))
        if loaded:
            entry = config.model_config_list.config.add()
            entry.name = name
            entry.base_path = base_paths[name]
            entry.model_platform = "tensorflow"
            entry.model_version_policy.specific.versions.extend(loaded)
            for label, version in sorted(labelled.labels().items()):
                if version in loaded:
                    entry.version_labels[label] = version
        canaries = sorted({v for v in (record.canary, other.canary) if v is not None})
        if canaries:
            canary = config.model_config_list.config.add()
            canary.name = canary_entry(name)
            canary.base_path = base_paths[name].rstrip("/") + "/" + CANDIDATES_DIR
            canary.model_platform = "tensorflow"
            canary.model_version_policy.specific.versions.extend(canaries)
            if labelled.canary in canaries:
                canary.version_labels[CANARY] = labelled.canary
    return config


def to_text(config: model_server_config_pb2.ModelServerConfig) -> str:
    return text_format.MessageToString(config)


def render_served(state) -> str:
    """The config of a running server (a ServerState) from its models' current records."""
    repo = ModelRepository(state.repository)
    records = {m: rollouts.load(repo.model_dir(m), m) for m in state.models}
    return render(state.base_paths, records, state.models)


def render(base_paths: Mapping[str, str], records: Mapping[str, Rollout],
           order: Iterable[str]) -> str:
    return to_text(build(base_paths, records, order))
