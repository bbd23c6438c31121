"""Kubernetes manifests for TF Serving over the model repository: rendered, never applied.

No Kubernetes API server runs where this toolkit is tested, so the objects are plain
dicts that the tests check offline against the `kubernetes` client's models
(tests/serving/lifecycle/test_manifests.py), and `kubectl apply -k DIR` applies what
`write` leaves in DIR. docs/kubernetes.md has the walk-through.

`render_kubernetes` gives three objects, all labelled `app=<name>`:

- ConfigMap `<name>-config`: `models.config`, the rollout records rendered by
  serving/lifecycle/model_config.py (specific versions, labels `stable`/`previous`).
- Deployment `<name>`: `replicas` pods of the serving image (official tensorflow/serving or
  the stand-in) with TF Serving's own flags; the repository from a PersistentVolumeClaim
  mounted read-only at /models (the claim must allow ReadOnlyMany or ReadWriteMany, as
  every replica mounts it); the ConfigMap at /serving_config; requests = limits; a
  RollingUpdate of maxSurge 1 / maxUnavailable 0; probes (below).
- Service `<name>` (ClusterIP): 8500 `grpc` and 8501 `http`.

How a promotion reaches the pods. TF Serving assigns a label only to a version that is
AVAILABLE: ServerCore::ReloadConfig applies the labels (UpdateModelVersionLabelMap)
*before* it loads the config's versions, so a polled config that moves `stable` to a
version not yet loaded is refused as a whole, on every poll, and the new version is never
loaded (the reason serving/lifecycle/rollout.py moves labels in three reloads). With one
ConfigMap edit, polling alone therefore cannot promote on the official image. So:

- the pod template carries the config's SHA-256 (`CONFIG_HASH_ANNOTATION`): a changed
  models.config is a changed Deployment, and Kubernetes replaces the pods one at a time
  (maxSurge 1, maxUnavailable 0). A new pod starts with the new config; its labels are new
  to it, which `--allow_version_labels_for_unavailable_models` lets it assign at startup
  (without the flag TF Serving refuses to start: tensorflow/serving#1230, #1608). It takes
  traffic once its readiness probe passes, and only then is an old pod stopped.
- the replicas still poll /serving_config/models.config every 5 s
  (`--model_config_file_poll_wait_seconds`), as `up` runs them. kubelet refreshes a
  mounted ConfigMap only at its next sync, up to about 60-90 s after `kubectl apply`
  (the sync period plus the ConfigMap cache TTL), so an old pod may read the new file
  before it is replaced: the stand-in server applies it (it loads before it labels); the
  official image logs the refusal above and keeps serving the old stable until replaced.

Readiness: `GET /v1/models/<first model>/labels/stable/metadata` on 8501. TF Serving and
the stand-in answer 200 only when the label names an AVAILABLE version (a label the server
has not got, or a model it does not serve, is 400 "Unrecognized servable version label"),
so a pod is ready when it serves the expected stable version. One httpGet probe has one
path, hence the first model only; it still covers the others at startup, because
tensorflow_model_server (and the stand-in) loads every model of its first config before
it listens. The official image has no shell or Python, so an exec probe over all models
would work for the stand-in only; a single behaviour for both images was preferred. A
first model with no `stable` label (no version promoted yet: the `latest` policy) is
probed on `/v1/models/<m>/metadata`, 200 once any version is AVAILABLE.

Liveness: tcpSocket 8500, after a startupProbe on the same port: TF Serving opens its
ports only once the first config's models loaded, which may take minutes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import rollouts
from serving.lifecycle import model_config
from serving.lifecycle.config import (CONTAINER_CONFIG_DIR, CONTAINER_GRPC_PORT,
                                      CONTAINER_MODEL_BASE_PATH, CONTAINER_REST_PORT,
                                      MODEL_CONFIG_FILENAME)
from serving.repository import ModelRepository
from serving.rollouts import STABLE, Rollout

log = logging.getLogger("serving.lifecycle")

DEFAULT_NAME = "tfx-serving"
DEFAULT_CLAIM = "model-repository"  # the PersistentVolumeClaim holding the repository
CONFIG_POLL_SECONDS = 5
FILE_SYSTEM_POLL_SECONDS = 1
CONFIG_HASH_ANNOTATION = "tfx-serving-toolkit/models-config-sha256"
KUSTOMIZATION = "kustomization.yaml"
REPOSITORY_VOLUME = "model-repository"
CONFIG_VOLUME = "serving-config"
# Startup: up to 60 x 5 s for the first config's models to load (`up` waits 300 s too).
STARTUP_PERIOD_SECONDS = 5
STARTUP_FAILURE_THRESHOLD = 60
# A Service name is a DNS-1035 label; the Deployment's and ConfigMap's names derive from it.
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")


def server_args() -> List[str]:
    """tensorflow_model_server's flags, as the pods get them (after the image entrypoint's
    own --port/--rest_api_port/--model_name/--model_base_path, which --model_config_file
    overrides)."""
    return [f"--port={CONTAINER_GRPC_PORT}",
            f"--rest_api_port={CONTAINER_REST_PORT}",
            f"--model_config_file={CONTAINER_CONFIG_DIR}/{MODEL_CONFIG_FILENAME}",
            f"--model_config_file_poll_wait_seconds={CONFIG_POLL_SECONDS}",
            f"--file_system_poll_wait_seconds={FILE_SYSTEM_POLL_SECONDS}",
            "--allow_version_labels_for_unavailable_models"]


def readiness_path(config: model_server_config_pb2.ModelServerConfig, model: str) -> str:
    """The REST path that answers 200 once `model` serves what the config expects: its
    stable label's version when the config labels one, else any version."""
    for entry in config.model_config_list.config:
        if entry.name == model and STABLE in entry.version_labels:
            return f"/v1/models/{model}/labels/{STABLE}/metadata"
    return f"/v1/models/{model}/metadata"


