"""The backend interface, and `auto`: docker when a daemon answers and the image is there,
otherwise the embedded server as a child process, saying which and why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Tuple

from serving.lifecycle.config import Addresses, UpConfig
from serving.lifecycle.errors import EnvironmentProblem
from serving.lifecycle.state import ServerState

log = logging.getLogger("serving.lifecycle")


class Backend(Protocol):
    """Starts and stops one server; knows nothing about versions or health."""

    name: str

    def base_paths(self, config: UpConfig) -> Dict[str, str]:
        """Each model's base path as the server sees it."""

    def config_path_for_server(self, host_path: Path) -> str:
        """Where the server finds the generated models.config written at `host_path`."""

    def start(self, config: UpConfig, server_args: Tuple[str, ...],
              model_config_host_path: Optional[Path]) -> ServerState:
        """Start serving; raises EnvironmentProblem for port/daemon/image problems."""

    def is_running(self, state: ServerState) -> bool: ...

    def logs(self, state: ServerState, tail: Optional[int] = None) -> str: ...

    def stop(self, state: ServerState, timeout: float = 30.0) -> None:
        """Stop and remove what `start` created; no error when it is already gone."""

    def remove_orphans(self, state_dir: Path) -> int:
        """Remove leftovers of earlier runs for this state dir (crashed tests); returns count."""


def replica_addresses(backend, state: ServerState) -> List[Tuple[str, Addresses]]:
    """Where each replica of the server answers: the fleet's tasks (swarm), else the one
    server. Rollout commands move and verify labels on each of them."""
    if hasattr(backend, "replicas"):
        return [(r.name, r.addresses) for r in backend.replicas(state)
                if r.addresses is not None and r.state == "running"]
    return [(state.name, state.addresses)]


def create(name: str, config_docker_url: Optional[str] = None) -> Backend:
    if name == "docker":
        from serving.lifecycle.docker_backend import DockerBackend
        return DockerBackend(config_docker_url)
    if name == "process":
        from serving.lifecycle.process_backend import ProcessBackend
        return ProcessBackend()
    if name == "swarm":
        from serving.lifecycle.swarm_backend import SwarmBackend
        return SwarmBackend(config_docker_url)
    raise ValueError(f"unknown backend {name!r}")


def choose(config: UpConfig) -> Backend:
    """The backend for `config.backend`; for auto, log the choice and the reason."""
    if config.backend != "auto":
        return create(config.backend, config.docker_url)
    from serving.lifecycle.docker_backend import DockerBackend
    try:
        docker_backend = DockerBackend(config.docker_url)
        docker_backend.require_image(config.image)
    except EnvironmentProblem as e:
        log.info("backend auto -> process: %s (for docker: %s)", e.message, e.next_step)
        return create("process")
    log.info("backend auto -> docker: the daemon answers and image %s is present", config.image)
    return docker_backend
