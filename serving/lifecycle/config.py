"""Typed configuration: `serving/__main__.py` builds these from flags, code only reads them.

Container-side constants are the official tensorflow/serving image's contract, so the
launcher treats the official image and the stand-in (serving/image/) the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Optional, Tuple

from serving import defaults

DEFAULT_IMAGE = "tensorflow/serving:2.16.1"  # matches tensorflow 2.16 in requirements.lock
STANDIN_IMAGE = "tfx-serving-toolkit/model-server:latest"  # `make serving-image`
# <project>/.cache/serving, or $TOOLKIT_STATE_DIR (serving/defaults.py; as of the import).
DEFAULT_STATE_DIR = defaults.state_dir()

# The official image's entrypoint contract.
CONTAINER_GRPC_PORT = 8500
CONTAINER_REST_PORT = 8501
CONTAINER_MODEL_BASE_PATH = "/models"
CONTAINER_CONFIG_DIR = "/serving_config"  # directory mount: a rewritten file stays visible

LABEL_MANAGED = "org.tfx-serving-toolkit.managed"
LABEL_STATE_DIR = "org.tfx-serving-toolkit.state-dir"

BACKENDS = ("docker", "process", "swarm", "auto")
MODEL_CONFIG_FILENAME = "models.config"


@dataclasses.dataclass(frozen=True)
class UpConfig:
    """What `up` starts. Port 0 asks for an ephemeral port, reported back in the state."""

    repository: Path
    models: Tuple[str, ...]
    state_dir: Path = DEFAULT_STATE_DIR
    backend: str = "auto"
    image: str = DEFAULT_IMAGE
    grpc_port: int = 8500
    rest_port: int = 8501
    extra_args: Tuple[str, ...] = ()
    # How often the server re-reads the generated models.config (several models, rollback,
    # a model with no version yet).
    config_poll_seconds: float = 5.0
    # How often the server polls the repository for new versions (TF Serving's default: 1s).
    file_system_poll_seconds: float = 1.0
    # How long `up` waits for the latest version of every model that has one to be
    # AVAILABLE (0: do not wait; with a model that has no version, only for the server to
    # listen).
    wait_seconds: float = 300.0
    docker_url: Optional[str] = None  # None: the SDK's default (DOCKER_HOST or the socket)
    # swarm: how many replicas, and each one's memory limit.
    replicas: int = 1
    memory_limit_mb: int = 2048

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.models:
            raise ValueError("at least one model is needed")
        if self.replicas != 1 and self.backend != "swarm":
            raise ValueError(f"--replicas {self.replicas} needs --backend swarm (the "
                             f"{self.backend} backend runs one server)")


@dataclasses.dataclass(frozen=True)
class Addresses:
    """Where a started server listens on this machine (always 127.0.0.1)."""

    host: str
    grpc_port: int
    rest_port: int

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def to_json(self) -> Dict[str, object]:
        return {"host": self.host, "grpc_port": self.grpc_port, "rest_port": self.rest_port,
                "rest_url": self.rest_url, "grpc_target": self.grpc_target}