def parse_model_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    """models.config text -> ModelServerConfig; ValueError naming the problem."""
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ValueError(f"models.config is not a ModelServerConfig text proto: {e}") from e


def render_kubernetes(*, repository_claim: str, models: Sequence[str], replicas: int,
                      image: str, model_config_text: str, memory_limit_mb: int = 2048,
                      cpu: str = "1", name: str = DEFAULT_NAME) -> List[dict]:
    """[ConfigMap, Deployment, Service] serving `models` (in this order; the first one is
    the one the readiness probe asks) from the PersistentVolumeClaim `repository_claim`,
    with `model_config_text` as /serving_config/models.config. Plain dicts in the API's
    camelCase, ready for YAML. ValueError on arguments Kubernetes or the server would
    refuse (a bad name, no model, a model the config does not serve, ...)."""
    models = tuple(models)
    _check(repository_claim=repository_claim, models=models, replicas=replicas, image=image,
           memory_limit_mb=memory_limit_mb, cpu=cpu, name=name)
    config = parse_model_config(model_config_text)
    served = [entry.name for entry in config.model_config_list.config]
    missing = [m for m in models if m not in served]
    if missing:
        raise ValueError(f"models.config does not serve {', '.join(missing)} "
                         f"(it serves {', '.join(served) or 'nothing'})")
    labels = {"app": name}
    config_map_name = f"{name}-config"
    digest = hashlib.sha256(model_config_text.encode()).hexdigest()
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": config_map_name, "labels": dict(labels)},
        "data": {MODEL_CONFIG_FILENAME: model_config_text},
    }
    resources = {"memory": f"{memory_limit_mb}Mi", "cpu": cpu}
    container = {
        "name": "tensorflow-serving",
        "image": image,
        # A local image (the stand-in's :latest) must not be pulled from a registry.
        "imagePullPolicy": "IfNotPresent",
        "args": server_args(),
        "ports": [{"name": "grpc", "containerPort": CONTAINER_GRPC_PORT, "protocol": "TCP"},
                  {"name": "http", "containerPort": CONTAINER_REST_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": REPOSITORY_VOLUME, "mountPath": CONTAINER_MODEL_BASE_PATH,
             "readOnly": True},
            # The directory, not a subPath: a subPath mount never sees a ConfigMap update.
            {"name": CONFIG_VOLUME, "mountPath": CONTAINER_CONFIG_DIR, "readOnly": True},
        ],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "startupProbe": {"tcpSocket": {"port": "grpc"},
                         "periodSeconds": STARTUP_PERIOD_SECONDS,
                         "failureThreshold": STARTUP_FAILURE_THRESHOLD},
        "readinessProbe": {"httpGet": {"path": readiness_path(config, models[0]),
                                       "port": "http"},
                           "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"tcpSocket": {"port": "grpc"},
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels),
                             "annotations": {CONFIG_HASH_ANNOTATION: digest}},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": REPOSITORY_VOLUME,
                         "persistentVolumeClaim": {"claimName": repository_claim,
                                                   "readOnly": True}},
                        {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "type": "ClusterIP",
            "selector": dict(labels),
            "ports": [{"name": "grpc", "port": CONTAINER_GRPC_PORT, "targetPort": "grpc",
                       "protocol": "TCP"},
                      {"name": "http", "port": CONTAINER_REST_PORT, "targetPort": "http",
                       "protocol": "TCP"}],
        },
    }
    return [config_map, deployment, service]


