"""The docker backend: a TF Serving container through the Docker SDK.

The same code path serves the official image and the stand-in: the repository mounted
read-only at /models, the generated models.config (from the rollout records) mounted at
/serving_config, container ports 8500/8501 published on 127.0.0.1, extra server flags
appended to the entrypoint's. Containers carry our labels,
and nothing without them is ever stopped or removed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import docker
from docker import errors as docker_errors

from serving.lifecycle import config as C
from serving.lifecycle.config import Addresses, UpConfig
from serving.lifecycle.errors import EnvironmentProblem, LifecycleError
from serving.lifecycle.ports import HOST, ensure_free, port_taken
from serving.lifecycle.state import ServerState

log = logging.getLogger("serving.lifecycle")

START_DAEMON = ("start the Docker daemon (`systemctl start docker`, or "
                "`nohup dockerd >/var/log/dockerd.log 2>&1 &`), or use --backend process")


def container_name(state_dir: Path) -> str:
    digest = hashlib.sha1(str(Path(state_dir).absolute()).encode()).hexdigest()[:10]
    return f"tfx-serving-{digest}"


class DockerBackend:
    name = "docker"

    def __init__(self, docker_url: Optional[str] = None):
        try:
            if docker_url:
                self.client = docker.DockerClient(base_url=docker_url, timeout=30)
            else:
                self.client = docker.from_env(timeout=30)
            self.client.ping()
        except docker_errors.DockerException as e:
            raise EnvironmentProblem(
                f"the Docker daemon does not answer ({docker_url or 'default socket'}): "
                f"{_short(e)}", next_step=START_DAEMON) from e

    def require_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
        except docker_errors.ImageNotFound as e:
            raise EnvironmentProblem(
                f"image {image} is not present on this Docker Engine",
                next_step=(f"`docker pull {image}` where a registry is reachable; with no "
                           f"registry, `make serving-image` and pass --image "
                           f"{C.STANDIN_IMAGE}; or use --backend process")) from e
        except docker_errors.APIError as e:
            raise EnvironmentProblem(f"cannot inspect image {image}: {_short(e)}",
                                     next_step=START_DAEMON) from e

    def base_paths(self, config: UpConfig) -> Dict[str, str]:
        return {m: f"{C.CONTAINER_MODEL_BASE_PATH}/{m}" for m in config.models}

    def config_path_for_server(self, host_path: Path) -> str:
        return f"{C.CONTAINER_CONFIG_DIR}/{host_path.name}"

    def start(self, config: UpConfig, server_args: Tuple[str, ...],
              model_config_host_path: Optional[Path]) -> ServerState:
        self.require_image(config.image)
        ensure_free(config.grpc_port, "--grpc-port")
        ensure_free(config.rest_port, "--rest-port")
        state_dir = Path(config.state_dir).absolute()
        volumes = {str(Path(config.repository).absolute()):
                   {"bind": C.CONTAINER_MODEL_BASE_PATH, "mode": "ro"}}
        if model_config_host_path is not None:
            volumes[str(model_config_host_path.parent.absolute())] = {
                "bind": C.CONTAINER_CONFIG_DIR, "mode": "ro"}
        name = container_name(state_dir)
        try:
            container = self.client.containers.run(
                config.image, command=list(server_args), detach=True, name=name,
                environment={"MODEL_NAME": config.models[0]},
                labels={C.LABEL_MANAGED: "true", C.LABEL_STATE_DIR: str(state_dir)},
                ports={f"{C.CONTAINER_GRPC_PORT}/tcp": (HOST, config.grpc_port or None),
                       f"{C.CONTAINER_REST_PORT}/tcp": (HOST, config.rest_port or None)},
                volumes=volumes)
        except docker_errors.APIError as e:
            self._remove_by_name(name)
            text = _short(e)
            if "port is already allocated" in text or "address already in use" in text:
                port = config.rest_port if str(config.rest_port) in text else config.grpc_port
                raise port_taken(port, "--rest-port" if port == config.rest_port
                                 else "--grpc-port", text) from e
            if "Conflict" in text and name in text:
                raise EnvironmentProblem(
                    f"a container named {name} already exists",
                    next_step=f"`python -m serving down --state-dir {config.state_dir}`") from e
            raise LifecycleError(f"docker could not start {config.image}: {text}") from e
        grpc_port, rest_port = self._published_ports(container)
        return ServerState(
            backend=self.name, handle=container.id, name=name, image=config.image,
            repository=str(Path(config.repository).absolute()), models=tuple(config.models),
            addresses=Addresses(HOST, grpc_port, rest_port), state_dir=str(state_dir),
            model_config_path=str(model_config_host_path or ""),
            base_paths=self.base_paths(config), config_poll_seconds=config.config_poll_seconds,
            started_at=time.time())

    def _published_ports(self, container) -> Tuple[int, int]:
        deadline = time.monotonic() + 10
        while True:
            container.reload()
            ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
            try:
                grpc = int(ports[f"{C.CONTAINER_GRPC_PORT}/tcp"][0]["HostPort"])
                rest = int(ports[f"{C.CONTAINER_REST_PORT}/tcp"][0]["HostPort"])
                return grpc, rest
            except (KeyError, IndexError, TypeError):
                if container.status == "exited" or time.monotonic() > deadline:
                    logs = container.logs(tail=20).decode(errors="replace")
                    raise LifecycleError(f"container {container.name} exited at start",
                                         details=f"last log lines:\n{logs}")
                time.sleep(0.2)

    def _container(self, state: ServerState):
        try:
            c = self.client.containers.get(state.handle)
        except docker_errors.NotFound:
            return None
        return c if c.labels.get(C.LABEL_MANAGED) == "true" else None

    def is_running(self, state: ServerState) -> bool:
        c = self._container(state)
        return c is not None and c.status == "running"

    def logs(self, state: ServerState, tail: Optional[int] = None) -> str:
        c = self._container(state)
        if c is None:
            return ""
        return c.logs(tail=tail if tail is not None else "all").decode(errors="replace")

    def stop(self, state: ServerState, timeout: float = 30.0) -> None:
        c = self._container(state)
        if c is not None:
            self._stop_and_remove(c, timeout)
        self.remove_orphans(Path(state.state_dir))

    def remove_orphans(self, state_dir: Path) -> int:
        # sparse: a container removed meanwhile (a Swarm task going away) is not inspected
        found = self.client.containers.list(all=True, sparse=True, filters={"label": [
            f"{C.LABEL_MANAGED}=true", f"{C.LABEL_STATE_DIR}={Path(state_dir).absolute()}"]})
        for c in found:
            try:
                c.reload()
            except docker_errors.NotFound:
                continue
            self._stop_and_remove(c, 10)
        return len(found)

    def _stop_and_remove(self, container, timeout: float) -> None:
        try:
            if container.status == "running":
                container.stop(timeout=int(timeout))
            container.remove(force=True)
        except docker_errors.NotFound:
            pass

    def _remove_by_name(self, name: str) -> None:
        try:
            c = self.client.containers.get(name)
        except docker_errors.NotFound:
            return
        if c.labels.get(C.LABEL_MANAGED) == "true":
            c.remove(force=True)


def _short(e: Exception) -> str:
    return str(getattr(e, "explanation", None) or e).strip().splitlines()[0][:300]