def records_for_manifests(repository: ModelRepository,
                          models: Iterable[str]) -> Dict[str, Rollout]:
    """Each model's rollout record as the pods should serve it, read without writing:
    - no stable recorded (a repository made before rollouts): the newest published version,
      as `up` adopts it (logged; `up` also records it, this does not);
    - a canary is dropped: it is a check on one server, not the fleet's state;
    ValueError when a model has no published version at all (its pods could never be
    ready)."""
    records = {}
    for model in models:
        record = dataclasses.replace(rollouts.load(repository.model_dir(model), model),
                                     canary=None)
        published = repository.versions(model)
        if record.stable is not None and record.stable not in published:
            raise ValueError(f"{model}: stable version {record.stable} is not among the "
                             f"published versions {published} of {repository.root}; "
                             f"`python -m serving promote --model {model} --version N` first")
        if record.stable is None:
            if not published:
                raise ValueError(f"{model} has no published version in {repository.root}: "
                                 f"a pod serving it could never be ready")
            log.info("%s: no stable version recorded; the manifests serve the newest "
                     "published version %s", model, published[-1])
            record.make_stable(published[-1], verified=False)
        if record.previous is not None and record.previous not in published:
            record.previous = None
        records[model] = record
    return records


def render_for_repository(repository: ModelRepository | str | Path, models: Sequence[str], *,
                          replicas: int, repository_claim: str, image: str,
                          memory_limit_mb: int = 2048, cpu: str = "1",
                          name: str = DEFAULT_NAME) -> List[dict]:
    """`render_kubernetes` with the models.config rendered from `repository`'s rollout
    records (`records_for_manifests`), base paths /models/<model>: the claim must hold the
    repository at its root."""
    if not isinstance(repository, ModelRepository):
        repository = ModelRepository(repository)
    models = tuple(models)
    if not models:
        raise ValueError("name at least one model")
    records = records_for_manifests(repository, models)
    base_paths = {m: f"{CONTAINER_MODEL_BASE_PATH}/{m}" for m in models}
    text = model_config.render(base_paths, records, models)
    return render_kubernetes(repository_claim=repository_claim, models=models,
                             replicas=replicas, image=image, model_config_text=text,
                             memory_limit_mb=memory_limit_mb, cpu=cpu, name=name)


def file_name(obj: dict) -> str:
    """`<kind>-<name>.yaml`, lower case: one file per object."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write(manifests: Sequence[dict], out_dir: Path | str) -> List[Path]:
    """One YAML file per object in `out_dir` (created), plus kustomization.yaml listing
    them in order (`kubectl apply -k out_dir`). Returns the paths written, the
    kustomization last. Files of an earlier render that are not rewritten are left."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for obj in manifests:
        path = out / file_name(obj)
        path.write_text(_dump(obj))
        written.append(path)
    names = [p.name for p in written]
    if len(set(names)) != len(names):
        raise ValueError(f"two objects would share a file: {names}")
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": names}
    path = out / KUSTOMIZATION
    path.write_text(_dump(kustomization))
    written.append(path)
    return written


def _dump(obj: dict) -> str:
    # Block style for the multi-line models.config, keys in the order built.
    return yaml.dump(obj, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False)


class _BlockDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _check(*, repository_claim: str, models: tuple, replicas: int, image: str,
           memory_limit_mb: int, cpu: str, name: str) -> None:
    if not _NAME.match(name) or len(name) > 63 - len("-config"):
        raise ValueError(f"name {name!r} must be a DNS-1035 label (lower-case letters, digits "
                         f"and '-', starting with a letter) of at most 56 characters")
    if not repository_claim or not re.match(r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
                                            repository_claim):
        raise ValueError(f"repository claim {repository_claim!r} is not a "
                         f"PersistentVolumeClaim name (a DNS-1123 subdomain)")
    if not models:
        raise ValueError("name at least one model")
    if len(set(models)) != len(models):
        raise ValueError(f"a model is named twice: {', '.join(models)}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be a whole number of at least 1, not {replicas!r}")
    if not image:
        raise ValueError("name the serving image")
    if isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, int) \
            or memory_limit_mb < 1:
        raise ValueError(f"memory limit must be a whole number of MiB, not {memory_limit_mb!r}")
    if not _CPU.match(str(cpu)) or float(str(cpu).rstrip("m") or 0) <= 0:
        raise ValueError(f"cpu {cpu!r} must be a Kubernetes CPU quantity such as 1, 0.5 or "
                         f"500m")


__all__ = ["render_kubernetes", "render_for_repository", "records_for_manifests", "write",
           "server_args", "readiness_path", "parse_model_config", "CONFIG_HASH_ANNOTATION",
           "DEFAULT_NAME", "DEFAULT_CLAIM"]
